"""When did the requests of one Triton hand-over reach the server? Triton does not tell a Python backend.

The model serves each ``execute()`` call as a round: Triton's dynamic batcher (no queue delay, first in first
out) hands over everything it has queued, up to ``max_batch_size`` samples, as soon as the previous round
returns, and keeps what arrives meanwhile in its own queue. What the model knows of that queue follows:

- a round that starts more than an idle gap after the previous one ended found the model idle: its first
  request arrived just now and started it, and the rest arrived with it. The gap is ``idle_gap`` plus
  ``idle_gap_per_answer`` for each answer the previous round returned in its list: Triton turns every one of
  them into a response before it hands over the next round, and on a busy machine a round of 30 answers took
  longer than 1 ms to turn around, so a fixed 1 ms gap dated whole bursts as just arrived;
- otherwise its requests arrived while the previous round ran, so after that round started (Triton's queue was
  emptied then), unless that round was full: then they arrived after its newest request (Triton's queue is first
  in, first out), as that one is dated. Dating them from that round's oldest instead chained back through every
  full round of a burst, and the requests that made it in time were refused as already late.

The same bound dates what the round cannot see: requests that arrived after it started, or before if it was
full, wait in Triton's queue until it ends.

Requests come in arrival order, so the i-th of n is placed at ``head + spread * (now - head) * i / n``: the oldest,
whose deadline the policy reads first, at its earliest possible arrival; with ``spread`` 1 (the default) the rest
evenly up to now, which is right for a steady load; with 0 every one at the oldest's time. Only the second is a
bound. The first dates a burst that arrived at once early in the previous round up to a round too young: the model
then holds its answers and picks SubNets as if it had that time, and the client sees them late.
"""

from __future__ import annotations

__all__ = ["HandoverClock"]


class HandoverClock:
    def __init__(self, capacity_samples: int, max_request_samples: int, idle_gap_ns: int,
                 idle_gap_per_answer_ns: int = 0) -> None:
        if capacity_samples < max_request_samples or idle_gap_ns < 0 or idle_gap_per_answer_ns < 0:
            raise ValueError("the hand-over must hold at least one largest request, and idle gaps be >= 0")
        self._full_at = capacity_samples - max_request_samples + 1  # one more largest request may not have fit
        self._idle_gap_ns = idle_gap_ns
        self._per_answer_ns = idle_gap_per_answer_ns
        self._idle_after_ns = idle_gap_ns
        self._started_ns: int | None = None
        self._ended_ns: int | None = None
        self._newest_ns = 0  # the current round's newest request, as dated
        self._full = False

    def start(self, now_ns: int, samples: int, requests: int = 1) -> int:
        """A round of ``requests`` requests, ``samples`` samples, starts now: when its oldest request arrived, at
        the earliest."""
        if self._found_idle(now_ns):
            head = now_ns
        elif self._full:
            head = self._newest_ns
        else:
            head = self._started_ns
        self._started_ns, self._full = now_ns, samples >= self._full_at
        self._newest_ns = self.arrival(head, now_ns, requests - 1, requests) if requests > 1 else head
        return head

    def busy_gap_ns(self, now_ns: int) -> int:
        """Time since the previous round ended if a round starting now follows it back to back (else 0)."""
        return 0 if self._found_idle(now_ns) else now_ns - self._ended_ns

    def _found_idle(self, now_ns: int) -> bool:
        """Does a round starting now find the model idle (no round yet, or longer than the idle gap since one)?"""
        return self._ended_ns is None or now_ns - self._ended_ns > self._idle_after_ns

    def unseen_since(self) -> int:
        """While the round runs: the earliest a request still in Triton's queue can have arrived (the round
        emptied that queue as it started, unless it was full: then after this round's newest)."""
        return self._newest_ns if self._full else self._started_ns

    def end(self, now_ns: int, answers: int = 0) -> None:
        """The round returns ``answers`` answers in its list now."""
        self._ended_ns = now_ns
        self._idle_after_ns = self._idle_gap_ns + self._per_answer_ns * answers

    @staticmethod
    def arrival(head_ns: int, now_ns: int, position: int, count: int, spread: float = 1.0) -> int:
        """Estimated arrival of the request at ``position`` (0: the oldest) of ``count``."""
        return head_ns + int(spread * (now_ns - head_ns)) * position // count
