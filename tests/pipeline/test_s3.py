"""S3 input and output against a real S3 server on loopback (SeaweedFS; tests/pipeline/s3server.py).

Credentials come only from the standard AWS settings: environment variables, or a profile in a
shared credentials file, with AWS_ENDPOINT_URL for the server. Jobs run as child processes so
that their Ray workers see those settings, as they would on a cluster.
"""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from cli_run import finish, start, wait_until, write_job
from pipeline.outputs import OutputError, prepare_output
from pipeline.shards import InputError, list_shards
from pipeline.storage import filesystem_for
from s3server import ACCESS_KEY, BUCKET, SECRET_KEY


def put_shards(prefix: str, shards: dict[str, dict]) -> None:
    fs = filesystem_for(True)
    for name, data in shards.items():
        with fs.open_output_stream(f"{BUCKET}/{prefix}/{name}") as f:
            pq.write_table(pa.table(data), f)


def s3_files(prefix: str) -> list[str]:
    infos = filesystem_for(True).get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True,
                                                                 allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def read_s3_table(path: str) -> pa.Table:
    return pq.read_table(f"{BUCKET}/{path}", filesystem=filesystem_for(True))


def test_shards_list_from_s3_with_env_credentials_or_a_profile(s3_env, tmp_path, monkeypatch):
    put_shards("listing", {"a.parquet": {"prompt": ["x", "y"]}, "b.parquet": {"prompt": ["z"]}})
    uri = f"s3://{BUCKET}/listing"
    assert [(s.uri, s.num_rows) for s in list_shards(uri, ["prompt"])] == [
        (f"{uri}/a.parquet", 2), (f"{uri}/b.parquet", 1)]
    # A named profile in a shared credentials file, no keys in the environment.
    creds = tmp_path / "credentials"
    creds.write_text(f"[orthrus-test]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_PROFILE", "orthrus-test")
    assert [s.num_rows for s in list_shards(f"{uri}/*.parquet", ["prompt"])] == [2, 1]


def test_wrong_credentials_fail_before_ray_with_a_clear_error(s3_env, monkeypatch):
    put_shards("creds", {"a.parquet": {"prompt": ["x"]}})
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(InputError) as err:
        list_shards(f"s3://{BUCKET}/creds", ["prompt"])
    text = str(err.value)
    assert text.startswith(f"input.path 's3://{BUCKET}/creds': cannot list (")
    assert "AWS Error ACCESS_DENIED during HeadObject operation" in text
    assert text.endswith("); check the AWS settings (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, "
                         "AWS_ENDPOINT_URL)")
    assert "not-the-secret" not in text
    with pytest.raises(OutputError) as err:
        prepare_output(f"s3://{BUCKET}/creds-out", overwrite=False, job={"k": 1})
    assert str(err.value).startswith(f"output.path s3://{BUCKET}/creds-out: cannot list (")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY")
    with pytest.raises(InputError, match=r"cannot list \(.*check the AWS settings"):
        list_shards(f"s3://{BUCKET}/creds", ["prompt"])


@pytest.mark.timeout(150)
def test_s3_job_survives_a_server_restart_and_never_leaks_credentials(s3_env, tiny_model, tmp_path):
    """Input and output on S3, the keys only in the job's environment. The store goes down for 2 s
    while batches are being written: S3 requests retry with backoff (pipeline/storage.py) and commit
    tasks retry on I/O errors, so the job finishes on its own with every row exactly once."""
    rows = {f"s{s}.parquet": {"key": [f"r{s}-{i}" for i in range(8)], "prompt": [f"p{s} {i}" for i in range(8)]}
            for s in range(4)}
    put_shards("job/in", rows)
    job = write_job(tmp_path / "job.yaml", tiny_model, f"s3://{BUCKET}/job/in", f"s3://{BUCKET}/job/out",
                    sampling={"max_new_tokens": 24})
    proc = start(job, env=s3_env.env(), log=tmp_path / "log.txt")
    wait_until(proc, lambda: len(s3_files("job/out/outputs")) >= 2, timeout=90)
    s3_env.restart(down_s=2.0)
    assert proc.poll() is None, "the outage should land mid-job"
    assert finish(proc, 120) == 0, (tmp_path / "log.txt").read_text()

    out = read_s3_table("job/out/outputs").to_pandas()
    assert sorted(out["id"]) == sorted(k for d in rows.values() for k in d["key"])  # each exactly once
    assert out["error"].isna().all() and (out["num_completion_tokens"] == 24).all()
    assert set(out["shard"]) == {f"s3://{BUCKET}/job/in/s{s}.parquet" for s in range(4)}
    files = s3_files("job/out")
    assert f"{BUCKET}/job/out/summary.json" in files and f"{BUCKET}/job/out/stats/shards.parquet" in files
    with filesystem_for(True).open_input_stream(f"{BUCKET}/job/out/summary.json") as f:
        summary = json.loads(f.read())
    assert summary["totals"]["rows"] == 32 and summary["totals"]["shards_complete"] == 4
    # The keys are in the job's environment; they appear in no output, stat, summary or log line.
    everything = [(tmp_path / "log.txt").read_bytes()]
    fs = filesystem_for(True)
    for path in files:
        with fs.open_input_stream(path) as f:
            everything.append(f.read())
    for blob in everything:
        assert ACCESS_KEY.encode() not in blob and SECRET_KEY.encode() not in blob
