"""`orthrus-batch run JOB.yaml [--set k=v]`: exit status, messages, and a real run."""
from __future__ import annotations

import json

import pytest

from jobs.cli import main


def write_job(tmp_path, inputs, model, out) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(f"name: cli\ninput: {{path: {inputs}, prompt_column: prompt}}\nmodel: {{path: {model}}}\n"
                    f"output: {{path: {out}}}\nsampling: {{max_new_tokens: 4}}\nresources: {{batch_size: 8}}\n")
    return str(path)


@pytest.mark.timeout(180)
def test_run_prints_progress_and_summary(ray_session, tiny_model, write_shards, tmp_path, capsys):
    inputs = write_shards({"a.parquet": {"prompt": ["x", "y", "z"]}})
    job = write_job(tmp_path, inputs, tiny_model, tmp_path / "out")
    assert main(["run", job, "--set", "sampling.max_new_tokens=2", "--set", "engine.mode=ar"]) == 0
    out = capsys.readouterr().out
    assert f"job 'cli': 1 shard(s), 3 rows -> {tmp_path / 'out'}" in out
    assert "rows 3/3 (100.0%) | errors 0 | shards 1/1 |" in out
    assert "job 'cli' done in " in out and "tokens     " in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["config"]["engine"]["mode"] == "ar" and summary["config"]["sampling"]["max_new_tokens"] == 2
    assert summary["totals"]["completion_tokens"] == 6
    # A second run into the same folder is refused (exit 2) unless overwrite is set.
    assert main(["run", job]) == 2
    assert "outputs/ already holds 1 files from an earlier run; set output.overwrite=true" in capsys.readouterr().err
    assert main(["run", job, "--set", "output.overwrite=true"]) == 0


def test_usage_errors_exit_2_before_ray(tmp_path, write_shards, capsys):
    inputs = write_shards({"a.parquet": {"text": ["x"]}})
    (tmp_path / "model").mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / "model" / name).write_text("{}")
    job = write_job(tmp_path, inputs, tmp_path / "model", tmp_path / "out")
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err == (f"orthrus-batch: error: {tmp_path}/missing.yaml: cannot read job file "
                                       f"(No such file or directory)\n")
    assert main(["run", job, "--set", "engine.mode=fast"]) == 2
    assert capsys.readouterr().err == (f"orthrus-batch: error: {job}: engine.mode: Input should be 'orthrus' or "
                                       f"'ar' (got 'fast')\n")
    assert main(["run", job]) == 2
    assert capsys.readouterr().err == (f"orthrus-batch: error: shard {inputs}/a.parquet: no column 'prompt' "
                                       f"(columns: text) (input.on_bad_file=skip skips bad files)\n")
    assert main(["run", job, "--set", f"model.path={tmp_path}/none"]) == 2
    assert capsys.readouterr().err == (f"orthrus-batch: error: model.path '{tmp_path}/none': no checkpoint folder "
                                       f"there ({tmp_path}/none), and not a hub id (org/name)\n")
    assert main(["run", job, "--set", f"model.path={inputs}"]) == 2
    assert capsys.readouterr().err == f"orthrus-batch: error: model.path '{inputs}': the folder has no config.json\n"
    assert main(["run", job, "--set", f"input.path={tmp_path}/nothing/*.parquet"]) == 2
    assert capsys.readouterr().err == (f"orthrus-batch: error: input.path '{tmp_path}/nothing/*.parquet': "
                                       f"no Parquet files match\n")


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "usage: orthrus-batch" in capsys.readouterr().err
