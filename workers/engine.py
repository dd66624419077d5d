"""The engine: a stepping, batched, lossless Orthrus (or plain AR) decoder over a paged KV cache.

    engine = Engine.from_pretrained("path/or/org/name", device="cuda", dtype="bfloat16")
    rid = engine.add_request([1, 2, 3], SamplingParams(max_new_tokens=64), mode="orthrus")
    while engine.has_unfinished():
        for request_id, result in engine.step():
            ...
    engine.generate(prompts, params)  # the same loop, results in prompt order

A step reads as: admit (waiting requests take free slots and pages) -> prefill (one packed chunk
of prompt tokens) -> iterate (draft, verify, accept, commit for every decoding row, on the device)
-> collect (the rows that finished). Requests join as slots and pages free up, so the batch never
drains between callers.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from workers.config import ModelConfig
from workers.cuda_graphs import GraphedSteps
from workers.draft_length import AcceptanceTracker, PassCosts, choose_block_size, explain_choice
from workers.fused import Ops
from workers.kv_cache import PagedKVCache
from workers.loader import load_model
from workers.model import Qwen3Orthrus
from workers.orthrus import SlotState, iterate, prefill
from workers.params import RequestStats, Result, SamplingParams
from workers.request import AUTO, Request, Status
from workers.scheduler import Scheduler
from workers.warmup import pool_tokens

__all__ = ["Engine", "SamplingParams", "Result", "RequestStats"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES = ("orthrus", "ar")
MAX_STOP_IDS = 16


class Engine:
    def __init__(self, model: Qwen3Orthrus, model_dir: Path | str, *, max_batch_size: int = 64,
                 max_model_len: int = 4096, max_block_size: int = 32, prefill_chunk: int = 2048,
                 prefill_step_tokens: int | None = None,
                 page_size: int = 16, kv_cache_tokens: int | None = None, kv_cache_memory_fraction: float = 0.9,
                 cuda_graphs: bool | None = None, fused_kernels: bool | None = None,
                 pass_costs: PassCosts | None = None, drafter=None) -> None:
        """Args beyond the model: `max_batch_size` rows decode at once; prefill packs prompts into
        forwards of `prefill_chunk` tokens, up to `prefill_step_tokens` a step; the KV pool holds
        `kv_cache_tokens` tokens, or (on CUDA, when None) what `kv_cache_memory_fraction` of the
        GPU leaves after the weights and a warm-up forward; `drafter` replaces the drafts
        (benchmarks only: bench/engine_speed.py)."""
        self.model, self.model_dir = model, Path(model_dir)
        self.config: ModelConfig = model.config
        weight = next(model.parameters())
        self.device, self.dtype = weight.device, weight.dtype
        self.max_batch_size, self.max_model_len = max_batch_size, max_model_len
        self.max_block_size = max(max_block_size, self.config.block_size or 1)
        self.prefill_chunk, self.pass_costs, self.drafter = prefill_chunk, pass_costs, drafter
        # prompt tokens a step may prefill (in forwards of prefill_chunk) before it decodes: a backlog of
        # prompts fills the batch in a few steps instead of decoding small batches between chunks
        self.prefill_step_tokens = prefill_step_tokens or 8 * prefill_chunk
        on_cuda = self.device.type == "cuda"
        if on_cuda if fused_kernels is None else fused_kernels:
            Ops.use_compiled()
        self.kernel = None
        if on_cuda:
            from workers.paged_attention import PagedAttentionKernel

            self.kernel = PagedAttentionKernel(self.device)
        tokens = kv_cache_tokens or pool_tokens(self, page_size, kv_cache_memory_fraction)
        if tokens < max_model_len + self.max_block_size:
            raise ValueError(f"kv_cache_tokens={tokens} cannot hold one row of max_model_len={max_model_len} "
                             f"plus a block of {self.max_block_size}")
        num_pages = -(-tokens // page_size) + -(-self.max_block_size // page_size)  # + the trash pages
        self.cache = PagedKVCache(self.config, num_pages, page_size, max_batch_size, max_model_len,
                                  self.max_block_size, self.device, self.dtype)
        self.tracker = AcceptanceTracker(self.max_block_size)
        self.state = SlotState.allocate(max_batch_size, max_model_len, MAX_STOP_IDS, self.max_block_size, self.device)
        self.scheduler = Scheduler(max_batch_size, self.cache, self.max_block_size)
        self.cuda_graphs = on_cuda if cuda_graphs is None else cuda_graphs
        # graphs live as long as the engine: one capture per (batch bucket, K, sampling), ever
        self.run_step = GraphedSteps(self.state, self._step, self.kernel is None) if self.cuda_graphs else self._step
        self.finished: list[tuple[int, Result]] = []
        self._last_K: int | None = None  # the block-size rule's K in use, and what it was chosen from
        self._why: tuple | None = None
        self._choice_key: tuple | None = None
        self._choice_age = 0
        self._next_id = 0

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: str = "float32", max_batch_size: int = 64,
                        max_model_len: int = 4096, **kwargs) -> "Engine":
        """Load an OrthrusLM or Qwen3ForCausalLM checkpoint (local folder or hub id)."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if max_batch_size < 1 or max_model_len < 2:
            raise ValueError("max_batch_size must be >= 1 and max_model_len >= 2")
        model, folder = load_model(path, device=device, dtype=DTYPES[dtype], fused=True)
        return cls(model, folder, max_batch_size=max_batch_size, max_model_len=max_model_len, **kwargs)

    # -- public API -----------------------------------------------------------------------
    def add_request(self, prompt: list[int], params: SamplingParams | None = None, mode: str = "orthrus") -> int:
        """Queue one prompt (token ids); returns its request id. Errors name what is wrong."""
        params = params or SamplingParams()
        if mode not in MODES:
            raise ValueError(f"mode must be 'orthrus' or 'ar', got {mode!r}")
        if mode == "orthrus" and not self.config.is_orthrus:
            raise ValueError(f"{self.model_dir}: a plain Qwen3 checkpoint (no *_diff tensors) can only run mode='ar'")
        self._check_prompt(prompt, "prompt")
        stops = params.stop_token_ids if params.stop_token_ids is not None else self.config.eos_token_ids
        if len(stops) > MAX_STOP_IDS:
            raise ValueError(f"at most {MAX_STOP_IDS} stop_token_ids, got {len(stops)}")
        rid, self._next_id = self._next_id, self._next_id + 1
        if params.seed is None:  # a seed of its own, so identical prompts sample independently
            params = SamplingParams(**{**params.__dict__, "seed": rid})
        budget = min(params.max_new_tokens, self.max_model_len - len(prompt))
        self.scheduler.add(Request(rid, list(prompt), params, self._block_size(params, mode), tuple(stops), budget))
        return rid

    def step(self) -> list[tuple[int, Result]]:
        """Admit, prefill a chunk, run one iteration; returns the requests that finished in it."""
        for req in self.scheduler.admit():
            if req.to_prefill == 0:  # a one-token prompt: nothing to prefill
                self._start_decoding(req)
        fed = 0
        while fed < self.prefill_step_tokens and self.scheduler.prefilling:
            fed += self._prefill_chunk()
        if self.scheduler.decoding:
            self._iterate()
        done, self.finished = self.finished, []
        return done

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams] | None = None,
                 mode: str = "orthrus") -> list[Result]:
        """Decode every prompt; results come back in prompt order.

        Args:
            prompts: token ids per prompt (each non-empty, at most max_model_len - 1 tokens).
            params: one SamplingParams for all prompts, or one per prompt.
            mode: "orthrus" (draft + verify; needs an OrthrusLM checkpoint) or "ar".
        """
        plist = [params or SamplingParams()] * len(prompts) if not isinstance(params, list) else params
        if len(plist) != len(prompts):
            raise ValueError(f"got {len(plist)} SamplingParams for {len(prompts)} prompts")
        ids = []
        for i, prompt in enumerate(prompts):
            self._check_prompt(prompt, f"prompt {i}")
        for i, (prompt, p) in enumerate(zip(prompts, plist)):
            try:
                ids.append(self.add_request(prompt, p, mode))
            except ValueError as e:
                self.abort_all()
                raise ValueError(f"prompt {i}: {e}") from None
        results: dict[int, Result] = {}
        try:
            while self.has_unfinished():
                results.update(self.step())
        except BaseException:
            self.abort_all()
            raise
        return [results[i] for i in ids]

    def abort_all(self) -> None:
        """Drop every request (after an error inside a step): slots, pages and the queue are freed."""
        for req in list(self.scheduler.order):
            self.scheduler.release(req, Status.FINISHED)
        self.scheduler.waiting.clear()
        self.state.active.zero_()
        self.state.length.zero_()
        self.finished = []

    def choose_block_size(self, batch: int, context: int = 512) -> int:
        """K for a batch of this size and context from the pass costs and the acceptance seen so far
        (1 = AR). Until 64 first drafts have been judged, the checkpoint's own block size is used."""
        if self.tracker.tried[0] < 64:
            self._why = None
            return self.config.block_size
        accept = self.tracker.probabilities()
        self._why = (batch, accept, context)
        return choose_block_size(self.pass_costs, batch, accept, context, keep=self._last_K)

    @property
    def last_choice(self) -> str:
        """Why the block-size rule picked the K of its latest choice (empty without pass costs)."""
        if self.pass_costs is None:
            return ""
        if self._why is None:
            return f"K={self.config.block_size}: the checkpoint's, until 64 drafts have been judged"
        return explain_choice(self.pass_costs, *self._why, self.device.type)

    def measure_pass_costs(self, batches, blocks, contexts, repeat: int = 7) -> list[dict]:
        """ms per iteration at each (context, batch, K) on this device (workers/pass_costs.py)."""
        from workers.pass_costs import measure

        return measure(self, batches, blocks, contexts, repeat)

    def use_pass_costs(self, costs: PassCosts | None) -> None:
        """Choose K per iteration from these costs for requests without a block_size (None: off)."""
        self.pass_costs = costs

    def occupancy(self) -> dict[str, int]:
        """Rows and KV pages in use now (progress lines and summaries)."""
        s = self.scheduler
        return {"running": len(s.order), "waiting": len(s.waiting), "kv_pages_used": self.cache.pool.used,
                "kv_pages": self.cache.pool.capacity, "kv_tokens": self.cache.tokens}

    # -- a step's parts -------------------------------------------------------------------------
    def _prefill_chunk(self) -> int:
        """Up to `prefill_chunk` prompt tokens of the prefilling rows, packed into one forward; returns
        how many were fed."""
        budget, pieces, fed = self.prefill_chunk, [], []
        for req in self.scheduler.prefilling:
            if budget == 0:
                break
            n = min(req.to_prefill, budget)
            pieces.append((req.slot, req.tokens[req.prefilled : req.prefilled + n], req.prefilled))
            fed.append((req, n))
            budget -= n
        if not pieces:
            return 0
        t0 = time.perf_counter()
        with torch.inference_mode():
            prefill(self.model, self.cache, pieces, self.kernel)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        share = (time.perf_counter() - t0) / sum(n for _, n in fed)
        for req, n in fed:
            req.prefilled += n
            req.engine_seconds += share * n
            if req.to_prefill == 0:
                self._start_decoding(req)
        return self.prefill_chunk - budget

    def _iterate(self) -> None:
        t0 = time.perf_counter()
        sched = self.scheduler
        K = self._iteration_block_size()
        sched.reserve(K, self._save)  # may preempt rows: they go back to the queue
        rows = sched.decoding
        if not rows:
            return
        B = self._bucket(sched.bucket())
        n_keys = max(r.length for r in rows) + K
        if self.cuda_graphs:  # the reference attention's gather is part of the graph: few key ranges
            n_keys = min(self.cache.pages_per_row * self.cache.page_size, -(-n_keys // 128) * 128)
        sampling = any(r.params.temperature > 0 for r in rows)
        with torch.inference_mode():
            flags = self.run_step(B, K, n_keys, sampling).tolist()  # the one host sync of an iteration
        finished, lengths, tally = flags[:B], flags[B : 2 * B], flags[2 * B :]
        self.tracker.set_counts(tally[: self.max_block_size], tally[self.max_block_size :])
        share = (time.perf_counter() - t0) / len(rows)
        for req in rows:
            req.length = lengths[req.slot]
            req.engine_seconds += share
        done = [r for r in rows if finished[r.slot]]
        if done:
            self._collect(done)

    def _step(self, B: int, K: int, n_keys: int, sampling: bool) -> torch.Tensor:
        """One iteration; returns [finished (B), lengths (B), tally (2 x max_block)] as one int64 tensor."""
        finished = iterate(self.model, self.cache, self.state, B, K, n_keys, sampling, self.kernel, self.drafter)
        return torch.cat([finished.long(), self.state.length[:B], self.state.tally.flatten()])

    def _iteration_block_size(self) -> int:
        group = self.scheduler.group()
        if group != AUTO:
            return group
        rows = self.scheduler.decoding
        context = sum(r.length for r in rows) // len(rows)
        # re-chosen when the batch size or the context (in 256-token steps) changes, and every 16
        # iterations as acceptance statistics move; in between the last choice stands
        key = (len(rows), context // 256)
        self._choice_age += 1
        if key != self._choice_key or self._choice_age >= 16 or self._last_K is None:
            self._choice_key, self._choice_age = key, 0
            self._last_K = self.choose_block_size(len(rows), context)
        return self._last_K

    def _bucket(self, busy_slots: int) -> int:
        """With CUDA graphs, round B up to a power of two so few shapes are captured."""
        if not self.cuda_graphs:
            return busy_slots
        return min(self.max_batch_size, 1 << (busy_slots - 1).bit_length())

    # -- slots ----------------------------------------------------------------------------------
    def _start_decoding(self, req: Request) -> None:
        """A prefilled request's parameters and progress go into its slot; it decodes from now on."""
        req.status, req.length = Status.DECODE, len(req.tokens) - 1
        self.state.load(req)

    def _save(self, req: Request) -> None:
        """A decoding request's progress comes off the device (before a preemption or at the end)."""
        self.state.save(req)

    def _collect(self, done: list[Request]) -> None:
        for req in done:
            self._save(req)
            self.scheduler.release(req, Status.FINISHED)
            self.finished.append((req.request_id, req.result()))

    # -- checks and sizes -----------------------------------------------------------------------
    def _check_prompt(self, prompt: list[int], name: str) -> None:
        if len(prompt) == 0:
            raise ValueError(f"{name} is empty")
        if len(prompt) >= self.max_model_len:
            raise ValueError(f"{name} has {len(prompt)} tokens; max_model_len={self.max_model_len} leaves no room to generate")
        bad = [t for t in prompt if not 0 <= t < self.config.vocab_size]
        if bad:
            raise ValueError(f"{name} has token ids outside [0, {self.config.vocab_size}): {bad[:3]}")

    def _block_size(self, p: SamplingParams, mode: str) -> int:
        if mode == "ar":
            return 1
        if p.block_size is None and self.pass_costs is not None:
            return AUTO
        K = p.block_size or self.config.block_size
        if not 2 <= K <= self.max_block_size:
            raise ValueError(f"block_size must be in [2, {self.max_block_size}] in orthrus mode, got {K}")
        return K
