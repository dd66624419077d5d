"""GenerateActor without Ray: loads the engine and tokenizer once, refuses unusable settings."""
from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pytest

from fake_engine import make_spec  # tests/workers is on sys.path (rootdir-relative imports)
from workers.actor import GenerateActor
from workers.schema import BATCH_SCHEMA


def test_actor_generates_a_batch(tiny_model):
    actor = GenerateActor(make_spec(str(tiny_model), max_new_tokens=3, max_model_len=128))
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
        GenerateActor(make_spec(str(plain)))
    GenerateActor(make_spec(str(plain), mode="ar"))


def test_chat_template_needs_one(tiny_model, tmp_path):
    bare = tmp_path / "no_template"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(ValueError, match=r"has no chat template; set prompt.chat_template=false"):
        GenerateActor(make_spec(str(bare)))
    GenerateActor(make_spec(str(bare), chat_template=False))


def test_checkpoint_code_is_never_run(tiny_model, tmp_path):
    """A checkpoint that asks for its own Python (auto_map in config.json and tokenizer_config.json)
    loads with the built-in classes; its module is never imported (no trust_remote_code anywhere)."""
    ckpt = tmp_path / "with_code"
    shutil.copytree(tiny_model, ckpt)
    marker = tmp_path / "code_ran"
    (ckpt / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n"
                                  "from transformers import PreTrainedTokenizerFast\n"
                                  "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    for name, auto_map in (("tokenizer_config.json", {"AutoTokenizer": [None, "evil.EvilTokenizer"]}),
                           ("config.json", {"AutoModelForCausalLM": "evil.EvilModel"})):
        cfg = json.loads((ckpt / name).read_text())
        cfg["auto_map"] = auto_map
        (ckpt / name).write_text(json.dumps(cfg))
    actor = GenerateActor(make_spec(str(ckpt), max_new_tokens=2))
    assert type(actor.tokenizer).__name__ != "EvilTokenizer" and not marker.exists()


def test_pass_costs_let_the_engine_choose_the_block_size(tiny_model, tmp_path):
    """engine.pass_costs reaches the engine: with costs where AR always wins once drafts are judged
    poor, the actor's engine picks AR (K = 1) for a batch, and says so in its choice."""
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"pass_costs": [{"batch": 1, "block_size": 1, "ms_per_iteration": 1.0},
                                                {"batch": 1, "block_size": 8, "ms_per_iteration": 50.0}]}))
    actor = GenerateActor(make_spec(str(tiny_model), max_new_tokens=3, max_model_len=128,
                                     pass_costs=str(costs)))
    assert actor.engine.pass_costs.ms == {(0, 1, 1): 1.0, (0, 1, 8): 50.0}
    actor.engine.tracker.set_counts([300] + [0] * 31, [0] * 32)  # 300 first drafts judged, every one rejected
    assert actor.engine.choose_block_size(4) == 1


def test_pass_costs_file_is_checked_at_the_edge(tmp_path):
    from pipeline.config import ConfigError, build_config

    raw = {"input": {"path": "x.parquet"}, "model": {"path": "m"}, "output": {"path": "o"},
           "engine": {"pass_costs": str(tmp_path / "missing.json")}}
    with pytest.raises(ConfigError, match=r"engine.pass_costs: .*cannot read pass costs from '.*missing.json'"):
        build_config(raw)


def test_concurrent_batches_feed_one_engine(tiny_model):
    """Two Ray batches in flight on one actor: the second's rows start decoding before the first's
    last row finishes (it ends first: shorter rows), and every row gets what it gets alone."""
    import threading

    spec = make_spec(str(tiny_model), max_new_tokens=60, max_model_len=256, pass_costs="off",
                      sampling_columns=(("max_new_tokens", "n"),))
    actor = GenerateActor(spec)
    long = pa.table({"prompt": ["tell me a long story", "and another"], "n": [120, 120],
                     "path": ["/d/a.parquet"] * 2, "row_hash": pa.array([1, 2], pa.uint64())})
    short = pa.table({"prompt": ["hi", "yo", "ok"], "n": [4, 5, 6],
                      "path": ["/d/b.parquet"] * 3, "row_hash": pa.array([3, 4, 5], pa.uint64())})
    out: dict[str, pa.Table] = {}
    first = threading.Thread(target=lambda: out.__setitem__("long", actor(long)))
    first.start()
    while not actor.engine.scheduler.decoding:  # the long batch is decoding
        pass
    second = threading.Thread(target=lambda: out.__setitem__("short", actor(short)))
    second.start()
    first.join(120)
    second.join(120)
    a, b = out["long"].to_pylist(), out["short"].to_pylist()
    assert max(r["_finished_at"] for r in b) < min(r["_finished_at"] for r in a)
    assert [r["num_completion_tokens"] for r in b] == [4, 5, 6] and [r["num_completion_tokens"] for r in a] == [120, 120]
    alone = actor(short).to_pylist()
    assert [r["completion_token_ids"] for r in alone] == [r["completion_token_ids"] for r in b]


def test_pass_costs_auto_are_measured_once_and_cached(tiny_model, tmp_path, monkeypatch):
    """engine.pass_costs: auto measures a small grid on this device at actor start, records it in
    the engine facts, and the next actor reads it from the local cache instead."""
    monkeypatch.setenv("ORTHRUS_CACHE", str(tmp_path))
    spec = make_spec(str(tiny_model), max_new_tokens=3, max_model_len=1200, max_batch_size=8)
    first = json.loads(GenerateActor(spec).info)["pass_costs"]
    assert first["source"] == "measured" and first["seconds"] < 30
    grid = {(r["context"], r["batch"], r["block_size"]) for r in first["rows"]}
    assert grid == {(c, b, k) for c in (128, 1024) for b in (1, 8) for k in (1, 2, 4, 8)}
    second = json.loads(GenerateActor(spec).info)["pass_costs"]
    assert second["source"] == "cache" and second["rows"] == first["rows"]


def test_pass_costs_auto_on_a_short_max_model_len(tiny_model, tmp_path, monkeypatch):
    """Regression: measuring at max_model_len=64 replayed more iterations than a row's history holds
    (IndexError in commit, 'index 65 is out of bounds'); the counters are reset per timed replay."""
    monkeypatch.setenv("ORTHRUS_CACHE", str(tmp_path))
    actor = GenerateActor(make_spec(str(tiny_model), max_new_tokens=3, max_model_len=64))
    info = json.loads(actor.info)["pass_costs"]
    assert info["source"] == "measured" and {r["context"] for r in info["rows"]} == {32}
    table = pa.table({"prompt": ["hi"], "path": ["/d/a.parquet"], "row_hash": pa.array([1], pa.uint64())})
    assert actor(table).to_pylist()[0]["num_completion_tokens"] == 3
