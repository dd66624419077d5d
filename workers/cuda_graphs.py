"""Replay decode iterations from CUDA graphs: one capture per (B, K, sampling).

An iteration is a few hundred small kernels at batch 1; launching them from the host costs more
than running them. Every tensor an iteration touches (weights, KV pool, block tables, SlotState)
lives at a fixed address, and the fused attention reads row lengths from tensors, so the whole
iteration, acceptance and commit included, is captured once per shape and replayed at any context
length. (Only the reference attention's gather has a key range in its shape: then the range is part
of the key.) Warm-up runs before a capture do real work on the live state, so the state is
snapshotted and restored around them; their cache writes land beyond each row's length (reserved
pages) or in the trash pages, where no query looks.
"""
from __future__ import annotations

import time
from dataclasses import fields
from typing import Callable

import torch

from workers.orthrus import SlotState


class GraphedSteps:
    def __init__(self, state: SlotState, step: Callable[[int, int, int, bool], torch.Tensor],
                 keyed_by_range: bool = False) -> None:
        self.state, self.step, self.keyed_by_range = state, step, keyed_by_range
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = None
        self.capture_seconds = 0.0

    def __call__(self, B: int, K: int, n_keys: int, sampling: bool) -> torch.Tensor:
        key = (B, K, sampling, n_keys if self.keyed_by_range else 0)
        if key not in self.graphs:
            t0 = time.perf_counter()
            self.graphs[key] = self._capture(B, K, n_keys, sampling)
            self.capture_seconds += time.perf_counter() - t0
        graph, out = self.graphs[key]
        graph.replay()
        return out

    @property
    def captures(self) -> int:
        return len(self.graphs)

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self.state, f.name).clone() for f in fields(self.state)}

    def _restore(self, snap: dict[str, torch.Tensor]) -> None:
        for name, saved in snap.items():
            getattr(self.state, name).copy_(saved)

    def _capture(self, B: int, K: int, n_keys: int, sampling: bool):
        snap = self._snapshot()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: cuBLAS workspaces, autotuning, compilation
                self.step(B, K, n_keys, sampling)
        torch.cuda.current_stream().wait_stream(side)
        self._restore(snap)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self.step(B, K, n_keys, sampling)
        self.pool = graph.pool()
        self._restore(snap)
        return graph, out
