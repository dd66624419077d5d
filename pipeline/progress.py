"""Progress lines while a job runs, and the short summary a person reads at the end."""
from __future__ import annotations

import time
from typing import Any, Callable

from pipeline.stats import StatsAccumulator


def flush_print(line: str) -> None:
    print(line, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Prints `rows done, tokens/s, acceptance` at most every `interval_s` seconds.

    tokens/s here is completion tokens over the job's elapsed time so far (what the cluster
    delivers), not the engine's rate inside a batch. The final forced line is skipped when the
    line before it already showed the same rows, so a job never ends on two 100% lines.
    """

    def __init__(self, acc: StatsAccumulator, interval_s: float, echo: Callable[[str], None] = flush_print) -> None:
        self.acc, self.interval_s, self.echo = acc, interval_s, echo
        self.started = time.monotonic()
        self.last = self.started
        self.shown: tuple[int, int, int] | None = None  # (rows, errors, shards done) of the last line printed

    def line(self) -> str:
        t = self.acc.total
        elapsed = time.monotonic() - self.started
        pct = 100.0 * t.rows / t.input_rows if t.input_rows else 100.0
        rate = t.rows / elapsed if elapsed > 0 else 0.0
        eta = f" | eta {_duration((t.input_rows - t.rows) / rate)}" if 0 < rate and t.rows < t.input_rows else ""
        acceptance = t.completion_tokens / t.iterations if t.iterations else 0.0
        return (f"[{_duration(elapsed)}] rows {t.rows:,}/{t.input_rows:,} ({pct:.1f}%) | errors {t.errors:,} | "
                f"shards {self.acc.shards_done}/{len(self.acc.shards)} | "
                f"{t.completion_tokens / elapsed if elapsed > 0 else 0.0:,.1f} tok/s | "
                f"acceptance {acceptance:.2f} tok/iter{eta}")

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        state = (self.acc.total.rows, self.acc.total.errors, self.acc.shards_done)
        if (force and state != self.shown) or now - self.last >= self.interval_s:
            self.last, self.shown = now, state
            self.echo(self.line())


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines: what ran, how much, how fast, where the results are."""
    t = summary["totals"]
    devices = ", ".join(sorted({e.get("device_name", e.get("device", "?")) for e in summary["engines"]})) or "none"
    hist = t["acceptance_histogram"]
    total_iters = sum(hist)
    shares = " ".join(f"{i + 1}:{100.0 * n / total_iters:.0f}%" for i, n in enumerate(hist) if n) or "-"
    lines = [
        f"job {summary['name']!r} done in {_duration(t['job_seconds'])}: mode {summary['mode']}, "
        f"model {summary['model']['path']}, {summary['actors']} actor(s) on {devices}",
        f"  rows       {t['rows']:,} in {t['shards']} shard(s), {t['errors']:,} with errors",
        f"  tokens     {t['prompt_tokens']:,} prompt, {t['completion_tokens']:,} completion",
        f"  speed      {t['tokens_per_s']:,.1f} tok/s overall ({t['rows_per_s']:,.1f} rows/s), "
        f"{t['steady_tokens_per_s']:,.1f} once actors were up; engine {t['engine_tokens_per_s']:,.1f} tok/s",
        f"  decoding   {t['mean_acceptance_length']:.2f} tokens per iteration, {t['tokens_per_forward']:.2f} per "
        f"forward pass; acceptance lengths {shares}",
        f"  outputs    {summary['paths']['outputs']}",
        f"  stats      {summary['paths']['shard_stats']}",
        f"  summary    {summary['paths']['summary']}",
    ]
    resumed = summary.get("resumed") or {}
    if resumed.get("shards"):
        lines.insert(2, f"  resumed    {resumed['shards']:,} shard(s) ({resumed['rows']:,} rows) completed by an "
                        f"earlier run, kept as they were")
    skipped = summary.get("skipped_files") or []
    if skipped:
        lines.insert(2, f"  skipped    {len(skipped)} bad input file(s) (input.on_bad_file=skip):")
        for i, bad in enumerate(skipped):
            lines.insert(3 + i, f"               {bad['file']}: {bad['reason']}")
    return "\n".join(lines)
