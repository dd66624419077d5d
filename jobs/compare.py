"""Is Orthrus worth it on my data? `orthrus-batch compare JOB.yaml [--sample N] [--gpu-hour-price USD]`.

    orthrus-batch compare jobs/examples/demo.yaml --sample 64 --gpu-hour-price 2.50 --set output.overwrite=true
    python -m jobs.compare JOB.yaml [--sample N] [--seed S] [--gpu-hour-price USD] [--out DIR] [--set k=v ...]

Runs the job twice through `pipeline.run_job`, greedy, on the same rows (a seeded sample with
--sample, else all of them): `engine.mode=ar` into OUT/ar and `engine.mode=orthrus` into
OUT/orthrus. It reads back both runs' outputs/ and stats/ and writes OUT/compare/: shards.parquet
(per shard and `(all)`), rows.parquet (per row: status, first differing token, speedup),
summary.json, report.html (self-contained), report.md and the PNGs. OUT is --out, else the job's
output.path. Exit status: 0 done, 2 the job, its input or an output folder is invalid (nothing
ran), 1 a run failed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.compare import (ALL, MODES, ROW_INPUT_COLUMNS, ROWS_COLUMNS, Billing, equality, first_differences,
                              join_rows, shard_table, workers_per_mode)
from pipeline.config import JobConfig, build_config, load_config
from pipeline.job import check_model_path, input_columns
from pipeline.outputs import OUTPUTS_DIR, SHARDS_FILE, prepare_output
from pipeline.progress import flush_print
from pipeline.report import write_report
from pipeline.sample import write_sample
from pipeline.shards import list_shards
from pipeline.storage import Location, locate
from pipeline.summary import RunSummary

from pipeline.exit_status import FAILED, INTERRUPTED, USAGE_ERRORS, module_main, usage_error
from pipeline.ray_logs import log_path, ray_output_to

COMPARE_DIR = "compare"
DEFAULT_PRICE = 1.0  # USD per GPU-hour: a placeholder that makes $ read as GPU-hours; pass your price


def mode_config(config: JobConfig, mode: str, input_path: str, output: Location) -> JobConfig:
    """The job as run in one mode: greedy (a per-row temperature column is ignored), its own output."""
    raw = config.model_dump(mode="json")
    raw["name"] = f"{config.name}-{mode}"
    raw["engine"]["mode"] = mode
    raw["input"]["path"] = input_path
    raw["input"]["sampling_columns"]["temperature"] = None
    raw["sampling"]["temperature"] = 0.0
    raw["output"]["path"] = output.uri
    return build_config(raw, source=f"compare ({mode})")


def _write(loc: Location, data: bytes) -> None:
    fs = loc.filesystem
    if not loc.is_s3:
        fs.create_dir(loc.fs_path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(loc.fs_path) as f:
        f.write(data)


def _write_table(loc: Location, frame: pd.DataFrame) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    _write(loc, sink.getvalue().to_pybytes())


def _jsonable(value: Any) -> Any:
    """NaN -> null (JSON has no NaN), numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def read_run(loc: Location) -> tuple[pd.DataFrame, pd.DataFrame, RunSummary]:
    """(outputs rows, stats/shards.parquet, summary.json) of one finished run."""
    fs = loc.filesystem
    rows = pq.read_table(loc.child(OUTPUTS_DIR).fs_path, filesystem=fs, columns=ROW_INPUT_COLUMNS).to_pandas()
    stats = pq.read_table(loc.child(SHARDS_FILE).fs_path, filesystem=fs).to_pandas()
    summary = RunSummary.read(loc)
    if summary is None:
        raise RuntimeError(f"{loc.uri}: the run wrote no readable summary.json")
    return rows, stats, summary


