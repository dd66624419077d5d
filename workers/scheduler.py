"""Continuous batching on the host: who waits, who holds which slot and pages, who is preempted.

Slots are rows of the device state (workers/orthrus.py). Requests take the lowest free slot, so
busy slots stay packed at the front and an iteration runs on the first B slots (B = highest busy
slot + 1, rounded up to a graph bucket). A request is admitted when a slot is free and the pool
has pages for its tokens plus one block, leaving a watermark for the decoding rows to grow by a
block; one iteration's rows all use the same block size, so a request whose block size differs
from the running rows' waits until they drain (jobs seldom mix them). When a decoding row needs a
page and none is free, the most recently admitted request is preempted (vLLM's choice: it has the
least work to redo).
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from workers.kv_cache import PagedKVCache
from workers.request import Request, Status


class Scheduler:
    def __init__(self, slots: int, cache: PagedKVCache, max_block: int) -> None:
        self.waiting: deque[Request] = deque()
        self.slots: list[Request | None] = [None] * slots
        self.order: list[Request] = []  # requests holding slots, in admission order
        self.cache, self.max_block = cache, max_block

    # -- queue --------------------------------------------------------------------------------
    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def group(self) -> int | None:
        """The block size of the requests holding slots (None when there are none)."""
        return self.order[0].block_size if self.order else None

    def admit(self) -> list[Request]:
        """Move waiting requests of the running block size into free slots while pages last."""
        placed = []
        pool = self.cache.pool
        free = [i for i, r in enumerate(self.slots) if r is None][::-1]  # pop() gives the lowest
        watermark = len(self.decoding) * self.cache.pages_for(self.max_block)
        while self.waiting and free:
            req = self.waiting[0]
            group = self.group()
            if group is not None and req.block_size != group:
                break
            need = self.cache.pages_for(len(req.prompt) + len(req.output) - 1 + self.max_block)
            if self.order and need + watermark > len(pool.free):
                break
            pages = pool.take(need)
            if pages is None:
                break
            self.waiting.popleft()
            req.slot, req.pages, req.status, req.prefilled = free.pop(), pages, Status.PREFILL, 0
            self.slots[req.slot] = req
            self.order.append(req)
            self.cache.clear_row(req.slot)
            self.cache.set_pages(req.slot, 0, pages)
            placed.append(req)
        return placed

    # -- pages --------------------------------------------------------------------------------
    def reserve(self, K: int, save: Callable[[Request], None]) -> list[Request]:
        """Pages for length + K positions of every decoding row; returns the rows preempted to get them.
        `save(req)` copies a decoding victim's progress off the device before its slot is freed."""
        preempted = []
        for req in list(self.decoding):
            if req.status is not Status.DECODE:  # preempted earlier in this loop
                continue
            need = self.cache.pages_for(req.length + K) - len(req.pages)
            while need > 0:
                pages = self.cache.pool.take(need)
                if pages is not None:
                    self.cache.set_pages(req.slot, len(req.pages), pages)
                    req.pages += pages
                    break
                victim = self.order[-1]
                if victim.status is Status.DECODE:
                    save(victim)
                preempted.append(victim)
                self.release(victim, Status.WAITING)
                if victim is req:
                    break
        for req in reversed(preempted):  # back to the front of the queue, in admission order
            req.preemptions += 1
            self.waiting.appendleft(req)
        return preempted

    def release(self, req: Request, status: Status) -> None:
        """Free the request's slot and pages."""
        self.cache.pool.give_back(req.pages)
        self.cache.clear_row(req.slot)
        self.slots[req.slot] = None
        self.order.remove(req)
        req.pages, req.slot, req.status, req.prefilled, req.length = [], None, status, 0, 0

    # -- views --------------------------------------------------------------------------------
    @property
    def prefilling(self) -> list[Request]:
        return [r for r in self.order if r.status is Status.PREFILL]

    @property
    def decoding(self) -> list[Request]:
        return [r for r in self.order if r.status is Status.DECODE]

    def bucket(self) -> int:
        """Slots an iteration must cover: up to the highest decoding one."""
        return max(r.slot for r in self.decoding) + 1

    def has_work(self) -> bool:
        return bool(self.waiting or self.order)
