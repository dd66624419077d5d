"""EngineLoop: one engine kept fed by several callers (the actor's concurrent Ray batches).

A background thread owns the engine and steps it while any request is unfinished; callers hand in
their prompts and block until their own results are back. So the next Ray batch's rows join the
running batch as slots and pages free up, instead of waiting for the previous batch's last row
(the tail that idles a GPU between batches). An error inside a step fails every request in flight
(each caller sees it and may retry: the out-of-memory halving in workers/batch.py does) and the
engine is reset, so the loop goes on serving.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from queue import Empty, SimpleQueue

from workers.params import Result, SamplingParams


class EngineLoop:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.max_model_len = engine.max_model_len
        self.inbox: SimpleQueue = SimpleQueue()
        self.waiting: dict[int, tuple[Future, int]] = {}  # request id -> (its call's future, its index)
        self.calls: dict[int, list] = {}  # id(future) -> results so far
        self.thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self.thread.start()

    def generate(self, prompts: list[list[int]], params: list[SamplingParams], mode: str = "orthrus") -> list[Result]:
        """Like Engine.generate, from any thread; results in prompt order."""
        if not prompts:
            return []
        future: Future = Future()
        self.inbox.put((future, prompts, params, mode))
        return future.result()

    def _take_calls(self, block: bool) -> None:
        """Queue every call handed in so far (waiting up to 0.5 s for one when the engine is idle)."""
        try:
            item = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
        except Empty:
            return
        while item is not None:
            future, prompts, params, mode = item
            self.calls[id(future)] = [None] * len(prompts)
            try:
                for i, (p, sp) in enumerate(zip(prompts, params)):
                    self.waiting[self.engine.add_request(p, sp, mode)] = (future, i)
            except ValueError as e:  # a bad request fails its own call; rows already queued are dropped
                self._fail([r for r, (f, _) in self.waiting.items() if f is future], future, e)
            try:
                item = self.inbox.get_nowait()
            except Empty:
                item = None

    def _fail(self, rids, future: Future, err: BaseException) -> None:
        for rid in rids:
            self.waiting.pop(rid, None)
        self.calls.pop(id(future), None)
        if not future.done():
            future.set_exception(err)

    def _run(self) -> None:
        while True:
            self._take_calls(block=not self.engine.has_unfinished())
            if not self.engine.has_unfinished():
                continue
            try:
                done = self.engine.step()
            except BaseException as err:  # noqa: BLE001  (out of memory, a CUDA error: fail the calls in flight)
                self.engine.abort_all()
                for future in {f for f, _ in self.waiting.values()}:
                    self._fail([r for r, (f, _) in self.waiting.items() if f is future], future, err)
                continue
            for rid, result in done:
                if rid not in self.waiting:  # its call failed earlier
                    continue
                future, i = self.waiting.pop(rid)
                results = self.calls[id(future)]
                results[i] = result
                if all(r is not None for r in results):
                    del self.calls[id(future)]
                    future.set_result(results)
