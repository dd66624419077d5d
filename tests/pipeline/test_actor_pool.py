"""How run_job sizes the engine actor pool: one actor per GPU, so N GPUs give N-way data parallelism.

(That the actors all take rows is checked end to end in tests/jobs/test_compare_cli.py, where two
CPU actors per run each write rows, told apart by the per-row `worker` column.)
"""
from __future__ import annotations

import pytest

from pipeline.config import build_config
from pipeline.job import actor_resources


def config(**resources):
    return build_config({"input": {"path": "in", "prompt_column": "p"}, "model": {"path": "m"},
                         "output": {"path": "out"}, "resources": resources})


@pytest.mark.parametrize("resources, cluster_gpus, expected", [
    ({}, 8.0, (8, 1.0, 0.5)),  # one actor per GPU
    ({}, 1.0, (1, 1.0, 0.5)),
    ({"gpus_per_worker": 2}, 8.0, (4, 2.0, 0.5)),  # a model that needs two GPUs per engine
    ({}, 0.0, (1, 0.0, 0.5)),  # no GPUs: one CPU actor
    ({"num_workers": 3, "cpus_per_worker": 0.25}, 0.0, (3, 0.0, 0.25)),  # CPU actors, as the tests run them
    # GPU workers that scale from zero: none at start, so ask explicitly; the requests make the
    # autoscaler launch the nodes (cluster.yaml).
    ({"num_workers": 4, "gpus_per_worker": 1}, 0.0, (4, 1.0, 0.5)),
])
def test_actor_pool_size(resources, cluster_gpus, expected):
    assert actor_resources(config(**resources), cluster_gpus) == expected
