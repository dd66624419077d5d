"""Progress lines while a job runs, and the short summary a person reads at the end."""
from __future__ import annotations

import time
from typing import Callable

from pipeline.engine_state import EngineState
from pipeline.stats import ShardStats, StatsAccumulator
from pipeline.summary import RunSummary
from workers import metrics


def flush_print(line: str) -> None:
    print(line, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def block_size_text(mean_k: float, ar_share: float) -> str:
    """`K 4.00 (AR 25%)`: mean K of the Orthrus iterations, share of iterations without drafts."""
    k = f"{mean_k:.2f}" if mean_k else "1"
    return f"K {k} (AR {100.0 * ar_share:.0f}%)"


def _decoding(t: ShardStats) -> str:
    acceptance = metrics.mean_acceptance_length(t.completion_tokens, t.iterations)
    text = f"acceptance {acceptance:.2f} tok/iter"
    if t.iterations:
        text += " | " + block_size_text(metrics.mean_block_size(t.drafted_tokens, t.diffusion_passes),
                                        metrics.ar_share(t.iterations, t.diffusion_passes))
    return text


class Progress:
    """Prints `rows done, tokens/s, acceptance, K, KV pool, GPU memory` at most every `interval_s` seconds.

    tokens/s here is completion tokens over the job's elapsed time so far (what the cluster
    delivers), not the engine's rate inside a batch. K is the mean block size of the Orthrus
    iterations so far, with the share of iterations that were AR (K = 1); the KV pool and GPU
    memory are summed over the actors as each one's latest batch ended (pipeline/engine_state.py).
    When the block-size rule's latest reason for its K changed, it comes first on its own line. The
    final forced line is skipped when the line before it already showed the same rows, so a job
    never ends on two 100% lines.
    """

    def __init__(self, acc: StatsAccumulator, interval_s: float, echo: Callable[[str], None] = flush_print) -> None:
        self.acc, self.interval_s, self.echo = acc, interval_s, echo
        self.started = time.monotonic()
        self.last = self.started
        self.shown: tuple[int, int, int] | None = None  # (rows, errors, shards done) of the last line printed
        self.choice_shown = ""  # the k_choice last printed

    def line(self, state: EngineState | None = None) -> str:
        t = self.acc.total
        state = state or self.acc.engine_state()
        elapsed = time.monotonic() - self.started
        pct = 100.0 * t.rows / t.input_rows if t.input_rows else 100.0
        rate = metrics.ratio(t.rows, elapsed)
        eta = f" | eta {_duration((t.input_rows - t.rows) / rate)}" if 0 < rate and t.rows < t.input_rows else ""
        memory = state.memory_text()
        return (f"[{_duration(elapsed)}] rows {t.rows:,}/{t.input_rows:,} ({pct:.1f}%) | errors {t.errors:,} | "
                f"shards {self.acc.shards_done}/{len(self.acc.shards)} | "
                f"{metrics.ratio(t.completion_tokens, elapsed):,.1f} tok/s | {_decoding(t)}"
                f"{' | ' + memory if memory else ''}{eta}")

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        state = (self.acc.total.rows, self.acc.total.errors, self.acc.shards_done)
        if (force and state != self.shown) or now - self.last >= self.interval_s:
            self.last, self.shown = now, state
            engines = self.acc.engine_state()
            if engines.k_choice and engines.k_choice != self.choice_shown:  # before the line: a job ends on
                self.choice_shown = engines.k_choice                        # its last progress line, then the summary
                self.echo(f"  K choice: {engines.k_choice}")
            self.echo(self.line(engines))


def format_summary(summary: RunSummary) -> str:
    """A few lines: what ran, how much, how fast, how it decoded, where the results are."""
    t = summary.totals
    devices = ", ".join(sorted({e.get("device_name", e.get("device", "?")) for e in summary.engines})) or "none"
    engines = EngineState(**{k: v for k, v in summary.engine_state.items() if k != "kv_occupancy"})
    lines = [
        f"job {summary.name!r} done in {_duration(t['job_seconds'])}: mode {summary.mode}, "
        f"model {summary.model['path']}, {summary.actors} actor(s) on {devices}",
        f"  rows       {t['rows']:,} in {t['shards']} shard(s), {t['errors']:,} with errors",
        f"  tokens     {t['prompt_tokens']:,} prompt, {t['completion_tokens']:,} completion; "
        f"{metrics.ratio(t.get('loops', 0), t['rows'] - t['errors']):.1%} of completions loop",
        f"  speed      {t['tokens_per_s']:,.1f} tok/s overall ({t['rows_per_s']:,.1f} rows/s), "
        f"{t['steady_tokens_per_s']:,.1f} once actors were up; engine {t['engine_tokens_per_s']:,.1f} tok/s",
        f"  decoding   {t['mean_acceptance_length']:.2f} tokens per iteration, {t['tokens_per_forward']:.2f} per "
        f"forward pass; acceptance lengths {metrics.histogram_shares(t['acceptance_histogram'])}",
        f"  block size {block_size_text(t['mean_block_size'], t['ar_share'])}"
        + (f"; last choice: {engines.k_choice}" if engines.k_choice else ""),
    ]
    memory = engines.memory_text()
    if memory:
        lines.append(f"  memory     {memory.replace(' | ', ', ')} as each actor's last batch ended")
    lines += [
        f"  outputs    {summary.paths['outputs']}",
        f"  stats      {summary.paths['shard_stats']}",
        f"  summary    {summary.paths['summary']}",
    ]
    resumed = summary.resumed or {}
    if resumed.get("shards"):
        lines.insert(2, f"  resumed    {resumed['shards']:,} shard(s) ({resumed['rows']:,} rows) completed by an "
                        f"earlier run, kept as they were")
    skipped = summary.skipped_files or []
    if skipped:
        lines.insert(2, f"  skipped    {len(skipped)} bad input file(s) (input.on_bad_file=skip):")
        for i, bad in enumerate(skipped):
            lines.insert(3 + i, f"               {bad['file']}: {bad['reason']}")
    return "\n".join(lines)
