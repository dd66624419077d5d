"""The engine: batched, lossless Orthrus (or plain AR) decoding of token-id prompts.

    engine = Engine.from_pretrained("path/or/org/name", device="cuda", dtype="bfloat16")
    results = engine.generate([[1, 2, 3], [4, 5]], SamplingParams(max_new_tokens=64), mode="orthrus")

A step reads as: schedule (admit waiting prompts, prefill them) -> iterate (draft, verify,
accept, commit on the device) -> postprocess (read the [B] finished vector; collect rows).
"""
from __future__ import annotations

from pathlib import Path

import torch

from workers.config import ModelConfig
from workers.cuda_graphs import GraphedSteps
from workers.draft_length import AcceptanceTracker, PassCosts, choose_block_size
from workers.fused import Ops
from workers.kv_cache import KVCache
from workers.loader import load_model
from workers.model import Qwen3Orthrus
from workers.orthrus import SlotState, iterate, prefill
from workers.params import RequestStats, Result, SamplingParams
from workers.scheduler import Scheduler

__all__ = ["Engine", "SamplingParams", "Result", "RequestStats"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES = ("orthrus", "ar")
MAX_STOP_IDS = 16
AUTO = 0  # group key: block size chosen per batch


class Engine:
    def __init__(self, model: Qwen3Orthrus, model_dir: Path, *, max_batch_size: int = 64,
                 max_model_len: int = 4096, max_block_size: int = 32, prefill_chunk: int = 2048,
                 cuda_graphs: bool | None = None, fused_kernels: bool | None = None,
                 pass_costs: PassCosts | None = None) -> None:
        if hasattr(model, "fuse_for_inference"):
            model.fuse_for_inference()
        self.model, self.model_dir = model, model_dir
        self.config: ModelConfig = model.config
        weight = next(model.parameters())
        self.device, self.dtype = weight.device, weight.dtype
        self.max_batch_size, self.max_model_len = max_batch_size, max_model_len
        self.max_block_size = max(max_block_size, self.config.block_size or 1)
        self.prefill_chunk = prefill_chunk
        self.cache = KVCache(self.config, max_batch_size, max_model_len + self.max_block_size, self.device, self.dtype)
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if self.device.type == "cuda" if fused_kernels is None else fused_kernels:
            Ops.use_compiled()
        # with measured pass costs, requests without a block_size get K chosen per batch (draft_length.py)
        self.pass_costs = pass_costs
        self.tracker = AcceptanceTracker(self.max_block_size)
        self.drafter = None  # bench hook (set_drafter): replaces the drafts; see bench/engine_speed.py
        # state and graphs live as long as the engine: a graph is captured once per shape, ever
        self.state = SlotState.allocate(max_batch_size, max_model_len, MAX_STOP_IDS, self.device)
        self.run_step = GraphedSteps(self.state, self._step) if self.cuda_graphs else self._step

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: str = "float32", max_batch_size: int = 64,
                        max_model_len: int = 4096, **kwargs) -> "Engine":
        """Load an OrthrusLM or Qwen3ForCausalLM checkpoint (local folder or hub id)."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if max_batch_size < 1 or max_model_len < 2:
            raise ValueError("max_batch_size must be >= 1 and max_model_len >= 2")
        model, folder = load_model(path, device=device, dtype=DTYPES[dtype])
        return cls(model, folder, max_batch_size=max_batch_size, max_model_len=max_model_len, **kwargs)

    # -- public API -----------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams] | None = None,
                 mode: str = "orthrus") -> list[Result]:
        """Decode every prompt; results come back in prompt order.

        Args:
            prompts: token ids per prompt (each non-empty, at most max_model_len - 1 tokens).
            params: one SamplingParams for all prompts, or one per prompt.
            mode: "orthrus" (draft + verify; needs an OrthrusLM checkpoint) or "ar".
        """
        if mode not in MODES:
            raise ValueError(f"mode must be 'orthrus' or 'ar', got {mode!r}")
        if mode == "orthrus" and not self.config.is_orthrus:
            raise ValueError(f"{self.model_dir}: a plain Qwen3 checkpoint (no *_diff tensors) can only run mode='ar'")
        params = params or SamplingParams()
        plist = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(plist) != len(prompts):
            raise ValueError(f"got {len(plist)} SamplingParams for {len(prompts)} prompts")
        groups: dict[int, list[int]] = {}
        for i, (prompt, p) in enumerate(zip(prompts, plist)):
            self._check_prompt(i, prompt)
            if p.stop_token_ids is not None and len(p.stop_token_ids) > MAX_STOP_IDS:
                raise ValueError(f"prompt {i}: at most {MAX_STOP_IDS} stop_token_ids, got {len(p.stop_token_ids)}")
            groups.setdefault(self._block_size(p, mode), []).append(i)
        results: list[Result | None] = [None] * len(prompts)
        for K, ids in sorted(groups.items()):
            if K == AUTO:
                K = self.choose_block_size(min(self.max_batch_size, len(ids)))
            self._run(ids, prompts, plist, K, results)
            if K > 1:
                for i in ids:
                    self.tracker.update(results[i].stats.acceptance_lengths, K)
        return results  # type: ignore[return-value]

    def choose_block_size(self, batch: int) -> int:
        """K for a batch of this size from the pass costs and the acceptance seen so far (1 = AR).
        Until a few hundred drafts have been judged, the checkpoint's own block size is used."""
        if self.tracker.tried[0] < 256:
            return self.config.block_size
        return choose_block_size(self.pass_costs, batch, self.tracker.probabilities())

    def set_drafter(self, drafter) -> None:
        """Benchmarks only: replace the drafts with `drafter(state, positions, drafts)` (synthetic
        acceptance). Captured graphs hold the old drafter, so they are dropped."""
        self.drafter = drafter
        if isinstance(self.run_step, GraphedSteps):
            self.run_step = GraphedSteps(self.state, self._step)

    # -- internals --------------------------------------------------------------------------
    def _check_prompt(self, i: int, prompt: list[int]) -> None:
        if len(prompt) == 0:
            raise ValueError(f"prompt {i} is empty")
        if len(prompt) >= self.max_model_len:
            raise ValueError(f"prompt {i} has {len(prompt)} tokens; max_model_len={self.max_model_len} leaves no room to generate")
        bad = [t for t in prompt if not 0 <= t < self.config.vocab_size]
        if bad:
            raise ValueError(f"prompt {i} has token ids outside [0, {self.config.vocab_size}): {bad[:3]}")

    def _block_size(self, p: SamplingParams, mode: str) -> int:
        if mode == "ar":
            return 1
        if p.block_size is None and self.pass_costs is not None:
            return AUTO
        K = p.block_size or self.config.block_size
        if not 2 <= K <= self.max_block_size:
            raise ValueError(f"block_size must be in [2, {self.max_block_size}] in orthrus mode, got {K}")
        return K

    def _run(self, ids: list[int], prompts: list[list[int]], plist: list[SamplingParams], K: int, results: list) -> None:
        """Continuous batching over the requests `ids`, all with block size K."""
        budgets = {i: min(plist[i].max_new_tokens, self.max_model_len - len(prompts[i])) for i in ids}
        stops = {i: plist[i].stop_token_ids if plist[i].stop_token_ids is not None else self.config.eos_token_ids for i in ids}
        sched = Scheduler(ids, min(self.max_batch_size, len(ids)))
        st = self.state
        st.active.zero_()  # a previous call that raised may have left rows behind
        max_len = 0  # longest row in the cache, as read back after the previous iteration
        while not sched.finished():
            admitted = sched.admit()
            if admitted:
                self._start(st, admitted, prompts, plist, budgets, stops)
                max_len = max([max_len] + [len(prompts[r]) for _, r in admitted])
            busy = [sched.slot_request[s] for s in sched.busy]
            B = self._bucket(sched.bucket(), len(sched.slot_request))
            n_keys = min(self.cache.positions, _round_up(max_len + K, 128 if self.cuda_graphs else 1))
            sampling = any(plist[r].temperature > 0 for r in busy)
            with torch.inference_mode():
                flags = self.run_step(B, K, n_keys, sampling).tolist()  # the one host sync of an iteration
            max_len = flags[-1]
            done = [i for i, f in enumerate(flags[:-1]) if f]
            if done:
                self._collect(st, done, sched, prompts, K, results)

    def _step(self, B: int, K: int, n_keys: int, sampling: bool) -> torch.Tensor:
        """One iteration; returns [finished (B) ..., longest length] as one int64 tensor."""
        finished = iterate(self.model, self.cache, self.state, B, K, n_keys, sampling, self.drafter)
        return torch.cat([finished.long(), self.state.length[:B].max()[None]])

    def _bucket(self, busy_slots: int, slots: int) -> int:
        """With CUDA graphs, round B up to a power of two so few shapes are captured."""
        if not self.cuda_graphs:
            return busy_slots
        return min(slots, 1 << (busy_slots - 1).bit_length())

    def _start(self, st: SlotState, admitted, prompts, plist, budgets, stops) -> None:
        """Load the admitted requests' parameters into their slots and prefill their prompts."""
        slots = [s for s, _ in admitted]
        rids = [r for _, r in admitted]
        idx = torch.tensor(slots, device=self.device)
        dev = lambda vals, dtype: torch.tensor(vals, dtype=dtype, device=self.device)  # noqa: E731
        ps = [plist[r] for r in rids]
        st.length[idx] = dev([len(prompts[r]) - 1 for r in rids], torch.long)
        st.anchor[idx] = dev([prompts[r][-1] for r in rids], torch.long)
        st.budget[idx] = dev([budgets[r] for r in rids], torch.long)
        for name in ("generated", "iterations", "accepted"):
            getattr(st, name)[idx] = 0
        st.active[idx], st.stopped[idx] = True, False
        st.greedy[idx] = dev([p.temperature == 0 for p in ps], torch.bool)
        st.temperature_or_one[idx] = dev([p.temperature or 1.0 for p in ps], torch.float32)
        st.top_k[idx] = dev([p.top_k for p in ps], torch.long)
        st.top_p[idx] = dev([p.top_p for p in ps], torch.float32)
        st.seed[idx] = dev([p.seed for p in ps], torch.long)
        width = st.stop_ids.shape[1]
        st.stop_ids[idx] = dev([list(stops[r]) + [-1] * (width - len(stops[r])) for r in rids], torch.long)
        with torch.inference_mode():
            for group in _prefill_groups([len(prompts[r]) for r in rids], self.prefill_chunk):
                prefill(self.model, self.cache, [slots[g] for g in group], [prompts[rids[g]] for g in group],
                        self.prefill_chunk)

    def _collect(self, st: SlotState, done: list[int], sched: Scheduler, prompts, K: int, results: list) -> None:
        idx = torch.tensor(done, device=self.device)
        out, hist = st.out[idx].cpu(), st.hist[idx].cpu()
        gen, its, acc, stopped = (t[idx].cpu().tolist() for t in (st.generated, st.iterations, st.accepted, st.stopped))
        st.length[idx] = 0  # a free slot must not inflate the key range of later steps
        for row, slot in enumerate(done):
            rid = sched.release(slot)
            stats = RequestStats(
                prompt_tokens=len(prompts[rid]), iterations=its[row], diffusion_passes=its[row] if K > 1 else 0,
                drafted_tokens=its[row] * (K - 1), accepted_tokens=acc[row],
                acceptance_lengths=hist[row, : its[row]].tolist(),
            )
            results[rid] = Result(out[row, : gen[row]].tolist(), "stop" if stopped[row] else "length", stats)


def _prefill_groups(lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive groups of rows whose padded size (rows x longest) stays within `budget` tokens;
    a row longer than the budget goes alone (prefill then runs it in chunks)."""
    groups: list[list[int]] = []
    longest = 0
    for i, n in enumerate(lengths):
        if groups and max(longest, n) * (len(groups[-1]) + 1) <= budget:
            groups[-1].append(i)
            longest = max(longest, n)
        else:
            groups.append([i])
            longest = n
    return groups


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple

