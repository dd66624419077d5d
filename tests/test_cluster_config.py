"""cluster.yaml is a valid Ray cluster launcher config: Ray's own schema and `ray up`'s offline checks
(`prepare_config` fills the AWS defaults, `validate_config` checks the result), plus what this
project needs from it: a CPU head, GPU workers scaling from zero, the package installed, token
auth left on."""
from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())


def test_valid_for_ray_up(config, schema):
    from ray.autoscaler._private.util import prepare_config, validate_config

    jsonschema.validate(config, schema)
    full = prepare_config(config)  # what `ray up` does before it talks to AWS
    validate_config(full)
    assert full["provider"]["type"] == "aws" and full["head_node_type"] == "head"
    with pytest.raises(jsonschema.ValidationError, match="'setup_comands' was unexpected"):
        jsonschema.validate({**config, "setup_comands": []}, schema)  # the schema has teeth


def test_cpu_head_and_gpu_workers_from_zero(config):
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands", "file_mounts"):
        assert key in config, key
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert "GPU" not in head["resources"] and "InstanceType" in head["node_config"]
    gpu = [t for name, t in types.items() if name != config["head_node_type"] and t["resources"].get("GPU", 0) >= 1]
    assert len(gpu) == 1 and gpu[0]["min_workers"] == 0 and gpu[0]["max_workers"] >= 1
    assert gpu[0]["node_config"]["IamInstanceProfile"]  # S3 through the instance profile, no keys


def test_installs_this_package_and_keeps_token_auth(config):
    assert config["file_mounts"]["~/orthrus-batch"] == "."
    assert any("pip install" in c and "~/orthrus-batch" in c for c in config["setup_commands"])
    assert "**/.venv" in config["rsync_exclude"] and "**/.git" in config["rsync_exclude"]
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token ray start" in c for c in starts if "ray start" in c)
    assert "RAY_AUTH_MODE=disabled" not in CLUSTER.read_text()
