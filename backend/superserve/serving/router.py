"""The router: every request in ONE earliest-deadline-first queue from its arrival, and many workers behind it.

``serve`` (called from the Triton model's ``execute()``, which then returns at once) dates each request as it
arrives, checks it and queues it, so Triton's own queue stays empty and the router sees everything waiting; a
request that no worker can serve in time behind what is queued (``Dispatcher.admits``) is refused on arrival, in
the list ``execute()`` returns (one message to Triton for all of a hand-over's refusals). One
thread per worker pulls the next batch whenever its worker is free (``Dispatcher.take``: the policy on the global
queue, with the workers that are up), sends it to the worker, takes and sends the next one before answering the
last, so a worker never waits for answers to go out nor for another worker's batch. Each answer goes out through
its request's own sender.

A worker that dies, or gives no answer within ``worker_timeout_factor`` times its batch's planned latency (at
least ``worker_timeout_min_ms``), leaves the rotation at once: its batch is requeued where deadlines still allow,
refused UNAVAILABLE otherwise, and its thread starts it again; the policy plans with the workers left meanwhile.

Triton-agnostic like the serving core: a ``Transport`` reads requests and makes and sends responses, and workers
are objects with ``start``/``submit``/``result``/``alive``/``stop``, so tests drive it with fakes and a fake clock.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..scheduler.cost_model import CostModel
from ..scheduler.dispatcher import Assignment, Dispatcher
from ..scheduler.profile import Profile
from ..scheduler.queue import QueuedRequest
from .config import ServingConfig, configured_load, configured_policy
from .core import CANCELLED_MESSAGE, DEADLINE_MESSAGE, Transport
from .metrics import Metrics
from .requests import RequestError, SpecCache, check_finite, read_requests
from .remote import RemoteWorker
from .workers import BatchFailed, LocalWorker, WorkerLost

__all__ = ["Router", "NO_WORKER_MESSAGE", "SHUTDOWN_MESSAGE"]

log = logging.getLogger(__name__)

NO_WORKER_MESSAGE = "no worker is up to serve this request (they are restarting); retry shortly"
SHUTDOWN_MESSAGE = "the server is shutting down; retry on another replica"
_RESTART_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0)  # before the 1st, 2nd, ... start attempt in a row
IDLE_CHECK_S = 0.5  # an idle worker is looked at this often: its death is seen within this, not at its next batch
_GONE = object()  # what next_batch returns for a worker that died while it waited for work


class Router:
    def __init__(self, profile: Mapping[str, Any], config: ServingConfig, transport: Transport,
                 workers: Sequence[Any], metrics: Metrics | None = None,
                 clock: Callable[[], int] = time.monotonic_ns, threads: bool = True) -> None:
        """``threads`` False: no thread per worker; the caller drives each worker's steps (``up``, ``next_batch``,
        ``finish``, ``answer``, ``observe``, ``lose``) from its own events, as the simulator does."""
        self.config = config
        self.transport = transport
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.workers = list(workers)
        self.cost = CostModel(Profile.from_dict(profile), config.overhead_per_batch_ms, config.overhead_per_sample_ms,
                              config.overhead_adapt_rate, config.slowdown_adapt_rate)
        self.max_batch = self.cost.compute.max_batch
        self.input_shape = tuple(int(d) for d in profile["input_shape"])
        self.accuracy = [s.accuracy for s in self.cost.compute.subnets]
        self._margin_ns = int(config.margin_ms * 1e6)
        self._cancel_check_ns = int(config.cancel_check_ms * 1e6)
        self._specs = SpecCache(self.cost.compute, config.default_slo_ms, config.max_slo_ms)
        self.dispatcher = Dispatcher(self._policy_for, len(self.workers), configured_load(config, self.max_batch))
        self._cond = threading.Condition()
        self._closing = False
        self.metrics.cost_model(self.cost.per_batch_ns, self.cost.per_sample_ns)
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"superserve-worker-{i}", daemon=True)
                         for i in range(len(self.workers) if threads else 0)]
        for thread in self._threads:
            thread.start()

    @classmethod
    def start(cls, profile: Mapping[str, Any], config: ServingConfig, transport: Transport, folder: Path,
              metrics: Metrics | None = None, ready_timeout_s: float = 300.0) -> "Router":
        """The router over the workers ``config`` sets (local processes on ``folder``'s SuperNet, then remote
        hosts), once every one is up; ValueError if they are not within ``ready_timeout_s``."""
        workers: list[Any] = [LocalWorker(i, folder, device, config.num_threads, profile["input_shape"],
                                          int(profile["max_batch_size"]), int(profile["num_classes"]))
                              for i, device in enumerate(config.worker_device_list(config.device))]
        workers += [RemoteWorker(len(workers) + i, address) for i, address in enumerate(config.remote_list())]
        router = cls(profile, config, transport, workers, metrics)
        if not router.wait_ready(ready_timeout_s):
            router.close()
            raise ValueError(f"its workers were not all up within {ready_timeout_s:g} s (the log says why)")
        return router

    def _policy_for(self, workers_up: int):
        return configured_policy(self.config, self.cost.profile,
                                 (1.0 + self.config.latency_safety) * self.cost.planned_slowdown - 1.0, workers_up)

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until every worker is up (or ``timeout_s`` passed); True if they all are."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.dispatcher.workers_up < len(self.workers):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # Intake ---------------------------------------------------------------------------------------------------
    def serve(self, handles: Sequence[Any]) -> list[Any]:
        """Queue every request of a Triton hand-over. Returns one entry per request, as ``execute()`` returns
        them: the answer of a request refused now (malformed, or no worker can serve it in time behind what is
        queued), None for one queued (answered later through its own sender)."""
        now = self.clock()
        transport = self.transport
        self.metrics.round(len(handles))
        responses: list[Any] = [None] * len(handles)
        valid, invalid = read_requests(handles, transport, self._specs, self.input_shape, self.max_batch)
        for slot, exc in invalid:
            self.metrics.outcome("error")
            responses[slot] = transport.error("invalid", str(exc))
        # our own copy of each input: the request's tensor is only sure to live until execute() returns
        queued = [(slot, QueuedRequest(now + spec.slo_ns, now, spec.lo, spec.hi, (handle, np.array(images)),
                                       images.shape[0])) for slot, handle, images, spec in valid]
        refused = []
        with self._cond:
            dispatcher = self.dispatcher
            for slot, request in queued:
                if not self._closing and dispatcher.admits(request.lo, request.hi, request.deadline_ns, now):
                    dispatcher.push(request)
                else:
                    refused.append(slot)
            self.metrics.queue_length(len(dispatcher.queue))
            self._cond.notify_all()
            message = SHUTDOWN_MESSAGE if self._closing else \
                DEADLINE_MESSAGE if dispatcher.workers_up else NO_WORKER_MESSAGE
        if refused:
            self.metrics.outcome("shed", len(refused))
            for slot in refused:
                responses[slot] = transport.error("unavailable", message)
        return responses

    # One thread per worker ------------------------------------------------------------------------------------
    def _run(self, i: int) -> None:
        attempts, started = 0, False  # failed starts in a row; whether it was ever up (then a start is a restart)
        while not self._closing:
            time.sleep(_RESTART_BACKOFF_S[min(attempts, len(_RESTART_BACKOFF_S) - 1)])
            if self._closing:
                break
            try:
                self.workers[i].start()
            except WorkerLost as exc:
                attempts += 1
                if attempts == 1 or attempts % 10 == 0:  # a remote host that is down says so once in a while
                    log.error("%s failed to start (%s); trying again", self.workers[i].name, exc)
                continue
            self.up(i, restarted=started)
            attempts, started = 0, True
            try:
                self._feed(i)
            except Exception as exc:  # a bug, not a lost worker: its batch is requeued all the same
                log.exception("worker %d's thread failed", i)
                self.lose(i, exc)
        self.workers[i].stop()

    def up(self, i: int, restarted: bool) -> None:
        """Worker ``i`` has started (``restarted``: again, after a loss): into the rotation."""
        log.info("%s is up, %s", self.workers[i].name, self.workers[i].where)
        with self._cond:
            self.dispatcher.restore(i)
            self.metrics.worker(i, up=True, restarted=restarted)
            self._cond.notify_all()

    def _feed(self, i: int) -> None:
        """Feed worker ``i`` until it is lost or the router closes."""
        worker = self.workers[i]
        current = None  # submitted to the worker, its result not read yet
        while True:
            if current is None:
                current = self.next_batch(i, wait=True)
                if current is None:
                    return
                if current is _GONE:
                    self.lose(i, WorkerLost(f"{worker.name} exited while it had nothing to do"))
                    return
                if not self._submit(i, current):
                    return
            assignment, images = current
            try:
                logits = worker.result(self._timeout_s(assignment))
            except BatchFailed as exc:
                with self._cond:
                    self.dispatcher.finish(i)
                for request in assignment.batch:
                    self._send(request, self.transport.error("internal", str(exc)), "error")
                current = None
                continue
            except Exception as exc:  # WorkerLost, or a client library's error
                self.lose(i, exc)
                return
            self.finish(i, assignment)
            current = self.next_batch(i, wait=False)  # the worker computes the next batch while this one's answers go
            lost = current is not None and not self._submit(i, current)
            self.answer(assignment, logits)
            self.observe(assignment)
            if lost:
                return

    def finish(self, i: int, assignment: Assignment) -> None:
        """Worker ``i`` computed ``assignment``: it is free for the next batch (taken before this one is
        answered, so that it computes while the answers go out: ``answer``, then ``observe``)."""
        with self._cond:
            self.dispatcher.finish(i)
            self.metrics.worker_busy(i, (self.clock() - assignment.started_ns) / 1e9)

    def observe(self, assignment: Assignment) -> None:
        """Fold a batch's time, from its choice to its last answer out (what its requests waited: the latency
        the policy plans), into the cost model; a new plan if it moved."""
        with self._cond:
            if self.cost.observe(assignment.subnet, assignment.samples, self.clock() - assignment.started_ns):
                self.dispatcher.replan()
                self.metrics.cost_model(self.cost.per_batch_ns, self.cost.per_sample_ns)

    def next_batch(self, i: int, wait: bool) -> tuple[Assignment, np.ndarray] | None | object:
        """The next batch for worker ``i`` and its inputs: waits for work if ``wait``; None when there is none
        (or the router is closing), ``_GONE`` if the worker died while it waited."""
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return None
                    if self.dispatcher.queue:
                        started = time.perf_counter_ns()
                        assignment, shed = self.dispatcher.take(i, self.clock())
                        decided_ns = time.perf_counter_ns() - started
                        self.metrics.queue_length(len(self.dispatcher.queue))
                        break
                    if not wait:
                        return None
                    if not self._cond.wait(IDLE_CHECK_S) and not self.workers[i].alive():
                        return _GONE
            for request in shed:
                self._refuse(request, DEADLINE_MESSAGE)
            if assignment is None:
                continue
            batch = self._live(assignment)
            if batch:
                images = batch[0].payload[1] if len(batch) == 1 else np.concatenate([r.payload[1] for r in batch])
                if len(batch) != len(assignment.batch):
                    assignment.batch, assignment.samples = batch, len(images)
                self.metrics.decision(assignment.slack_ns, decided_ns)
                return assignment, images
            with self._cond:
                self.dispatcher.finish(i)

    def _live(self, assignment: Assignment) -> list[QueuedRequest]:
        """The batch without requests whose client gave up (asked only of those that waited
        ``cancel_check_ms``: each question is an IPC round trip) or whose input holds NaN or Inf (answered
        INVALID_ARGUMENT alone)."""
        asked_before = assignment.started_ns - self._cancel_check_ns
        live = []
        for request in assignment.batch:
            handle, images = request.payload
            if self._cancel_check_ns and request.arrival_ns <= asked_before and self.transport.is_cancelled(handle):
                self._send(request, self.transport.error("cancelled", CANCELLED_MESSAGE), "cancelled")
                continue
            try:
                check_finite(images)
            except RequestError as exc:
                self._answer_invalid(handle, exc)
                continue
            live.append(request)
        return live

    def _submit(self, i: int, current: tuple[Assignment, np.ndarray]) -> bool:
        try:
            self.workers[i].submit(current[0].subnet, current[1])
        except Exception as exc:  # WorkerLost, or a client library's error: the worker is no use now
            self.lose(i, exc)
            return False
        return True

    def _timeout_s(self, assignment: Assignment) -> float:
        planned_ns = self.cost.profile.latency_ns(assignment.subnet, assignment.samples)
        return max(self.config.worker_timeout_factor * planned_ns / 1e9, self.config.worker_timeout_min_ms / 1e3)

    def lose(self, i: int, exc: Exception) -> None:
        """Worker ``i`` is gone: out of the rotation, its batch requeued or refused; ``_run`` starts it again."""
        worker = self.workers[i]
        log.error("%s lost, %s: %s; its batch is requeued where deadlines allow", worker.name, worker.where, exc)
        worker.stop()
        with self._cond:
            requeued, refused = self.dispatcher.lose(i, self.clock())
            self.metrics.worker(i, up=False, lost=True)
            self.metrics.requeued(len(requeued))
            self._cond.notify_all()
        message = NO_WORKER_MESSAGE if not self.dispatcher.workers_up else DEADLINE_MESSAGE
        for request in refused:
            self._refuse(request, message)

    # Answers --------------------------------------------------------------------------------------------------
    def answer(self, assignment: Assignment, logits: np.ndarray) -> None:
        subnet = assignment.subnet
        accuracy = self.accuracy[subnet]
        self.metrics.batch(subnet, assignment.samples, accuracy)
        result, offset = self.transport.result, 0
        for request in assignment.batch:
            handle = request.payload[0]
            try:
                response, outcome = result(handle, logits[offset:offset + request.size], subnet, accuracy), None
            except Exception as exc:  # one answer that cannot be made fails alone
                log.exception("making an answer failed")
                response, outcome = self.transport.error("internal", f"the answer could not be made: {exc}"), "error"
            offset += request.size
            self._send(request, response, outcome)

    def _send(self, request: QueuedRequest, response: Any, outcome: str | None) -> None:
        """Send one answer; ``outcome`` None: judged on time or late now."""
        try:
            self.transport.send(request.payload[0], response)
        except Exception:  # the client is gone or Triton refused it: nothing more can reach this request
            log.exception("sending an answer failed")
            outcome = "error"
        self.metrics.outcome(outcome or ("on_time" if self.clock() <= request.deadline_ns else "late"))

    def _refuse(self, request: QueuedRequest, message: str) -> None:
        self._send(request, self.transport.error("unavailable", message), "shed")

    def _answer_invalid(self, handle: Any, exc: RequestError) -> None:
        self.metrics.outcome("error")
        try:
            self.transport.send(handle, self.transport.error("invalid", str(exc)))
        except Exception:
            log.exception("sending an answer failed")

    # Shutdown -------------------------------------------------------------------------------------------------
    def close(self, timeout_s: float = 30.0) -> None:
        """Finish the batches running, refuse what is still queued, stop the workers."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = self.dispatcher.queue.remove_if(lambda r: True)
        for request in left:
            self._refuse(request, SHUTDOWN_MESSAGE)
        for worker in self.workers:
            worker.stop()
