"""run_job: Parquet shards -> Ray Data -> engine actors -> Parquet, with per-shard stats.

The Dataset, end to end streaming:

    read_parquet(include_paths, include_row_hash)      rows carry their shard and a row hash
      -> repartition(batch_size rows per block)        small files are often read as one block
      -> map_batches(GenerateActor, actor pool)        one Engine per actor, one generate per batch
      -> map_batches(commit_batch, tasks)              write outputs/, reduce to partial stats
      -> driver iter_batches                           fold partials per shard, print progress

Only the partial stats (a row per batch and shard) reach the driver, so neither the driver nor
an actor ever holds the dataset. Usage: `pipeline.run_job(config)` or `orthrus-batch run JOB.yaml`.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from importlib import metadata
from typing import Any, Callable

from pipeline.config import JobConfig, build_config, load_config
from pipeline.outputs import OUTPUTS_DIR, commit_batch, prepare_output, write_shard_stats, write_summary
from pipeline.progress import Progress, flush_print, format_summary
from pipeline.shards import InputError, Shard, list_shards
from pipeline.stats import StatsAccumulator
from pipeline.storage import locate
from workers.rows import RAY_HASH_COLUMN, RAY_PATH_COLUMN
from workers.spec import WorkerSpec

_VERSIONED = ("orthrus-batch", "ray", "torch", "transformers", "tokenizers", "pyarrow", "pandas", "pydantic",
              "safetensors")
_COMMIT_CPUS = 0.25  # commit tasks mostly wait on I/O


def worker_spec(config: JobConfig, s3_input: bool) -> WorkerSpec:
    """The frozen settings each actor receives."""
    c = config
    model = os.path.abspath(c.model.path) if os.path.isdir(c.model.path) else c.model.path  # workers' cwd differs
    return WorkerSpec(
        model_path=model, dtype=c.model.dtype, mode=c.engine.mode, block_size=c.engine.block_size,
        max_batch_size=c.engine.max_batch_size, max_model_len=c.engine.max_model_len,
        cuda_graphs=c.engine.cuda_graphs,
        prompt_column=c.input.prompt_column, messages_column=c.input.messages_column, id_column=c.input.id_column,
        sampling_columns=tuple(c.input.sampling_columns.columns().items()),
        max_new_tokens=c.sampling.max_new_tokens, temperature=c.sampling.temperature, top_k=c.sampling.top_k,
        top_p=c.sampling.top_p, seed=c.sampling.seed, chat_template=c.prompt.chat_template,
        enable_thinking=c.prompt.enable_thinking, s3_input=s3_input,
    )


def check_model_path(path: str) -> None:
    """Fail before Ray starts when model.path is neither a checkpoint folder nor a hub id (org/name)."""
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise InputError(f"model.path {path!r}: the folder has no config.json")
        return
    if os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise InputError(f"model.path {path!r}: no checkpoint folder there, and not a hub id (org/name)")


def input_columns(config: JobConfig) -> list[str]:
    """The input columns the job reads (every shard must have them)."""
    i = config.input
    cols = [i.prompt_column or i.messages_column]
    if i.id_column:
        cols.append(i.id_column)
    cols += [c for c in i.sampling_columns.columns().values() if c not in cols]
    return [c for c in cols if c is not None]


def actor_resources(config: JobConfig, cluster_gpus: float) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor): one actor per GPU on GPU clusters, else one CPU actor."""
    r = config.resources
    gpus = r.gpus_per_worker if r.gpus_per_worker is not None else (1.0 if cluster_gpus >= 1 else 0.0)
    if r.num_workers is not None:
        workers = r.num_workers
    else:
        workers = max(1, int(cluster_gpus // gpus)) if gpus > 0 else 1
    return workers, gpus, r.cpus_per_worker


def build_dataset(config: JobConfig, shards: list[Shard], output_uri: str, cluster_gpus: float) -> Any:
    """The lazy Ray Dataset whose items are partial stats rows (see the module docstring)."""
    import ray.data
    from ray.data import ActorPoolStrategy

    from workers.actor import GenerateActor

    loc = locate(config.input.path)
    workers, gpus, cpus = actor_resources(config, cluster_gpus)
    batch = config.resources.batch_size
    ds = ray.data.read_parquet(
        [s.fs_path for s in shards], filesystem=loc.filesystem, include_paths=True, include_row_hash=True,
    ).select_columns(input_columns(config) + [RAY_PATH_COLUMN, RAY_HASH_COLUMN])  # pushed down into the read
    ds = ds.repartition(target_num_rows_per_block=batch)
    ds = ds.map_batches(
        GenerateActor, fn_constructor_kwargs={"spec": worker_spec(config, loc.is_s3)}, batch_size=batch,
        batch_format="pyarrow", compute=ActorPoolStrategy(size=workers), num_cpus=cpus, num_gpus=gpus,
    )
    return ds.map_batches(commit_batch, fn_kwargs={"output_uri": output_uri}, batch_size=None,
                          batch_format="pyarrow", num_cpus=_COMMIT_CPUS)


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


def run_job(config: JobConfig | dict[str, Any] | str, *,
            echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one generation job to completion.

    Args:
        config: a JobConfig, a dict in the YAML's shape, or the path of a job YAML.
        echo: where progress lines and the final summary go (default: stdout, flushed per line so
            progress shows up in redirected logs).
    Returns:
        The summary (also written to summary.json): config, versions, model, mode, engines, totals, paths.
    Raises:
        ConfigError, InputError, OutputError: before Ray starts, naming the key, file or path.
        RuntimeError: the run finished but rows are missing (after writing stats and summary).
    """
    import ray

    echo = echo or flush_print
    config = _coerce(config)
    check_model_path(config.model.path)
    shards = list_shards(config.input.path, input_columns(config))
    out = prepare_output(config.output.path, config.output.overwrite)
    _ensure_ray(config)
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
    acc = StatsAccumulator((s.uri, s.num_rows) for s in shards)
    progress = Progress(acc, config.progress_interval_s, echo)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    echo(f"job {config.name!r}: {len(shards)} shard(s), {acc.total.input_rows:,} rows -> {out.uri}")
    t0 = time.monotonic()
    ds = build_dataset(config, shards, out.uri, cluster_gpus)
    for partials in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        acc.add(partials)
        progress.update()
    job_seconds = time.monotonic() - t0
    progress.update(force=True)

    shard_stats_uri = write_shard_stats(out, acc.table())
    workers, gpus, cpus = actor_resources(config, cluster_gpus)
    summary = {
        "name": config.name,
        "started_at": started_at,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config.model_dump(mode="json"),
        "versions": _versions(),
        "model": {"path": config.model.path, "dtype": config.model.dtype},
        "mode": config.engine.mode,
        "device_types": sorted({e.get("device", "?") for e in acc.engine_facts()}),
        "engines": acc.engine_facts(),
        "actors": acc.actors,
        "resources": {"num_workers": workers, "gpus_per_worker": gpus, "cpus_per_worker": cpus,
                      "cluster_gpus": cluster_gpus},
        "totals": acc.totals(job_seconds),
        "paths": {"outputs": out.child(OUTPUTS_DIR).uri, "shard_stats": shard_stats_uri,
                  "summary": out.child("summary.json").uri},
    }
    write_summary(out, summary)
    echo(format_summary(summary))
    missing = [s for s in acc.shards.values() if not s.complete]
    if missing:
        first = missing[0]
        raise RuntimeError(f"{len(missing)} shard(s) incomplete, e.g. {first.shard}: {first.rows} of "
                           f"{first.input_rows} rows written")
    return summary
