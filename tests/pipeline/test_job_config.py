"""JobConfig: YAML in, `--set` overrides, and errors that name the key and the problem."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.config import ConfigError, JobConfig, apply_override, build_config, load_config

MINIMAL = {"input": {"path": "data/*.parquet", "prompt_column": "prompt"}, "model": {"path": "m"},
           "output": {"path": "out"}}


def _job(tmp_path, text: str):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_defaults():
    cfg = build_config(MINIMAL)
    assert cfg.engine.mode == "orthrus" and cfg.engine.block_size is None
    assert cfg.sampling.max_new_tokens == 256 and cfg.sampling.temperature == 0.0
    assert cfg.resources.cpus_per_worker == 0.5 and cfg.resources.num_workers is None
    assert cfg.prompt.chat_template is True and cfg.prompt.enable_thinking is False


def test_every_field_is_described():
    def walk(model, prefix=""):
        for name, field in model.model_fields.items():
            assert field.description, f"{prefix}{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, f"{prefix}{name}.")

    walk(JobConfig)


def test_yaml_with_overrides(tmp_path):
    path = _job(tmp_path, "input: {path: in, prompt_column: text}\nmodel: {path: m}\noutput: {path: o}\n")
    cfg = load_config(path, ["engine.mode=ar", "resources.cpus_per_worker=0.25", "sampling.seed=7",
                             "engine.block_size=null", "input.sampling_columns.temperature=temp"])
    assert cfg.engine.mode == "ar"
    assert cfg.resources.cpus_per_worker == 0.25
    assert cfg.sampling.seed == 7
    assert cfg.input.sampling_columns.columns() == {"temperature": "temp"}


def test_unknown_key_is_named_with_the_choices():
    with pytest.raises(ConfigError) as err:
        build_config({**MINIMAL, "engine": {"modee": "ar"}})
    assert str(err.value) == ("job: engine.modee: unknown key (known here: block_size, cuda_graphs, "
                              "kv_cache_memory_fraction, kv_cache_tokens, max_batch_size, max_concurrent_batches, "
                              "max_model_len, mode, pass_costs)")


def test_bad_values_name_each_key():
    with pytest.raises(ConfigError) as err:
        build_config({**MINIMAL, "engine": {"mode": "fast", "max_batch_size": 0}})
    assert str(err.value) == ("job: engine.mode: Input should be 'orthrus' or 'ar' (got 'fast'); "
                              "engine.max_batch_size: Input should be greater than or equal to 1 (got 0)")


def test_missing_section_and_prompt_source():
    with pytest.raises(ConfigError) as err:
        build_config({"input": {"path": "x"}, "model": {"path": "m"}})
    assert str(err.value) == ("job: input: Value error, set exactly one of prompt_column and messages_column; "
                              "output: required key is missing")


def test_messages_need_chat_template():
    raw = {**MINIMAL, "input": {"path": "x", "messages_column": "messages"}, "prompt": {"chat_template": False}}
    with pytest.raises(ConfigError, match=r"input.messages_column needs prompt.chat_template=true"):
        build_config(raw)


def test_override_errors_name_the_key(tmp_path):
    path = _job(tmp_path, "input: {path: in, prompt_column: text}\nmodel: {path: m}\noutput: {path: o}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["sampling.temperature=hot"])
    assert str(err.value) == f"{path}: sampling.temperature: Input should be a valid number (got 'hot')"
    with pytest.raises(ConfigError, match=r"^--set 'engine': expected key=value, e.g. engine.mode=ar$"):
        load_config(path, ["engine"])
    with pytest.raises(ConfigError, match=r"^--set model.path.x: model.path is a value \('m'\), not a section$"):
        load_config(path, ["model.path.x=1"])
    with pytest.raises(ConfigError, match=r"^.*: resources.gpus: unknown key \(known here: batch_size, "
                                          r"cpus_per_worker, gpus_per_worker, max_restarts, max_task_retries, "
                                          r"num_workers\)$"):
        load_config(path, ["resources.gpus=1"])


def test_override_value_is_yaml():
    raw: dict = {}
    apply_override(raw, "a.b=0.5")
    apply_override(raw, "a.c=true")
    apply_override(raw, "a.d=null")
    apply_override(raw, "e=[1, 2]")
    assert raw == {"a": {"b": 0.5, "c": True, "d": None}, "e": [1, 2]}


def test_unreadable_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read job file \(No such file or directory\)"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"job.yaml: a job must be a mapping of keys, got list"):
        load_config(_job(tmp_path, "- 1\n- 2\n"))


def test_config_is_frozen():
    cfg = build_config(MINIMAL)
    with pytest.raises(ValidationError) as err:
        cfg.engine.mode = "ar"  # type: ignore[misc]
    assert err.value.errors()[0]["type"] == "frozen_instance" and err.value.errors()[0]["msg"] == "Instance is frozen"
    assert cfg.engine.mode == "orthrus"


def test_booleans_are_not_numbers_nor_numbers_booleans():
    """Strict types at the edge (issue 13): `max_new_tokens: true` used to run as 1."""
    with pytest.raises(ConfigError) as err:
        build_config({**MINIMAL, "sampling": {"max_new_tokens": True, "temperature": False}})
    assert str(err.value) == ("job: sampling.max_new_tokens: Input should be a valid integer (got True); "
                              "sampling.temperature: Input should be a valid number (got False)")
    with pytest.raises(ConfigError) as err:
        build_config({**MINIMAL, "output": {"path": "o", "resume": 1}, "input": {**MINIMAL["input"], "id_column": 7}})
    assert str(err.value) == ("job: input.id_column: Input should be a valid string (got 7); "
                              "output.resume: Input should be a valid boolean (got 1)")
    ok = build_config({**MINIMAL, "sampling": {"temperature": 1}, "resources": {"gpus_per_worker": 1}})
    assert ok.sampling.temperature == 1.0 and ok.resources.gpus_per_worker == 1.0  # an int is a fine float


def test_readme_documents_every_key():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()

    def walk(model, prefix=""):
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, f"{prefix}{name}.")
            else:
                assert f"| `{prefix}{name}` |" in readme, f"README lacks {prefix}{name}"

    walk(JobConfig)


def test_worker_spec_nests_the_engine_and_sampling_sections():
    """Each engine/sampling key reaches the actor under the same name; the defaults agree on both sides."""
    from pipeline.job import worker_spec
    from workers.params import SamplingParams
    from workers.spec import EngineSettings, WorkerSpec

    cfg = build_config({**MINIMAL, "engine": {"mode": "ar", "max_batch_size": 8, "kv_cache_tokens": 4096},
                        "sampling": {"temperature": 0.7, "seed": 5}, "prompt": {"too_long": "truncate"},
                        "input": {**MINIMAL["input"], "sampling_columns": {"top_p": "p"}}})
    spec = worker_spec(cfg, s3_input=True)
    assert spec.engine == EngineSettings(mode="ar", max_batch_size=8, kv_cache_tokens=4096)
    assert spec.sampling == SamplingParams(temperature=0.7, seed=5)
    assert (spec.too_long, spec.chat_template, spec.sampling_columns, spec.s3_input) == (
        "truncate", True, (("top_p", "p"),), True)
    defaults = worker_spec(build_config(MINIMAL), s3_input=False)
    assert defaults.engine == EngineSettings() and defaults.sampling == WorkerSpec("m").sampling
