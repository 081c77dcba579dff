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
import math
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
    """Sorted on (deadline, arrival order). Not thread-safe: the dispatcher holds its own lock."""

    def __init__(self, rate_window_ns: int = 500_000_000, burst_window_ns: int = 50_000_000,
                 burst_memory_ns: int = 0) -> None:
        self._items: list[QueuedRequest] = []
        # Arrival rates: samples counted with exponential decay over a time constant, a long one for the load
        # and a short one that sees a burst within a few batches. From the first arrival (or the first after an
        # idle spell) the count is read over the time seen so far: read over the whole time constant, a load
        # starting from cold looked a fifth of what it was for the first 100 ms and half for 350 ms, and the
        # utilization cap let a burst at start-up in on the most accurate SubNets.
        self._windows_ns = (rate_window_ns, burst_window_ns)
        self._decayed = [0.0, 0.0]
        self._last_arrival_ns: int | None = None
        self._first_arrival_ns = 0  # of the arrivals counted since the estimate (re)started
        # Arrivals after this time are not in the queue yet (they wait in Triton's queue until the round
        # ends); None: every arrival is in it.
        self._unseen_since_ns: int | None = None
        self._round_rate = 0.0  # samples per second over the current round's hand-over
        self._round_samples = 0
        # The highest burst rate a policy read, fading over ``burst_memory_ns``: on a bursty load the next burst
        # comes as fast as the last, and a slow batch started in the lull between them meets it in full.
        self._burst_memory_ns = burst_memory_ns
        self._peak_rate = 0.0
        self._peak_ns = 0
        self._seq = itertools.count()
        self._ranges: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def arrival_rate(self, now_ns: int, burst: bool = False, round_min_samples: int = 1) -> float:
        """Recent arrivals, in samples per second (an exponentially weighted estimate); ``burst``: over the short
        time constant, never below the long one, and at least the current hand-over's own rate if it holds
        ``round_min_samples`` or more."""
        if self._last_arrival_ns is None:
            return 0.0
        age = max(0, now_ns - self._last_arrival_ns)
        # Over the time seen so far (at least the short time constant) until it spans a long one: the decayed
        # count of a steady rate grows to its full weight only over a time constant.
        seen = max(now_ns - self._first_arrival_ns, self._windows_ns[1])
        rates = [decayed * math.exp(-age / window) * 1e9 / (window * -math.expm1(-seen / window))
                 for decayed, window in zip(self._decayed, self._windows_ns)]
        if not burst:
            return rates[0]
        return max(*rates, self._round_rate if self._round_samples >= round_min_samples else 0.0)

    def start_round(self, unseen_since_ns: int, head_ns: int, now_ns: int, samples: int) -> None:
        """A hand-over of ``samples`` that arrived from ``head_ns`` on is about to be pushed; what arrives from
        ``unseen_since_ns`` on stays out of sight until the round ends. The hand-over's own rate counts as a
        burst rate for this round: the short time constant takes tens of ms to see a burst in full."""
        self._unseen_since_ns = unseen_since_ns
        self._round_rate = samples * 1e9 / (now_ns - head_ns) if now_ns > head_ns else 0.0
        self._round_samples = samples

    def peak_rate(self, now_ns: int, rate: float) -> float:
        """Remember ``rate`` (a burst rate read now, samples per second); returns the highest remembered, faded
        by its age over the burst memory (0 without a memory)."""
        if not self._burst_memory_ns:
            return 0.0
        faded = self._peak_rate * math.exp((self._peak_ns - now_ns) / self._burst_memory_ns)
        if rate >= faded:
            self._peak_rate, self._peak_ns = rate, now_ns
            return rate
        return faded

    def round_rate(self) -> float:
        """The current hand-over's own rate, samples per second (0 if it found the model idle)."""
        return self._round_rate

    def unseen_since(self) -> int | None:
        return self._unseen_since_ns

    def push(self, request: QueuedRequest, arrived: bool = True) -> None:
        """Queue ``request``; ``arrived`` False: it is back from a worker that was lost (not a new arrival)."""
        request.seq = next(self._seq)
        if arrived:
            self._count_arrival(request)
        items = self._items
        if not items or not request < items[-1]:
            items.append(request)
        else:
            bisect.insort_right(items, request)
        key = (request.lo, request.hi)
        self._ranges[key] = self._ranges.get(key, 0) + request.size

    def _count_arrival(self, request: QueuedRequest) -> None:
        decayed = self._decayed
        if self._last_arrival_ns is None or request.arrival_ns - self._last_arrival_ns > self._windows_ns[0]:
            # the first arrival, or the first after an idle spell of a long time constant: a new estimate
            self._decayed = decayed = [0.0, 0.0]
            self._first_arrival_ns = request.arrival_ns
            self._last_arrival_ns = request.arrival_ns
        if request.arrival_ns > self._last_arrival_ns:
            age = request.arrival_ns - self._last_arrival_ns
            decayed[0] = decayed[0] * math.exp(-age / self._windows_ns[0]) + request.size
            decayed[1] = decayed[1] * math.exp(-age / self._windows_ns[1]) + request.size
            self._last_arrival_ns = request.arrival_ns
        else:
            decayed[0] += request.size
            decayed[1] += request.size

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
        return sum(n for (lo, hi), n in self._ranges.items() if lo <= subnet <= hi)

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
