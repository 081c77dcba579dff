"""When did the requests of one Triton hand-over reach the server? Triton does not tell a Python backend.

The model serves each ``execute()`` call as a round: Triton's dynamic batcher (no queue delay, first in first
out) hands over everything it has queued, up to ``max_batch_size`` samples, as soon as the previous round
returns, and keeps what arrives meanwhile in its own queue. What the model knows of that queue follows:

- a round that starts more than ``idle_gap`` after the previous one ended found the model idle: its first
  request arrived just now and started it, and the rest arrived with it;
- otherwise its requests arrived while the previous round ran, so after that round started (Triton's queue was
  emptied then), unless that round was full: then they may be as old as that round's own oldest.

Requests come in arrival order, so the i-th of n is placed at ``head + (now - head) * i / n``: the oldest, whose
deadline the policy reads first, at its earliest possible arrival; the rest spread evenly up to now.
"""

from __future__ import annotations

__all__ = ["HandoverClock"]


class HandoverClock:
    def __init__(self, capacity_samples: int, max_request_samples: int, idle_gap_ns: int) -> None:
        if capacity_samples < max_request_samples or idle_gap_ns < 0:
            raise ValueError("the hand-over must hold at least one largest request, and idle_gap_ns be >= 0")
        self._full_at = capacity_samples - max_request_samples + 1  # one more largest request may not have fit
        self._idle_gap_ns = idle_gap_ns
        self._started_ns: int | None = None
        self._ended_ns: int | None = None
        self._head_ns = 0
        self._full = False

    def start(self, now_ns: int, samples: int) -> int:
        """A round of ``samples`` samples starts now: the earliest its oldest request can have arrived."""
        if self._ended_ns is None or now_ns - self._ended_ns > self._idle_gap_ns:
            head = now_ns
        elif self._full:
            head = self._head_ns
        else:
            head = self._started_ns
        self._started_ns, self._head_ns, self._full = now_ns, head, samples >= self._full_at
        return head

    def end(self, now_ns: int) -> None:
        self._ended_ns = now_ns

    @staticmethod
    def arrival(head_ns: int, now_ns: int, position: int, count: int) -> int:
        """Estimated arrival of the request at ``position`` (0: the oldest) of ``count``."""
        return head_ns + (now_ns - head_ns) * position // count
