"""The router's books: ONE earliest-deadline-first queue and one policy in front of many workers (paper §5).

Whenever a worker is free and work is queued, ``take`` asks the policy for (SubNet, batch) from the head's slack
and hands that batch to the worker: requests start in global deadline order whichever worker runs them, and the
policy plans with the workers that are up. A lost worker's batch goes back into the queue where its deadlines
still allow, and is refused otherwise; with no worker up, nothing waits.

No threads, no clock and no I/O: the live router (``serving/router.py``) drives it from one thread per worker
under one lock, and the simulator drives it from an event loop with profiled latencies, so both run the same
books. Tests drive it with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .load import LoadEstimate
from .policies import Policy
from .queue import EDFQueue, QueuedRequest

__all__ = ["Assignment", "Dispatcher"]


@dataclass(slots=True)
class Assignment:
    """A batch handed to a worker: run ``batch`` (EDF order) on SubNet ``subnet``."""

    worker: int
    subnet: int
    batch: list[QueuedRequest]
    samples: int
    started_ns: int
    slack_ns: int  # the head's remaining slack when it was chosen


class Dispatcher:
    """``make_policy(workers_up)`` makes the policy for that many workers; it is made again when the count changes
    (a worker lost or back) and when the caller says the costs changed (``replan``). Workers start down: a worker
    is up once its owner says it is ready (``restore``)."""

    def __init__(self, make_policy: Callable[[int], Policy], workers: int, load: LoadEstimate | None = None) -> None:
        if workers < 1:
            raise ValueError(f"a dispatcher needs at least one worker, got {workers}")
        self.queue = EDFQueue()
        self.load = load if load is not None else LoadEstimate()
        self._make_policy = make_policy
        self.up = [False] * workers
        self.running: list[Assignment | None] = [None] * workers
        self.policy = make_policy(1)
        self._full_batch_ns: int | None = None

    @property
    def workers_up(self) -> int:
        return sum(self.up)

    def replan(self) -> None:
        """A new policy over the current costs and the workers that are up."""
        self.policy = self._make_policy(max(1, self.workers_up))
        self._full_batch_ns = None  # the fastest full batch, as the new policy plans it

    def push(self, request: QueuedRequest) -> None:
        """Queue a request that has just arrived (and count it in the load)."""
        self.queue.push(request)
        self.load.arrived(request.arrival_ns, request.size)

    def admits(self, lo: int, hi: int, deadline_ns: int, now_ns: int) -> bool:
        """Can a request (SubNets ``lo..hi``, due ``deadline_ns``) arriving now still be served in time, behind the
        requests queued ahead of it? Those go first, in full batches of the fastest SubNet spread over the workers
        that are up, then it alone on the fastest SubNet it allows: an optimistic bound, so that nothing is
        refused that could be served, while an overload is refused on arrival instead of queued to expire."""
        if not self.workers_up:
            return False
        profile = self.policy.profile
        if self._full_batch_ns is None:
            self._full_batch_ns = min(profile.latency_ns(s, profile.max_batch) for s in range(profile.size))
        ahead = self.queue.position_of(deadline_ns + 1)
        wait_ns = ahead // profile.max_batch * self._full_batch_ns // self.workers_up
        return self.policy.feasible(lo, hi, deadline_ns - now_ns - wait_ns)

    def idle(self, worker: int) -> bool:
        """Up and running nothing: it takes the next batch as soon as one is queued."""
        return self.up[worker] and self.running[worker] is None

    def take(self, worker: int, now_ns: int) -> tuple[Assignment | None, list[QueuedRequest]]:
        """The next batch for an idle ``worker``, and the heads shed on the way (no allowed SubNet can meet
        their deadlines any more: answer them UNAVAILABLE). None when the queue ran empty."""
        if not self.idle(worker):
            raise ValueError(f"worker {worker} is {'busy' if self.up[worker] else 'down'}: it cannot take a batch")
        queue, load, shed = self.queue, self.load, []
        while queue:
            load.remember_burst(now_ns)
            decision = self.policy.decide(queue, now_ns, load)
            if decision is None:
                shed.append(queue.pop_head())
                continue
            slack_ns = queue.head().deadline_ns - now_ns
            batch = queue.pop_batch(decision.subnet, decision.batch_size)
            assignment = Assignment(worker, decision.subnet, batch, sum(r.size for r in batch), now_ns, slack_ns)
            self.running[worker] = assignment
            return assignment, shed
        return None, shed

    def finish(self, worker: int) -> Assignment:
        """``worker`` is done with its batch (answered, or failed as a batch): it is idle again."""
        assignment = self.running[worker]
        if assignment is None:
            raise ValueError(f"worker {worker} runs no batch")
        self.running[worker] = None
        return assignment

    def lose(self, worker: int, now_ns: int) -> tuple[list[QueuedRequest], list[QueuedRequest]]:
        """``worker`` died or stopped answering: it leaves the rotation. Returns (requeued, refused): the requests
        of its batch that another worker can still serve in time go back into the queue; the rest, and with no
        worker left up every queued request, are refused."""
        self.up[worker] = False
        assignment, self.running[worker] = self.running[worker], None
        self.replan()
        requeued, refused = [], []
        for request in assignment.batch if assignment else ():
            if self.workers_up and self.policy.feasible(request.lo, request.hi, request.deadline_ns - now_ns):
                self.queue.push(request)  # not a new arrival: the load does not count it again
                requeued.append(request)
            else:
                refused.append(request)
        if not self.workers_up:
            refused += self.queue.remove_if(lambda r: True)
        return requeued, refused

    def restore(self, worker: int) -> None:
        """``worker`` is ready (started, restarted or answering again): back in the rotation."""
        if not self.up[worker]:
            self.up[worker] = True
            self.replan()
