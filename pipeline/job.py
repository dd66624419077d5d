"""run_job: Parquet shards -> Ray Data -> engine actors -> Parquet, with per-shard stats.

The Dataset, end to end streaming:

    read_parquet(include_paths, include_row_hash)      rows carry their shard and a row hash
      -> repartition(batch_size rows per block)        small files are often read as one block
      -> map_batches(GenerateActor, actor pool)        one Engine per actor, one generate per batch
      -> map_batches(commit_batch, tasks)              write outputs/, reduce to partial stats
      -> driver iter_batches                           fold partials per shard, print progress

Only the partial stats (a row per batch and shard) reach the driver, so neither the driver nor
an actor ever holds the dataset. Usage: `pipeline.run_job(config)` or `orthrus-batch run JOB.yaml`.

Faults (issue 6; README "Reliability"): bad files are found from footers before Ray starts
(skipped with input.on_bad_file=skip); an engine actor whose process dies is restarted by Ray
and its batch retried (resources.max_restarts / max_task_retries); commit tasks retry on I/O
errors; when the driver dies, `output.resume=true` finishes the job shard by shard
(pipeline/outputs.py). Ray Data's own checkpointing (DataContext.checkpoint_config) is not used:
it only applies to a Dataset that ends in a `write_*` sink, and this one ends in the driver's
iter_batches (tests/pipeline/test_resume.py shows Ray disabling it here).
"""
from __future__ import annotations

import os
import time
import warnings
from datetime import datetime, timezone
from importlib import metadata
from typing import Any, Callable

from pipeline.columns import Role, read_schema
from pipeline.config import JobConfig, build_config, load_config, resume_key
from pipeline.ids import find_duplicates
from pipeline.lease import LEASE_FILE, Lease
from pipeline.outputs import (OUTPUTS_DIR, SUMMARY_FILE, OutputError, commit_batch, drop_partial, load_done,
                              mark_done, output_location, prepare_output, write_shard_stats)
from pipeline.progress import Progress, flush_print, format_summary
from pipeline.shards import CREDENTIALS_HINT, InputError, Shard, scan_shards
from pipeline.stats import StatsAccumulator
from pipeline.summary import RunSummary
from pipeline.storage import locate
from workers import model_source
from workers.config import CheckpointError
from workers.params import SamplingParams
from workers.schema import RAY_HASH_COLUMN, RAY_PATH_COLUMN
from workers.spec import EngineSettings, WorkerSpec

_VERSIONED = ("orthrus-batch", "ray", "torch", "transformers", "tokenizers", "pyarrow", "pandas", "pydantic",
              "safetensors")
_COMMIT_CPUS = 0.25  # commit tasks mostly wait on I/O
_COMMIT_RETRIES = 5  # a commit that fails on I/O (S3 down for longer than its own retries) runs again


def worker_spec(config: JobConfig, s3_input: bool, duplicate_rows: dict[int, str] | None = None) -> WorkerSpec:
    """The frozen settings each actor receives: the engine and sampling sections map one to one onto
    EngineSettings and SamplingParams (tests/pipeline/test_job_config.py holds them to that)."""
    c, i = config, config.input
    model = os.path.abspath(c.model.path) if os.path.isdir(c.model.path) else c.model.path  # workers' cwd differs
    return WorkerSpec(
        model_path=model, dtype=c.model.dtype, engine=EngineSettings(**c.engine.model_dump()),
        sampling=SamplingParams(**c.sampling.model_dump()), prompt_column=i.prompt_column,
        messages_column=i.messages_column, id_column=i.id_column,
        sampling_columns=tuple(i.sampling_columns.columns().items()), **c.prompt.model_dump(), s3_input=s3_input,
        duplicate_rows=duplicate_rows or {},
    )


def check_model_path(path: str) -> None:
    """model.path checked in the driver, before Ray starts (workers/model_source.check), as an InputError."""
    try:
        model_source.check(path)
    except CheckpointError as err:
        raise InputError(str(err)) from None


def input_roles(config: JobConfig) -> dict[str, Role]:
    """The input columns the job reads (every shard must have them), each with its role (pipeline/columns.py)."""
    i = config.input
    roles: dict[str, Role] = {i.prompt_column: "prompt"} if i.prompt_column else {i.messages_column: "messages"}
    if i.id_column:
        roles.setdefault(i.id_column, "id")
    for column in i.sampling_columns.columns().values():
        roles.setdefault(column, "sampling")
    return roles


def input_columns(config: JobConfig) -> list[str]:
    """The input columns the job reads (every shard must have them)."""
    return list(input_roles(config))