def compare(job: str, overrides: Sequence[str] = (), sample: int | None = None, seed: int = 0,
            price: float = DEFAULT_PRICE, out: str | None = None,
            echo: Callable[[str], None] = flush_print) -> dict[str, Any]:
    """Run both modes and write the comparison; returns the compare summary (also summary.json).

    Raises:
        ConfigError, InputError, OutputError: before anything runs.
        RuntimeError: a run finished with rows missing.
    """
    from pipeline import run_job

    config = load_config(job, list(overrides))
    root = locate(out or config.output.path)
    check_model_path(config.model.path)
    shards = list_shards(config.input.path, input_columns(config))
    for mode in MODES:  # refuse (or clear, with overwrite) earlier results before any work
        prepare_output(root.child(mode).uri, config.output.overwrite)
    input_path, shard_of, sample_info = config.input.path, {}, None
    if sample is not None:
        s = write_sample(shards, input_columns(config), sample, seed, root.child("sample").uri)
        input_path, shard_of = s.uri, s.source_of
        sample_info = {"requested": sample, "rows": s.rows, "seed": seed, "uri": s.uri}
        echo(f"compare: sample of {s.rows:,} rows (seed {seed}) -> {s.uri}")
    runs: dict[str, Any] = {}
    for mode in MODES:
        echo(f"compare: running engine.mode={mode}")
        run_job(mode_config(config, mode, input_path, root.child(mode)), echo=echo)
        runs[mode] = read_run(root.child(mode))

    (ar_rows, ar_stats, ar_sum), (or_rows, or_stats, or_sum) = runs["ar"], runs["orthrus"]
    billing = {m: Billing(float(runs[m][2].resources["gpus_per_worker"]), price) for m in MODES}
    rows = join_rows(ar_rows, or_rows, shard_of)
    shards_out = shard_table(rows, ar_stats, or_stats, billing["ar"], billing["orthrus"], shard_of)
    dest = root.child(COMPARE_DIR)
    summary = _jsonable({
        "name": config.name, "job": job,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": config.model.path, "usd_per_unit_hour": price, "sample": sample_info,
        "equality": equality(rows),
        "overall": shards_out[shards_out["shard"] == ALL].iloc[0].to_dict(),
        "first_differences": first_differences(rows),
        "workers": workers_per_mode(rows),
        "runs": {m: {"output": root.child(m).uri, "job_seconds": s.totals["job_seconds"],
                     "device_types": s.device_types, "actors": s.actors, "resources": s.resources,
                     "engines": s.engines} for m, s in (("ar", ar_sum), ("orthrus", or_sum))},
        "wall_speedup": ar_sum.totals["job_seconds"] / or_sum.totals["job_seconds"],
    })
    _write_table(dest.child("shards.parquet"), shards_out)
    _write_table(dest.child("rows.parquet"), rows[ROWS_COLUMNS])
    summary["paths"] = {"shards": dest.child("shards.parquet").uri, "rows": dest.child("rows.parquet").uri,
                        "summary": dest.child("summary.json").uri,
                        **write_report(dest, summary, shards_out, rows, _write)}
    _write(dest.child("summary.json"), json.dumps(summary, indent=2).encode() + b"\n")
    echo(format_result(summary))
    return summary


def format_result(summary: dict[str, Any]) -> str:
    """The lines printed at the end."""
    o, eq = summary["overall"], summary["equality"]
    rate = "n/a" if eq["equality_rate"] is None else f"{100 * eq['equality_rate']:.1f}%"
    unit = o["unit"]
    lines = [f"compare {summary['name']!r}: {eq['rows']:,} rows | identical outputs {rate} "
             f"({eq['equal']:,}/{eq['compared']:,} compared, {eq['errors']:,} errors)",
             f"speedup {o['speedup']:.2f}x tokens/s per {unit}" + ("" if unit == "GPU" else " (CPU workers, no GPU)")]
    for m in MODES:
        lines.append(f"  {m:8s} {o[f'{m}_tokens_per_unit_s']:,.1f} tok/s per {unit} | "
                     f"{o[f'{m}_unit_seconds']:,.2f} {unit}-s | ${o[f'{m}_usd_per_1m_tokens']:,.4f} per 1M tokens "
                     f"at ${summary['usd_per_unit_hour']:,.2f}/{unit}-h")
    lines.append(f"report   {summary['paths']['report.html']}")
    lines.append(f"tables   {summary['paths']['shards']}, {summary['paths']['rows']}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job YAML file (see README.md for the keys)")
    parser.add_argument("--sample", type=int, default=None, metavar="N",
                        help="compare on N rows chosen by a seeded generator (default: all rows)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--gpu-hour-price", dest="price", type=float, default=DEFAULT_PRICE, metavar="USD",
                        help=f"price of one GPU-hour (per worker-hour on CPU) for $/1M tokens "
                             f"(default {DEFAULT_PRICE}: $ then reads as GPU-hours)")
    parser.add_argument("--out", default=None, help="folder for ar/, orthrus/, sample/, compare/ "
                                                    "(default: the job's output.path)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a job key for both runs, e.g. --set sampling.max_new_tokens=64")


def command(args: argparse.Namespace) -> int:
    """The `compare` subcommand; returns the exit status."""
    if args.sample is not None and args.sample < 1:
        return usage_error(f"--sample must be >= 1, got {args.sample}")
    log = log_path("compare")
    print(f"  ray logs   {log}", flush=True)
    with ray_output_to(log) as terminal:  # Ray's own lines go to the log, as for `run`
        try:
            compare(args.job, args.overrides, sample=args.sample, seed=args.seed, price=args.price, out=args.out)
        except USAGE_ERRORS as err:
            return usage_error(err, terminal)
        except KeyboardInterrupt:
            print("orthrus-batch: compare interrupted; rerun it to compare again (each mode's run folder can be "
                  "finished with --set output.resume=true through orthrus-batch run)", file=terminal, flush=True)
            return INTERRUPTED
        except Exception as err:  # noqa: BLE001 - one line here, the traceback in the log
            import traceback

            traceback.print_exc()
            first = (str(err).strip().splitlines() or [""])[0]
            print(f"orthrus-batch: compare failed: {type(err).__name__}: {first} (details: {log})", file=terminal,
                  flush=True)
            return FAILED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return module_main("jobs.compare", __doc__, add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
