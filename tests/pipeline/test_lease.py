"""One job owns its output folder (pipeline/lease.py, issue 13): a second job is refused, a crashed
job's lease goes stale and is taken over only with output.resume/overwrite."""
from __future__ import annotations

import json
import socket
import threading
import time

import pyarrow.parquet as pq
import pytest

from cli_run import finish, keyed_shards, start, wait_until, write_job
from jobs.cli import main
from s3server import BUCKET
from pipeline import lease as lease_mod
from pipeline.lease import LEASE_FILE, Lease, LeaseError
from pipeline.outputs import OutputError
from pipeline.storage import locate


def held(loc, **fields) -> None:
    """A lease file as another job would have left it."""
    body = {"owner": "other", "host": socket.gethostname(), "pid": 1, "job": "old", "started_at": "2026-01-01T00:00:00",
            "heartbeat_at": time.time(), **fields}
    with loc.filesystem.open_output_stream(loc.child(LEASE_FILE).fs_path) as f:
        f.write(json.dumps(body).encode())


def test_a_live_lease_refuses_a_second_job_until_released(tmp_path):
    loc = locate(str(tmp_path / "out"))
    first = Lease(loc, "first")
    assert first.acquire(take_over=False) is None
    on_disk = json.loads((tmp_path / "out" / LEASE_FILE).read_text())
    assert (on_disk["job"], on_disk["host"], on_disk["pid"]) == ("first", socket.gethostname(), first.me["pid"])
    for take_over in (False, True):  # resume or overwrite never take a live lease
        with pytest.raises(OutputError) as err:
            Lease(loc, "second").acquire(take_over=take_over)
        assert str(err.value) == (
            f"output.path {loc.uri}: another job is writing there: job 'first' (pid {first.me['pid']} on "
            f"{socket.gethostname()}, started {first.me['started_at']}), last heartbeat 0s ago; wait for it to "
            f"finish or choose another output.path (a lease with no heartbeat for 60s is stale and "
            f"output.resume=true takes it over)")
    first.release()
    assert not (tmp_path / "out" / LEASE_FILE).exists()
    second = Lease(loc, "second")
    second.acquire(take_over=False)
    second.release()


def test_a_crashed_jobs_lease_is_stale_and_taken_over_only_with_resume(tmp_path):
    loc = locate(str(tmp_path))
    held(loc, pid=2 ** 22 + 12345)  # no such process on this host
    with pytest.raises(OutputError) as err:
        Lease(loc).acquire(take_over=False)
    assert str(err.value) == (f"output.path {tmp_path}: a job that stopped without finishing left its lease job.lock "
                              f"(job 'old', pid {2 ** 22 + 12345} on {socket.gethostname()}: its process "
                              f"{2 ** 22 + 12345} on this host is gone); output.resume=true finishes that run, "
                              f"output.overwrite=true starts over")
    mine = Lease(loc)
    assert mine.acquire(take_over=True) == (f"taking over the output folder from a job that stopped (its process "
                                            f"{2 ** 22 + 12345} on this host is gone)")
    assert json.loads((tmp_path / LEASE_FILE).read_text())["owner"] == mine.me["owner"]
    mine.release()
    # Another host: stale only once its heartbeat is older than STALE_AFTER_S.
    held(loc, host="elsewhere", pid=7, heartbeat_at=time.time() - 30)
    with pytest.raises(OutputError, match="another job is writing there: job 'old' .pid 7 on elsewhere"):
        Lease(loc).acquire(take_over=True)
    held(loc, host="elsewhere", pid=7, heartbeat_at=time.time() - 600)
    with pytest.raises(OutputError, match=r"\(job 'old', pid 7 on elsewhere: no heartbeat for 10m\); output.resume"):
        Lease(loc).acquire(take_over=False)


def test_of_jobs_starting_together_exactly_one_gets_the_folder(tmp_path):
    """Every job reads "no lease" before any writes one (the worst interleaving, forced by a barrier):
    the create must still be exclusive. Planting a plain write (os.replace) for the create fails this."""
    loc = locate(str(tmp_path / "out"))
    won, refused, gate = [], [], threading.Barrier(8)

    def contend(i: int) -> None:
        lease = Lease(loc, f"job{i}")
        read, calls = lease._read, []

        def read_then_wait():
            value = read()
            if not calls:
                calls.append(1)
                gate.wait()
            return value

        lease._read = read_then_wait
        try:
            lease.acquire(take_over=False)
            won.append(lease)
        except OutputError as err:
            refused.append(str(err))

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7
    assert all(r.startswith(f"output.path {loc.uri}: another job is writing there: job '{won[0].me['job']}'")
               for r in refused)
    won[0].release()


def test_heartbeat_and_a_lost_lease_stop_the_job(tmp_path):
    loc = locate(str(tmp_path))
    lease = Lease(loc, heartbeat_s=0.1)
    lease.acquire(take_over=False)
    first = json.loads((tmp_path / LEASE_FILE).read_text())["heartbeat_at"]
    time.sleep(0.35)
    assert json.loads((tmp_path / LEASE_FILE).read_text())["heartbeat_at"] > first
    lease.check()
    held(loc, owner="thief")
    time.sleep(0.35)
    with pytest.raises(LeaseError, match=r"another job took this folder's lease \(job.lock\); stopping so that rows "
                                         r"are not written twice"):
        lease.check()
    lease.release()
    assert json.loads((tmp_path / LEASE_FILE).read_text())["owner"] == "thief"  # not ours: left alone


@pytest.mark.timeout(60)
def test_s3_lease(s3_env, monkeypatch):
    import pyarrow.fs as pafs

    monkeypatch.setattr(lease_mod, "SETTLE_S", 0.2)
    loc = locate(f"s3://{BUCKET}/leases/run1")
    fs = loc.filesystem
    first = Lease(loc, "first")
    first.acquire(take_over=False)
    with pytest.raises(OutputError, match=rf"^output.path s3://{BUCKET}/leases/run1: another job is writing there: job 'first'"):
        Lease(loc, "second").acquire(take_over=False)
    first.release()
    assert fs.get_file_info(f"{BUCKET}/leases/run1/job.lock").type == pafs.FileType.NotFound
    held(loc, host="elsewhere", heartbeat_at=time.time() - 600)
    taker = Lease(loc)
    assert taker.acquire(take_over=True) == "taking over the output folder from a job that stopped (no heartbeat for 10m)"
    taker.release()


@pytest.mark.timeout(180)
def test_two_jobs_into_one_folder_one_is_refused_the_other_writes_every_row_once(tiny_model, write_shards, tmp_path,
                                                                                  capsys):
    keys, inputs = keyed_shards(write_shards, 4)
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", tiny_model, str(inputs), str(out), sampling={"max_new_tokens": 16})
    proc = start(job, log=tmp_path / "first.txt")
    wait_until(proc, lambda: (out / LEASE_FILE).exists(), timeout=60)
    # The second job (here in-process, as a user's second terminal) is refused before Ray starts.
    assert main(["run", str(job)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"orthrus-batch: error: output.path {out}: another job is writing there: job 'fault' "
                          f"(pid {proc.pid} on {socket.gethostname()}, started ") and err.count("\n") == 1
    assert main(["run", str(job), "--set", "output.overwrite=true"]) == 2  # nor may it delete the first's rows
    assert finish(proc, 150) == 0, (tmp_path / "first.txt").read_text()
    ids = pq.read_table(out / "outputs", columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(keys)  # every row exactly once
    assert not (out / LEASE_FILE).exists()
