"""The global earliest-deadline-first queue shared by every policy.

Each request may be served only by SubNets in an index range ``[lo, hi]`` (all SubNets, an accuracy
floor, or one pinned SubNet). The queue keeps a count per range so that "how many waiting requests
could this SubNet serve" costs O(number of distinct ranges), not O(queue length). Counts and batch
sizes are in samples: a request may carry several images, which always run in the same batch.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Iterator

__all__ = ["QueuedRequest", "EDFQueue"]


class QueuedRequest:
    """One waiting request. ``payload`` is whatever the caller needs to answer it (opaque here)."""

    __slots__ = ("deadline_ns", "seq", "arrival_ns", "lo", "hi", "size", "payload")

    def __init__(self, deadline_ns: int, arrival_ns: int, lo: int, hi: int, payload: Any = None,
                 size: int = 1) -> None:
        self.deadline_ns = deadline_ns
        self.arrival_ns = arrival_ns
        self.lo = lo
        self.hi = hi
        self.size = size
        self.payload = payload
        self.seq = 0

    def __lt__(self, other: "QueuedRequest") -> bool:
        return (self.deadline_ns, self.seq) < (other.deadline_ns, other.seq)

    def __repr__(self) -> str:
        return f"QueuedRequest(deadline_ns={self.deadline_ns}, range=[{self.lo}, {self.hi}])"


class EDFQueue:
    """Min-heap on (deadline, arrival order). Not thread-safe: the dispatcher holds its own lock."""

    def __init__(self) -> None:
        self._heap: list[QueuedRequest] = []
        self._seq = itertools.count()
        self._ranges: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[QueuedRequest]:
        """Requests in no particular order (for shutdown and inspection)."""
        return iter(list(self._heap))

    def push(self, request: QueuedRequest) -> None:
        request.seq = next(self._seq)
        heapq.heappush(self._heap, request)
        key = (request.lo, request.hi)
        self._ranges[key] = self._ranges.get(key, 0) + request.size

    def head(self) -> QueuedRequest:
        return self._heap[0]

    def count_for(self, subnet: int) -> int:
        """How many waiting samples ``subnet`` may serve."""
        return sum(n for (lo, hi), n in self._ranges.items() if lo <= subnet <= hi)

    def _forget(self, request: QueuedRequest) -> None:
        key = (request.lo, request.hi)
        left = self._ranges[key] - request.size
        if left:
            self._ranges[key] = left
        else:
            del self._ranges[key]

    def pop_head(self) -> QueuedRequest:
        request = heapq.heappop(self._heap)
        self._forget(request)
        return request

    def pop_batch(self, subnet: int, batch_size: int) -> list[QueuedRequest]:
        """Remove and return the earliest-deadline requests ``subnet`` may serve, up to ``batch_size`` samples.

        The first compatible request is always taken, even if it alone holds more samples.
        """
        batch: list[QueuedRequest] = []
        skipped: list[QueuedRequest] = []
        heap = self._heap
        samples = 0
        while heap and samples < batch_size:
            request = heap[0]
            if not request.lo <= subnet <= request.hi:
                skipped.append(heapq.heappop(heap))
                continue
            if batch and samples + request.size > batch_size:
                break
            heapq.heappop(heap)
            self._forget(request)
            batch.append(request)
            samples += request.size
        for request in skipped:
            heapq.heappush(heap, request)
        return batch

    def remove_if(self, predicate) -> list[QueuedRequest]:
        """Remove every request matching ``predicate`` (cancelled ones, or all at shutdown)."""
        keep, removed = [], []
        for request in self._heap:
            (removed if predicate(request) else keep).append(request)
        if removed:
            self._heap = keep
            heapq.heapify(self._heap)
            for request in removed:
                self._forget(request)
        return removed
