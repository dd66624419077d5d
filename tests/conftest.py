"""Shared fixtures: one local Ray for the whole test run, a tiny checkpoint with a tokenizer,
and a writer of Parquet shards. Ray is started only by tests that ask for `ray_session`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

RAY_CPUS = 4  # more than this machine's 2 cores: actors mostly wait, and fractional CPUs share them


@pytest.fixture(scope="session", autouse=True)
def pass_cost_cache(tmp_path_factory):
    """Measured pass costs (engine.pass_costs: auto) go to a temp folder, never the user's ~/.cache;
    set before any Ray starts, so actors inherit it."""
    os.environ["ORTHRUS_CACHE"] = str(tmp_path_factory.mktemp("pass_costs"))


@pytest.fixture(scope="session")
def ray_session():
    """One Ray for every Ray test (startup costs seconds; each new actor ~10 s of imports)."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray

    # address="local": always a fresh Ray of our own, even when another one runs on this machine
    ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random tiny OrthrusLM (byte-level tokenizer, Qwen3 chat template, K = 8)."""
    from workers.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_orthrus"), seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


@pytest.fixture
def write_shards(tmp_path) -> Callable[..., Path]:
    """write_shards({"a.parquet": {"prompt": [...]}, ...}, folder="in") -> the folder."""

    def write(files: dict[str, dict | pa.Table], folder: str = "in") -> Path:
        root = tmp_path / folder
        for name, data in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(data if isinstance(data, pa.Table) else pa.table(data), path)
        return root

    return write
