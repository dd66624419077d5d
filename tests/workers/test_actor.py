"""GenerateActor without Ray: loads the engine and tokenizer once, refuses unusable settings."""
from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pytest

from workers.actor import GenerateActor, resolve_model_dir
from workers.rows import BATCH_SCHEMA
from workers.spec import WorkerSpec


def test_actor_generates_a_batch(tiny_model):
    actor = GenerateActor(WorkerSpec(model_path=str(tiny_model), max_new_tokens=3, max_model_len=128))
    table = pa.table({"prompt": ["hi", None], "path": ["/d/a.parquet"] * 2, "row_hash": pa.array([1, 2], pa.uint64())})
    out = actor(table)
    assert out.schema == BATCH_SCHEMA
    rows = out.to_pylist()
    assert rows[0]["error"] is None and rows[0]["num_completion_tokens"] == 3 and rows[1]["error"] == "prompt is null"
    info = json.loads(rows[0]["_engine"])
    assert (info["device"], info["dtype"], info["is_orthrus"], info["block_size"], info["max_model_len"]) == (
        "cpu", "float32", True, 8, 128)
    assert info["model_dir"] == str(tiny_model)


def test_orthrus_mode_needs_an_orthrus_checkpoint(tmp_path):
    from workers.tiny import write_tiny_checkpoint

    plain = write_tiny_checkpoint(tmp_path / "plain", orthrus=False)
    with pytest.raises(ValueError, match=r"is a plain Qwen3 checkpoint \(no Orthrus heads\); set engine.mode=ar"):
        GenerateActor(WorkerSpec(model_path=str(plain)))
    GenerateActor(WorkerSpec(model_path=str(plain), mode="ar"))


def test_chat_template_needs_one(tiny_model, tmp_path):
    bare = tmp_path / "no_template"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(ValueError, match=r"has no chat template; set prompt.chat_template=false"):
        GenerateActor(WorkerSpec(model_path=str(bare)))
    GenerateActor(WorkerSpec(model_path=str(bare), chat_template=False))


def test_resolve_model_dir(tiny_model, tmp_path):
    assert resolve_model_dir(str(tiny_model)) == str(tiny_model)
    with pytest.raises(FileNotFoundError, match=r"model.path '/nope' is not a checkpoint folder nor a hub id"):
        resolve_model_dir("/nope")
