"""Per-row figures -> per-shard figures -> the run's totals, computed while the job streams.

Each commit task reduces its batch to one partial row per shard it holds (`partial_stats`); the
driver folds partials into one `ShardStats` per input shard. The driver therefore holds
O(shards) numbers, never the rows. Every figure is a sum of per-row figures (or a ratio of two
such sums, or a min/max of batch times), so `stats/shards.parquet` equals what summing
`outputs/` gives.

Vocabulary (workers/schema.py for the per-row columns, workers/metrics.py for each formula):
  forward_passes     diffusion passes + verify passes (iterations). Prefill is counted as the
                     engine counts it: the forward that yields a row's first token is one of its
                     iterations (AR mode: iterations == completion tokens).
  tokens_per_forward completion_tokens / forward_passes
  mean_acceptance_length  committed tokens per verify iteration = completion_tokens / iterations
                     (= 1 + accepted/iterations; 1.0 in AR mode)
  mean_block_size    mean K of the Orthrus iterations = 1 + drafted_tokens / diffusion_passes
  ar_share           share of iterations that drafted nothing (K = 1)
  wall_seconds       last batch end - first batch start over the shard's batches (batches of
                     different shards overlap when several actors run, so these do not add up
                     to the job's wall time)
  engine_seconds     sum of the rows' shares of `generate` time (split by forward passes)
  tokens_per_s       completion_tokens / engine_seconds

Besides the sums, each partial carries the `_batch` cell of its latest row (the engine's state as
that batch ended: rows running and waiting, KV pages, GPU memory, why K was chosen); the driver
keeps the latest per actor (`StatsAccumulator.engine_state`) for progress lines and the summary.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Iterable

import pyarrow as pa

from pipeline.engine_state import EngineState
from workers import metrics
from workers.metrics import add_histograms, ratio
from workers.schema import BATCH, ENGINE, FINISHED_AT, ROW_SUMS, STARTED_AT

_SUMS = ("rows", "errors", *ROW_SUMS.values())
PARTIAL_SCHEMA = pa.schema(
    [("shard", pa.string())]
    + [(name, pa.int64()) for name in _SUMS]
    + [("acceptance_histogram", pa.list_(pa.int64())), ("engine_seconds", pa.float64()),
       ("started_at", pa.float64()), ("finished_at", pa.float64()), ("files", pa.int64()),
       ("engine", pa.string()), ("batch", pa.string())]
)


def partial_stats(batch: pa.Table, files: dict[str, int]) -> pa.Table:
    """One row per shard in `batch` (rows in BATCH_SCHEMA), summing its rows' figures.

    Args:
        batch: the actor's output rows, internal columns included.
        files: output files written per shard for this batch.
    Returns:
        A PARTIAL_SCHEMA table.
    """
    cols = {name: batch.column(name).to_pylist() for name in
            ("shard", "error", "acceptance_histogram", "engine_seconds", ENGINE, STARTED_AT, FINISHED_AT, BATCH,
             *ROW_SUMS)}
    parts: dict[str, dict[str, Any]] = {}
    for i, shard in enumerate(cols["shard"]):
        p = parts.get(shard)
        if p is None:
            p = parts[shard] = {name: 0 for name in _SUMS}
            p.update(shard=shard, acceptance_histogram=[], engine_seconds=0.0, started_at=cols[STARTED_AT][i],
                     finished_at=cols[FINISHED_AT][i], files=files.get(shard, 0), engine=cols[ENGINE][i],
                     batch=cols[BATCH][i])
        p["rows"] += 1
        if cols[FINISHED_AT][i] > p["finished_at"]:
            p["batch"] = cols[BATCH][i]  # the engine's state as the latest of these rows ended
        if cols["error"][i] is not None:
            p["errors"] += 1
            continue
        for row_col, part_col in ROW_SUMS.items():
            p[part_col] += cols[row_col][i]
        p["acceptance_histogram"] = add_histograms(p["acceptance_histogram"], cols["acceptance_histogram"][i])
        p["engine_seconds"] += cols["engine_seconds"][i]
        p["started_at"] = min(p["started_at"], cols[STARTED_AT][i])
        p["finished_at"] = max(p["finished_at"], cols[FINISHED_AT][i])
    return pa.Table.from_pylist(list(parts.values()), schema=PARTIAL_SCHEMA)


# One keyword field per summed figure (rows, errors and workers/schema.ROW_SUMS): a count added to
# the row contract is counted, written to done/ markers and summed without another edit here.
_Counts = make_dataclass("_Counts", [(name, int, field(default=0, kw_only=True)) for name in _SUMS])


@dataclass
class ShardStats(_Counts):
    """Running figures for one input shard: the counts (`_SUMS`, keyword arguments) and these."""

    shard: str
    input_rows: int
    acceptance_histogram: list[int] = field(default_factory=list)
    engine_seconds: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    files: int = 0

    @property
    def complete(self) -> bool:
        """Every input row of the shard is written (the point where a shard can be committed)."""
        return self.rows == self.input_rows

    def add(self, p: dict[str, Any]) -> None:
        for name in _SUMS:
            setattr(self, name, getattr(self, name) + p[name])
        self.acceptance_histogram = add_histograms(self.acceptance_histogram, p["acceptance_histogram"])
        self.engine_seconds += p["engine_seconds"]
        self.files += p["files"]
        self.started_at = p["started_at"] if self.started_at is None else min(self.started_at, p["started_at"])
        self.finished_at = p["finished_at"] if self.finished_at is None else max(self.finished_at, p["finished_at"])

    def figures(self) -> dict[str, Any]:
        """The shards.parquet row (definitions in the module docstring)."""
        wall = (self.finished_at - self.started_at) if self.started_at is not None else 0.0
        return {
            "shard": self.shard, "input_rows": self.input_rows,
            **{name: getattr(self, name) for name in _SUMS},
            "tokens_per_forward": metrics.tokens_per_forward(self.completion_tokens, self.forward_passes),
            "mean_acceptance_length": metrics.mean_acceptance_length(self.completion_tokens, self.iterations),
            "acceptance_histogram": self.acceptance_histogram,
            "wall_seconds": wall, "engine_seconds": self.engine_seconds,
            "tokens_per_s": ratio(self.completion_tokens, self.engine_seconds),
            "output_files": self.files,
        }


SHARDS_SCHEMA = pa.schema(
    [("shard", pa.string()), ("input_rows", pa.int64())]
    + [(name, pa.int64()) for name in _SUMS]
    + [("tokens_per_forward", pa.float64()), ("mean_acceptance_length", pa.float64()),
       ("acceptance_histogram", pa.list_(pa.int64())), ("wall_seconds", pa.float64()),
       ("engine_seconds", pa.float64()), ("tokens_per_s", pa.float64()), ("output_files", pa.int64())]
)


class StatsAccumulator:
    """Folds partial rows into per-shard figures in the driver (O(shards) memory)."""

    def __init__(self, shards: Iterable[tuple[str, int]]) -> None:
        self.shards = {uri: ShardStats(uri, n) for uri, n in shards}
        self.engines: dict[str, int] = {}  # `_engine` JSON -> partial rows seen
        self.total = ShardStats("(all)", sum(s.input_rows for s in self.shards.values()))
        self.resumed: set[str] = set()  # shards completed by an earlier run (output.resume)
        self.latest: dict[str, tuple[float, dict[str, Any]]] = {}  # `_engine` -> (finished_at, latest `_batch`)

    def restore(self, done: dict[str, ShardStats]) -> None:
        """Take an earlier run's completed shards as they are: they count in the shard table and as
        complete, not in `total` (this run's work)."""
        for uri, stats in done.items():
            self.shards[uri] = stats
            self.total.input_rows -= stats.input_rows
            self.resumed.add(uri)

    def newly_complete(self, partials: pa.Table) -> list[ShardStats]:
        """Shards that `partials` touched and that are now complete."""
        return [self.shards[u] for u in set(partials.column("shard").to_pylist()) if self.shards[u].complete]

    def add(self, partials: pa.Table) -> None:
        for p in partials.to_pylist():
            stats = self.shards.get(p["shard"])
            if stats is None:
                raise RuntimeError(f"rows arrived for shard {p['shard']!r}, which is not an input shard")
            if p["shard"] in self.resumed:
                raise RuntimeError(f"rows arrived for shard {p['shard']!r}, which an earlier run completed")
            stats.add(p)
            self.total.add(p)
            self.engines[p["engine"]] = self.engines.get(p["engine"], 0) + 1
            seen = self.latest.get(p["engine"])
            if p.get("batch") and (seen is None or p["finished_at"] >= seen[0]):
                self.latest[p["engine"]] = (p["finished_at"], json.loads(p["batch"]))

    def engine_state(self) -> EngineState:
        """The engines' state as each actor's latest batch ended, summed (pipeline/engine_state.py)."""
        return EngineState.combine([facts for _, facts in sorted(self.latest.values(), key=lambda x: x[0])])

    @property
    def shards_done(self) -> int:
        return sum(s.complete for s in self.shards.values())

    def table(self) -> pa.Table:
        return pa.Table.from_pylist([s.figures() for s in self.shards.values()], schema=SHARDS_SCHEMA)

    def engine_facts(self) -> list[dict[str, Any]]:
        """Distinct engine descriptions (one per actor process), pid dropped."""
        seen, out = set(), []
        for text in self.engines:
            facts = json.loads(text)
            facts.pop("pid", None)
            key = json.dumps(facts, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(facts)
        return out

    @property
    def actors(self) -> int:
        return len(self.engines)

    def totals(self, job_seconds: float, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
        """Totals over every shard, including shards an earlier run completed (output.resume).

        A resume keeps the earlier run's figures and adds this run's (issue 13: resuming a complete
        run used to report 0 rows). Times add up the same way: `earlier` is the earlier run's
        summary.json `totals`, whose job_seconds and steady_seconds this run's are added to (an
        earlier run that was killed wrote none, so its time is not known).
        """
        every = ShardStats("(all)", self.total.input_rows)
        _merge(every, self.total)
        for uri in sorted(self.resumed):
            every.input_rows += self.shards[uri].input_rows
            _merge(every, self.shards[uri])
        this = self.this_run(job_seconds)
        before = earlier or {}
        return self._totals(every, job_seconds + float(before.get("job_seconds", 0.0)),
                            this["steady_seconds"] + float(before.get("steady_seconds", 0.0)))

    def this_run(self, job_seconds: float) -> dict[str, Any]:
        """This run's own rows only (after a resume, the shards it ran)."""
        wall = self.total.figures()["wall_seconds"]
        return self._totals(self.total, job_seconds, wall)

    def _totals(self, stats: "ShardStats", job_seconds: float, steady_seconds: float) -> dict[str, Any]:
        """tokens_per_s: completion tokens / job wall time (startup included); steady_tokens_per_s:
        completion tokens / (last batch end - first batch start), the rate once actors are up (what to
        hold against the bare engine)."""
        t = stats.figures()
        for key in ("shard", "output_files", "wall_seconds"):
            t.pop(key)
        t.update(shards=len(self.shards), shards_complete=self.shards_done, output_files=stats.files,
                 job_seconds=job_seconds, engine_tokens_per_s=t["tokens_per_s"],
                 tokens_per_s=ratio(stats.completion_tokens, job_seconds),
                 rows_per_s=ratio(stats.rows, job_seconds), steady_seconds=steady_seconds,
                 steady_tokens_per_s=ratio(stats.completion_tokens, steady_seconds),
                 mean_block_size=metrics.mean_block_size(stats.drafted_tokens, stats.diffusion_passes),
                 ar_share=metrics.ar_share(stats.iterations, stats.diffusion_passes))
        return t


def _merge(into: ShardStats, other: ShardStats) -> None:
    """Add `other`'s sums to `into` (batch times are left out: runs apart in time do not make one span)."""
    for name in _SUMS:
        setattr(into, name, getattr(into, name) + getattr(other, name))
    into.acceptance_histogram = add_histograms(into.acceptance_histogram, other.acceptance_histogram)
    into.engine_seconds += other.engine_seconds
    into.files += other.files
