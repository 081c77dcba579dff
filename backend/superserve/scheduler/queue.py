"""The global earliest-deadline-first queue shared by every policy.

Each request may be served only by SubNets in an index range ``[lo, hi]`` (all SubNets, an accuracy
floor, or one pinned SubNet). The queue keeps a count per range so that "how many waiting requests
could this SubNet serve" costs O(number of distinct ranges), not O(queue length). Counts and batch
sizes are in samples: a request may carry several images, which always run in the same batch.

The queue is a list kept sorted by (deadline, arrival order), not a heap, so that a policy can read the
k-th earliest deadline in O(1) to look ahead past the batch it is about to run. Inserts are a binary
search plus a memmove over at most ``max_queue`` pointers; with one SLO for all requests an insert
lands at the end.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any

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


def _deadline(request: QueuedRequest) -> int:
    return request.deadline_ns


class EDFQueue:
    """Sorted on (deadline, arrival order). Not thread-safe: the dispatcher holds its own lock. How fast requests
    arrive is not the queue's business: the serving loop counts arrivals in a ``LoadEstimate``."""

    def __init__(self) -> None:
        self._items: list[QueuedRequest] = []
        self._seq = itertools.count()
        self._ranges: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def push(self, request: QueuedRequest) -> None:
        request.seq = next(self._seq)
        items = self._items
        if not items or not request < items[-1]:
            items.append(request)
        else:
            bisect.insort_right(items, request)
        key = (request.lo, request.hi)
        self._ranges[key] = self._ranges.get(key, 0) + request.size

    def head(self) -> QueuedRequest:
        return self._items[0]

    def deadline_at(self, position: int) -> int:
        """Deadline of the request at ``position`` in EDF order (0 is the head)."""
        return self._items[position].deadline_ns

    def position_of(self, deadline_ns: int, start: int = 0) -> int:
        """The first position from ``start`` on whose deadline is at least ``deadline_ns`` (``len`` if none)."""
        return bisect.bisect_left(self._items, deadline_ns, start, key=_deadline)

    def count_for(self, subnet: int) -> int:
        """How many waiting samples ``subnet`` may serve."""
        total = 0
        for (lo, hi), n in self._ranges.items():  # a loop, not sum() over a generator: half the time
            if lo <= subnet <= hi:
                total += n
        return total

    def _forget(self, request: QueuedRequest) -> None:
        key = (request.lo, request.hi)
        left = self._ranges[key] - request.size
        if left:
            self._ranges[key] = left
        else:
            del self._ranges[key]

    def pop_head(self) -> QueuedRequest:
        request = self._items.pop(0)
        self._forget(request)
        return request

    def pop_batch(self, subnet: int, batch_size: int) -> list[QueuedRequest]:
        """Remove and return the earliest-deadline requests ``subnet`` may serve, up to ``batch_size`` samples.

        The first compatible request is always taken, even if it alone holds more samples.
        """
        items = self._items
        batch: list[QueuedRequest] = []
        skipped: list[QueuedRequest] = []  # earlier requests this SubNet may not serve: they stay
        samples = 0
        i = 0
        while i < len(items) and samples < batch_size:
            request = items[i]
            i += 1
            if not request.lo <= subnet <= request.hi:
                skipped.append(request)
                continue
            if batch and samples + request.size > batch_size:
                i -= 1
                break
            self._forget(request)
            batch.append(request)
            samples += request.size
        if skipped:
            items[:i] = skipped
        else:
            del items[:i]
        return batch

    def remove_if(self, predicate) -> list[QueuedRequest]:
        """Remove every request matching ``predicate`` (cancelled ones, or all at shutdown)."""
        keep, removed = [], []
        for request in self._items:
            (removed if predicate(request) else keep).append(request)
        if removed:
            self._items = keep
            for request in removed:
                self._forget(request)
        return removed
