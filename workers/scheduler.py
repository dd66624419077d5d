"""Continuous batching on the host: which request sits in which slot, and who waits.

Requests are admitted into the lowest free slots, so the active slots stay packed at the front
and a decode step can run on the first B slots only (B = highest busy slot + 1).
"""
from __future__ import annotations

from collections import deque


class Scheduler:
    def __init__(self, request_ids: list[int], slots: int) -> None:
        self.waiting: deque[int] = deque(request_ids)
        self.slot_request: list[int | None] = [None] * slots

    def admit(self, limit: int | None = None) -> list[tuple[int, int]]:
        """Fill free slots (lowest first) from the queue; returns [(slot, request_id)]."""
        placed = []
        for slot, req in enumerate(self.slot_request):
            if not self.waiting or (limit is not None and len(placed) >= limit):
                break
            if req is None:
                rid = self.waiting.popleft()
                self.slot_request[slot] = rid
                placed.append((slot, rid))
        return placed

    def release(self, slot: int) -> int:
        rid = self.slot_request[slot]
        assert rid is not None, f"slot {slot} is already free"
        self.slot_request[slot] = None
        return rid

    @property
    def busy(self) -> list[int]:
        return [s for s, r in enumerate(self.slot_request) if r is not None]

    def bucket(self) -> int:
        """Slots a step must cover: up to the highest busy one."""
        busy = self.busy
        return busy[-1] + 1 if busy else 0

    def finished(self) -> bool:
        return not self.waiting and not self.busy
