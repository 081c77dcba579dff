"""The dispatcher thread: owns the EDF queue, asks the policy what to run, hands batches to a runner.

No torch and no Triton here: the runner and the rejection callback are supplied by the caller, so the
same loop is tested with fakes and a fake clock.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..scheduler.policies import Decision, Policy
from ..scheduler.queue import EDFQueue, QueuedRequest
from .metrics import Metrics

__all__ = ["Dispatcher", "DEADLINE_MESSAGE", "QUEUE_FULL_MESSAGE", "SHUTDOWN_MESSAGE", "CANCELLED_MESSAGE"]

DEADLINE_MESSAGE = "deadline cannot be met: no SubNet allowed for this request finishes within its SLO; retry or relax slo_ms"
QUEUE_FULL_MESSAGE = "server overloaded: the request queue is full; retry later"
SHUTDOWN_MESSAGE = "server is shutting down; retry on another instance"
CANCELLED_MESSAGE = "request cancelled by the client before it was computed"


class Dispatcher:
    """One per model instance. ``run_batch(decision, requests)`` must answer every request it is given;
    ``reject(request, code, message)`` answers one with an error (code: unavailable or cancelled)."""

    def __init__(self, policy: Policy, run_batch: Callable[[Decision, list[QueuedRequest]], None],
                 reject: Callable[[QueuedRequest, str, str], None], is_cancelled: Callable[[QueuedRequest], bool],
                 max_queue: int, metrics: Metrics | None = None, clock: Callable[[], int] = time.monotonic_ns,
                 drain_timeout_s: float = 5.0, cancel_check_ms: float = 0.0, rate_window_ms: float = 500.0) -> None:
        self.policy = policy
        self._run_batch = run_batch
        self._reject = reject
        self._is_cancelled = is_cancelled
        self._max_queue = max_queue
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._drain_timeout_ns = int(drain_timeout_s * 1e9)
        # Asking whether a client gave up costs an IPC round trip in Triton's Python backend, so only
        # requests that waited at least this long are asked (a client rarely gives up sooner).
        self._cancel_check_ns = int(cancel_check_ms * 1e6)
        self._queue = EDFQueue(int(rate_window_ms * 1e6))
        self._cond = threading.Condition()
        self._closing_at: int | None = None
        self._thread = threading.Thread(target=self._loop, name="superserve-dispatcher", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._queue)

    def submit(self, request: QueuedRequest) -> None:
        """Queue a validated request, or answer it at once (UNAVAILABLE) if it cannot be served."""
        reason = None
        if not self.policy.feasible(request.lo, request.hi, request.deadline_ns - request.arrival_ns):
            reason = DEADLINE_MESSAGE
        with self._cond:
            if reason is None and self._closing_at is not None:
                reason = SHUTDOWN_MESSAGE
            elif reason is None and len(self._queue) >= self._max_queue:
                reason = QUEUE_FULL_MESSAGE
            if reason is None:
                self._queue.push(request)
                self._metrics.queue_length(len(self._queue))
                self._cond.notify()
                return
        self._metrics.outcome("shed")
        self._reject(request, "unavailable", reason)

    def close(self, timeout_s: float | None = None) -> None:
        """Stop taking requests, serve the queue for up to ``drain_timeout_s``, refuse the rest, join."""
        with self._cond:
            if self._closing_at is None:
                self._closing_at = self._clock()
            self._cond.notify_all()
        self._thread.join(timeout_s)

    def _next(self) -> tuple[Decision | None, list[QueuedRequest], int, int] | None:
        """Under the lock: wait for work, then pick the next batch (or the head to shed)."""
        with self._cond:
            while not self._queue and self._closing_at is None:
                self._cond.wait()
            if not self._queue:
                return None
            now = self._clock()
            if self._closing_at is not None and now - self._closing_at > self._drain_timeout_ns:
                return None
            start = time.perf_counter_ns()
            decision = self.policy.decide(self._queue, now)
            decided_ns = time.perf_counter_ns() - start
            if decision is None:
                batch = [self._queue.pop_head()]
            else:
                batch = self._queue.pop_batch(decision.subnet, decision.batch_size)
            self._metrics.queue_length(len(self._queue))
            return decision, batch, now, decided_ns

    def _loop(self) -> None:
        while True:
            step = self._next()
            if step is None:
                break
            decision, batch, now, decided_ns = step
            if decision is None:
                self._metrics.outcome("shed")
                self._reject(batch[0], "unavailable", DEADLINE_MESSAGE)
                continue
            # A request whose client gave up is dropped here, before any compute is spent on it.
            check_before = now - self._cancel_check_ns
            live, cancelled = [], []
            for request in batch:
                gone = request.arrival_ns <= check_before and self._is_cancelled(request)
                (cancelled if gone else live).append(request)
            if cancelled:
                self._metrics.outcome("cancelled", len(cancelled))
                for request in cancelled:
                    self._reject(request, "cancelled", CANCELLED_MESSAGE)
            if live:
                self._metrics.decision(batch[0].deadline_ns - now, decided_ns)
                self._run_batch(decision, live)
        with self._cond:
            leftover = self._queue.remove_if(lambda r: True)
            if self._closing_at is None:
                self._closing_at = self._clock()
        for request in leftover:
            self._metrics.outcome("shed")
            self._reject(request, "unavailable", SHUTDOWN_MESSAGE)
