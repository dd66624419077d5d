"""The model source: model.path checked before Ray starts (one line naming what is missing, issue 13),
resolved to a folder, and only weights, configs and tokenizers fetched from the hub."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.job import check_model_path
from pipeline.shards import InputError
from workers.model_source import is_diff_tensor, is_hub_id, resolve

ROOT = Path(__file__).resolve().parents[2]


def folder(tmp_path: Path, *files: str) -> str:
    path = tmp_path / "ckpt"
    path.mkdir()
    for name in files:
        (path / name).write_text("{}")
    return str(path)


def test_a_folder_needs_config_weights_and_a_tokenizer(tmp_path, tiny_model):
    check_model_path(str(tiny_model))  # the real thing passes
    path = folder(tmp_path, "config.json", "model.safetensors", "tokenizer_config.json")
    with pytest.raises(InputError) as err:
        check_model_path(path)
    assert str(err.value) == (f"model.path {path!r}: the folder has no tokenizer (tokenizer.json, or vocab.json "
                              f"with merges.txt, or tokenizer.model)")
    os.remove(f"{path}/model.safetensors")
    with pytest.raises(InputError) as err:
        check_model_path(path)
    assert str(err.value) == (f"model.path {path!r}: the folder has no safetensors weights (model.safetensors or "
                              f"model.safetensors.index.json)")
    os.remove(f"{path}/config.json")
    with pytest.raises(InputError, match=r"the folder has no config.json$"):
        check_model_path(path)
    (Path(path) / "config.json").write_text("{}")
    for name in ("model.safetensors.index.json", "vocab.json", "merges.txt"):
        (Path(path) / name).write_text("{}")
    check_model_path(path)


def test_a_missing_relative_folder_is_not_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert not is_hub_id("models/qwen") and is_hub_id("Qwen/Qwen3-8B") and not is_hub_id("a/b/c")
    assert not is_hub_id("my model/x") and not is_hub_id("org/../x")
    with pytest.raises(InputError) as err:
        check_model_path("models/qwen")
    assert str(err.value) == (f"model.path 'models/qwen': no checkpoint folder there ({tmp_path}/models/qwen), "
                              f"and not a hub id (org/name)")


@pytest.mark.timeout(60)
def test_an_unfetchable_hub_id_is_one_line_before_ray(tmp_path, write_shards):
    inputs = write_shards({"a.parquet": {"prompt": ["x"]}})
    job = tmp_path / "job.yaml"
    job.write_text(f"input: {{path: {inputs}, prompt_column: prompt}}\nmodel: {{path: nobody-here/no-such-model}}\n"
                   f"output: {{path: {tmp_path / 'out'}}}\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "RAY_AUTH_MODE": "disabled"}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "jobs.cli", "run", str(job)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("orthrus-batch: error: model.path 'nobody-here/no-such-model': no such local folder, and "
                           "the Hugging Face hub id cannot be fetched (HF_HUB_OFFLINE is set and it is not in the "
                           "local Hugging Face cache); check the network, HF_HUB_OFFLINE and HF_TOKEN, or give a "
                           "local checkpoint folder\n")
    assert time.monotonic() - t0 < 30 and not (tmp_path / "out").exists()


def test_resolve_a_folder_or_refuse(tiny_model):
    assert str(resolve(str(tiny_model))) == str(tiny_model)
    with pytest.raises(FileNotFoundError, match=r"model.path '/nope' is not a checkpoint folder nor a hub id"):
        resolve("/nope")


def test_hub_downloads_are_weights_configs_and_tokenizers_only():
    from fnmatch import fnmatch

    from workers.model_source import HUB_FILES

    def fetched(name):
        return any(fnmatch(name, p) for p in HUB_FILES)

    assert all(fetched(n) for n in ("config.json", "model-00001-of-00002.safetensors", "tokenizer.json",
                                    "chat_template.jinja", "merges.txt"))
    assert not any(fetched(n) for n in ("modeling_qwen3.py", "pytorch_model.bin", "model.pt", "weights.pkl",
                                        "tokenization_x.py"))


def test_diff_tensors_by_whole_module_name():
    assert is_diff_tensor("model.layers.0.self_attn.q_proj_diff.weight")
    assert is_diff_tensor("model.layers.3.self_attn.k_norm_diff.weight")
    assert not is_diff_tensor("model.layers.0.self_attn.q_proj.weight")  # a substring of q_proj_diff
    assert not is_diff_tensor("model.layers.0.self_attn.q_proj_diff") and not is_diff_tensor("lm_head.weight")