def actor_resources(config: JobConfig, cluster_gpus: float) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor): one actor per GPU on GPU clusters, else one CPU actor."""
    r = config.resources
    gpus = r.gpus_per_worker if r.gpus_per_worker is not None else (1.0 if cluster_gpus >= 1 else 0.0)
    if r.num_workers is not None:
        workers = r.num_workers
    else:
        workers = max(1, int(cluster_gpus // gpus)) if gpus > 0 else 1
    return workers, gpus, r.cpus_per_worker


def build_dataset(config: JobConfig, shards: list[Shard], output_uri: str, cluster_gpus: float,
                  duplicate_rows: dict[int, str] | None = None, actor_cls: type | None = None) -> Any:
    """The lazy Ray Dataset whose items are partial stats rows (see the module docstring).

    `actor_cls` replaces GenerateActor (tests use a subclass that kills its own process).
    """
    import ray.data
    from ray.data import ActorPoolStrategy

    from workers.actor import GenerateActor

    r = config.resources
    loc = locate(config.input.path)
    workers, gpus, cpus = actor_resources(config, cluster_gpus)
    batch = config.resources.batch_size
    roles = input_roles(config)
    schema = read_schema(roles, [{c: s.schema.field(c).type for c in roles} for s in shards if s.schema is not None])
    ds = ray.data.read_parquet(  # `schema`: every file is cast to the types decided from the footers
        [s.fs_path for s in shards], filesystem=loc.filesystem, include_paths=True, include_row_hash=True,
        schema=schema,
    ).select_columns(input_columns(config) + [RAY_PATH_COLUMN, RAY_HASH_COLUMN])  # pushed down into the read
    ds = ds.repartition(target_num_rows_per_block=batch)
    # Ray 2.60 has no named parameters for restarts and retries yet; it warns that passing them as
    # remote args is deprecated (until 2.64) on every run, which only confuses a job's log.
    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)
    # several batches in flight per actor, each call on its own thread, all feeding one engine (workers/actor.py)
    inflight = config.engine.max_concurrent_batches
    pool = ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=inflight,
                             max_concurrent_calls_per_actor=inflight, enable_true_multi_threading=inflight > 1)
    ds = ds.map_batches(
        actor_cls or GenerateActor, fn_constructor_kwargs={"spec": worker_spec(config, loc.is_s3, duplicate_rows)},
        batch_size=batch, batch_format="pyarrow", compute=pool, num_cpus=cpus,
        num_gpus=gpus, max_restarts=r.max_restarts, max_task_retries=r.max_task_retries,
    )
    return ds.map_batches(commit_batch, fn_kwargs={"output_uri": output_uri}, batch_size=None,
                          batch_format="pyarrow", num_cpus=_COMMIT_CPUS, max_retries=_COMMIT_RETRIES,
                          retry_exceptions=[OSError])


def _versions() -> dict[str, str | None]:
    """Installed versions (read from package metadata: the driver does not import torch)."""
    out: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _ensure_ray(config: JobConfig) -> None:
    import ray
    import ray.data

    if not ray.is_initialized():
        # Only the address: options such as include_dashboard are refused when joining a cluster.
        ray.init(address=config.ray_address or os.environ.get("RAY_ADDRESS") or None)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own progress lines instead (pipeline/progress.py)


def _coerce(config: JobConfig | dict[str, Any] | str) -> JobConfig:
    if isinstance(config, JobConfig):
        return config
    if isinstance(config, dict):
        return build_config(config)
    return load_config(config)


def run_job(config: JobConfig | dict[str, Any] | str, *, echo: Callable[[str], None] | None = None,
            actor_cls: type | None = None) -> dict[str, Any]:
    """Run one generation job to completion.

    Args:
        config: a JobConfig, a dict in the YAML's shape, or the path of a job YAML.
        echo: where progress lines and the final summary go (default: stdout, flushed per line so
            progress shows up in redirected logs).
        actor_cls: a GenerateActor subclass to use instead (tests).
    Returns:
        The run's summary in its JSON form, as written to summary.json (pipeline/summary.RunSummary:
        config, versions, model, mode, engines, totals, engine_state, skipped_files, resumed, paths).
    Raises:
        ConfigError, InputError, OutputError: before Ray starts, naming the key, file or path.
        RuntimeError: the run finished but rows are missing (after writing stats and summary).
    """
    echo = echo or flush_print
    config = _coerce(config)
    check_model_path(config.model.path)
    shards, skipped = scan_shards(config.input.path, (), config.input.on_bad_file, input_roles(config))
    for bad in skipped:
        echo(f"skipping bad input file {bad.uri}: {bad.reason}")
    lease = acquire_lease(config, echo)
    try:
        return _prepare_and_run(config, shards, skipped, lease, echo, actor_cls)
    finally:
        lease.release()


def acquire_lease(config: JobConfig, echo: Callable[[str], None]) -> Lease:
    """Own output.path for this run (pipeline/lease.py), before anything in it is read or deleted."""
    loc = output_location(config.output.path)
    lease = Lease(loc, config.name)
    try:
        note = lease.acquire(take_over=config.output.resume or config.output.overwrite)
    except OSError as err:
        hint = f"; {CREDENTIALS_HINT}" if loc.is_s3 else ""
        raise OutputError(f"output.path {loc.uri}: cannot write its lease {LEASE_FILE} ({err}){hint}") from None
    if note:
        echo(note)
    return lease


def _prepare_and_run(config: JobConfig, shards: list[Shard], skipped: list, lease: Lease,
                     echo: Callable[[str], None], actor_cls: type | None) -> dict[str, Any]:
    out = prepare_output(config.output.path, config.output.overwrite, config.output.resume, resume_key(config))
    acc = StatsAccumulator((s.uri, s.num_rows) for s in shards)
    if config.output.resume:
        acc.restore(load_done(out, {s.uri: s.num_rows for s in shards}))
        dropped = drop_partial(out, acc.resumed)
        echo(f"resuming: {len(acc.resumed)} shard(s) already complete, {dropped} file(s) of partial shards deleted")
    todo = [s for s in shards if s.uri not in acc.resumed]
    duplicates = {}
    if config.input.id_column and config.input.duplicate_ids == "error":
        duplicates = find_duplicates(locate(config.input.path).filesystem, shards, config.input.id_column)
    return _run(config, out, acc, todo, skipped, duplicates, echo, actor_cls, lease)


def _run(config: JobConfig, out: Any, acc: StatsAccumulator, todo: list[Shard], skipped: list, duplicates: dict,
         echo: Callable[[str], None], actor_cls: type | None, lease: Lease) -> dict[str, Any]:
    """Run the shards in `todo`, marking each as done when its last row is written; write stats and summary."""
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    echo(f"job {config.name!r}: {len(acc.shards)} shard(s), {acc.total.input_rows:,} rows -> {out.uri}")
    t0 = time.monotonic()
    progress = Progress(acc, config.progress_interval_s, echo)
    cluster_gpus = 0.0
    todo_rows = sum(s.num_rows for s in todo)
    if todo_rows:
        import ray

        _ensure_ray(config)
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
        ds = build_dataset(config, [s for s in todo if s.num_rows], out.uri, cluster_gpus, duplicates, actor_cls)
        for partials in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            lease.check()
            acc.add(partials)
            for stats in acc.newly_complete(partials):
                mark_done(out, stats)
            progress.update()
    for s in todo:
        if acc.shards[s.uri].complete and not s.num_rows:
            mark_done(out, acc.shards[s.uri])  # empty shards: complete from the start
    job_seconds = time.monotonic() - t0
    progress.update(force=True)

    earlier = RunSummary.read(out) if config.output.resume else None
    shard_stats_uri = write_shard_stats(out, acc.table())
    workers, gpus, cpus = actor_resources(config, cluster_gpus)
    summary = RunSummary(
        name=config.name, started_at=started_at,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config=config.model_dump(mode="json"), versions=_versions(),
        model={"path": config.model.path, "dtype": config.model.dtype}, mode=config.engine.mode,
        device_types=sorted({e.get("device", "?") for e in acc.engine_facts()}), engines=acc.engine_facts(),
        actors=acc.actors,
        resources={"num_workers": workers, "gpus_per_worker": gpus, "cpus_per_worker": cpus,
                   "cluster_gpus": cluster_gpus},
        totals=acc.totals(job_seconds, earlier.totals if earlier else None), this_run=acc.this_run(job_seconds),
        skipped_files=[{"file": b.uri, "reason": b.reason} for b in skipped],
        resumed={"shards": len(acc.resumed), "rows": sum(acc.shards[u].rows for u in acc.resumed)},
        paths={"outputs": out.child(OUTPUTS_DIR).uri, "shard_stats": shard_stats_uri,
               "summary": out.child(SUMMARY_FILE).uri},
        engine_state=acc.engine_state().to_json(),
    )
    summary.write(out)
    echo(format_summary(summary))
    missing = [s for s in acc.shards.values() if not s.complete]
    if missing:
        first = missing[0]
        raise RuntimeError(f"{len(missing)} shard(s) incomplete, e.g. {first.shard}: {first.rows} of "
                           f"{first.input_rows} rows written")
    return summary.to_json()
