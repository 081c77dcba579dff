"""The serving core behind the Triton model: one ``execute()`` hand-over is served as one round.

A round takes every request Triton handed over, validates it, estimates when it arrived (``handover``),
queues it earliest-deadline-first, and lets the policy pick (SubNet, batch) again and again until every request
of the round is answered: computed, refused (UNAVAILABLE) or rejected (INVALID_ARGUMENT). Answers come back as
the list ``execute()`` returns, which Triton sends in one message per round; an answer that would wait for later
batches longer than ``max_hold_ms``, or past its deadline, goes out early through its request's own sender, from a
sender thread while the next batch computes. Requests that arrive meanwhile wait in Triton's queue and make up
the next round.

Triton-agnostic: a ``Transport`` reads requests and makes and sends responses, so ``model.py`` stays a thin
adapter and this core is tested with a fake transport and a fake clock.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch

from ..scheduler.cost_model import CostModel
from ..scheduler.profile import Profile
from ..scheduler.queue import EDFQueue, QueuedRequest
from .config import ServingConfig, configured_load, configured_policy
from .handover import HandoverClock
from .metrics import Metrics
from .requests import RequestError, SpecCache, check_finite, read_requests
from .runner import SubnetRunner

__all__ = ["Transport", "Runner", "SuperServeCore", "DEADLINE_MESSAGE", "CANCELLED_MESSAGE"]

log = logging.getLogger(__name__)

DEADLINE_MESSAGE = "deadline cannot be met: no SubNet allowed for this request finishes within its SLO; retry or relax slo_ms"
CANCELLED_MESSAGE = "request cancelled by the client before it was computed"
_SPEC_CACHE_SIZE = 1024
_SENT = object()  # a response slot whose answer went out through the request's sender


class Transport(Protocol):
    """What the core needs of a request handle (a Triton request in ``model.py``, anything in tests)."""

    def images(self, handle: Any) -> np.ndarray | None: ...  # the INPUT tensor, valid until the round returns
    def parameters(self, handle: Any) -> str: ...  # request parameters as JSON
    def result(self, handle: Any, logits: np.ndarray, subnet: int, accuracy: float) -> Any: ...  # a response
    def error(self, code: str, message: str) -> Any: ...  # code: invalid, unavailable, cancelled, internal
    def send(self, handle: Any, response: Any) -> None: ...  # now, before the round returns
    def is_cancelled(self, handle: Any) -> bool: ...


class Runner(Protocol):
    """What runs a batch: ``SubnetRunner`` (a forward pass of the SuperNet actuated in place), or the simulator's
    profiled compute (simulated time, no forward pass)."""

    input_shape: tuple[int, ...]

    def run(self, subnet: int, images: np.ndarray) -> np.ndarray: ...  # logits, one row per sample
    def warm_up(self) -> None: ...


class SuperServeCore:
    """One served SuperNet's rounds: the live model's (``model.py``) and the simulator's, which differ only in the
    ``clock``, the ``runner`` (a forward pass, or profiled time) and the ``sender`` of early answers."""

    def __init__(self, net: torch.nn.Module | None, profile: Mapping[str, Any], config: ServingConfig,
                 transport: Transport, metrics: Metrics | None = None, clock: Callable[[], int] = time.monotonic_ns,
                 handover_samples: int | None = None, runner: Runner | None = None,
                 sender: Executor | None = None) -> None:
        if runner is None:
            runner = self._runner_for(net, profile, config)
        self.runner = runner
        self.net = getattr(runner, "net", None)  # None: simulated compute
        self.device = getattr(runner, "device", torch.device("cpu"))
        self.config = config
        self.cost = CostModel(Profile.from_dict(profile), config.overhead_per_batch_ms, config.overhead_per_sample_ms,
                              config.overhead_adapt_rate, config.slowdown_adapt_rate)
        self.max_batch = self.cost.compute.max_batch
        self.input_shape = self.runner.input_shape
        self.accuracy = [s.accuracy for s in self.cost.compute.subnets]
        self.transport = transport
        self.metrics = metrics or Metrics()
        self.clock = clock
        self._margin_ns = int(config.margin_ms * 1e6)
        self._cancel_check_ns = int(config.cancel_check_ms * 1e6)
        self._max_hold_ns = int(config.max_hold_ms * 1e6)
        self._held_since_ns = 0  # when the oldest answer held for the round's list was computed
        self._batch_ns = 0  # the current round's time in batches
        self.policy = self._make_policy()
        self.metrics.cost_model(self.cost.per_batch_ns, self.cost.per_sample_ns)
        self.handover = HandoverClock(handover_samples or self.max_batch, self.max_batch,
                                      int(config.idle_gap_ms * 1e6), int(config.idle_gap_per_answer_ms * 1e6))
        self.queue = EDFQueue()  # empty between rounds
        self.load = configured_load(config, self.max_batch)  # kept across rounds
        self._specs = SpecCache(self.cost.compute, config.default_slo_ms, config.max_slo_ms, _SPEC_CACHE_SIZE)
        self._feasibility: dict[object, bool] = {}  # RequestSpec -> meetable on an idle server, under this policy
        # A send blocks until Triton has the response (an IPC round trip per answer): early answers go out from
        # this thread while the round computes its next batch.
        self._sender = sender or ThreadPoolExecutor(max_workers=1, thread_name_prefix="superserve-sender")
        self._sending: list[Future] = []
        self.runner.warm_up()

    @staticmethod
    def _runner_for(net: torch.nn.Module, profile: Mapping[str, Any], config: ServingConfig) -> SubnetRunner:
        """The SuperNet on the configured device, checked against its profile."""
        torch.set_num_threads(config.num_threads)
        if profile.get("threads") not in (None, config.num_threads):
            log.warning("profile.json was measured with %s torch threads but the model runs %d: latencies differ",
                        profile.get("threads"), config.num_threads)
        if profile.get("space") not in (None, net.space.name):
            raise ValueError(f"profile.json is for SuperNet {profile.get('space')!r}, weights are {net.space.name!r}")
        device = torch.device("cpu" if config.device == "auto" else config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {config.device!r} is set, but torch finds no CUDA GPU here: set device cpu, "
                             "or instance_group KIND_CPU")
        if str(profile.get("device", "cpu")).split(" ")[0] != str(device):
            log.warning("profile.json was measured on %s but the model runs on %s: latencies differ",
                        profile.get("device", "cpu"), device)
        return SubnetRunner(net, profile, device)

    def _make_policy(self):
        """The configured policy over the current cost model, planning at the slowdown batches run at now."""
        return configured_policy(self.config, self.cost.profile, self._planning_factor() - 1.0)

    def _planning_factor(self) -> float:
        return (1.0 + self.config.latency_safety) * self.cost.planned_slowdown

    # One round -------------------------------------------------------------------------------------
    def serve(self, handles: Sequence[Any]) -> list[Any]:
        """Answer every request of one hand-over exactly once. Returns one entry per handle: its response, or
        None where the answer already went out through the request's sender."""
        now = self.clock()
        transport = self.transport
        self.metrics.round(len(handles))
        responses: list[Any] = [None] * len(handles)
        valid, invalid = read_requests(handles, transport, self._specs, self.input_shape, self.max_batch)
        for slot, exc in invalid:
            responses[slot] = self._invalid(exc)
        samples = sum(images.shape[0] for _, _, images, _ in valid)
        gap = self.handover.busy_gap_ns(now)  # Triton's turn-around since the previous round, unless idle
        self._batch_ns = 0
        head = self.handover.start(now, samples, len(valid))
        queue = self.queue
        load = self.load
        load.start_round(self.handover.unseen_since(), head, now, samples)
        for position, (slot, handle, images, spec) in enumerate(valid):
            if not self._feasible(spec):
                responses[slot] = self._refuse(images)
                continue
            arrival = HandoverClock.arrival(head, now, position, len(valid), self.config.arrival_spread)
            queue.push(QueuedRequest(arrival + spec.slo_ns, arrival, spec.lo, spec.hi, (slot, handle, images),
                                     images.shape[0]))
            load.arrived(arrival, images.shape[0])
        held: list[QueuedRequest] = []  # computed, answered in the returned list
        try:
            while queue:
                self._serve_next(responses, held)
        except Exception:  # a bug, not a bad request: still one answer for every request
            log.exception("a round failed; answering its unanswered requests with an internal error")
            queue.remove_if(lambda r: True)
        for sending in self._sending:  # every answer is out when the round returns
            for slot, response in sending.result():  # a send that failed: the list is the last way out
                responses[slot] = response
        self._sending.clear()
        end = self.clock()
        for request in held:
            self.metrics.outcome("on_time" if end <= request.deadline_ns else "late")
        listed = len(responses)
        for slot, response in enumerate(responses):
            if response is None:
                self.metrics.outcome("error")
                responses[slot] = transport.error("internal", "the server failed to serve this request")
            elif response is _SENT:
                responses[slot] = None
                listed -= 1
        self.metrics.queue_length(0)
        self.handover.end(end, listed)
        if self.cost.observe_round(samples, gap + end - now - self._batch_ns):
            self._replan()
        return responses

    def _serve_next(self, responses: list[Any], held: list[QueuedRequest]) -> None:
        """Ask the policy for the next batch of the round's queue, run it, and place its answers."""
        queue, transport = self.queue, self.transport
        now = self.clock()
        started = time.perf_counter_ns()
        self.load.remember_burst(now)
        decision = self.policy.decide(queue, now, self.load)
        decided_ns = time.perf_counter_ns() - started
        if decision is None:
            request = queue.pop_head()
            responses[request.payload[0]] = self._refuse(request.payload[2])
            return
        batch = queue.pop_batch(decision.subnet, decision.batch_size)
        self.metrics.queue_length(len(queue))
        if self._cancel_check_ns:
            batch = self._drop_cancelled(batch, now, responses)
            if not batch:
                return
        batch, images = self._gather(batch, responses)
        if not batch:
            return
        self.metrics.decision(batch[0].deadline_ns - now, decided_ns)
        size = sum(r.size for r in batch)
        if held:
            finish = now + self._planned_ns(decision.subnet, size)
            if finish - self._held_since_ns > self._max_hold_ns or \
                    finish > min(r.deadline_ns for r in held) - self._margin_ns:
                self._send_held(held, responses)  # they cannot wait for this batch and the rest of the round
        subnet = decision.subnet
        try:
            logits = self.runner.run(subnet, images)
        except Exception as exc:  # a failure reaches every request of the batch, and only them
            log.exception("batch on SubNet %d failed", subnet)
            for request in batch:
                self.metrics.outcome("error")
                responses[request.payload[0]] = transport.error("internal", f"inference failed: {exc}")
            return
        accuracy = self.accuracy[subnet]
        self.metrics.batch(subnet, size, accuracy)
        offset = 0
        for request in batch:
            slot, handle, _ = request.payload
            responses[slot] = transport.result(handle, logits[offset:offset + request.size], subnet, accuracy)
            offset += request.size
        done = self.clock()
        if not held:
            self._held_since_ns = done
        held.extend(batch)
        self._batch_ns += done - now
        if self.cost.observe(subnet, size, done - now):
            self._replan()

    def _gather(self, batch: list[QueuedRequest], responses: list[Any]) -> tuple[list[QueuedRequest], np.ndarray]:
        """The batch's inputs as one array. Their values are checked here, once a batch rather than once a
        request: a request holding NaN or Inf is answered INVALID_ARGUMENT alone, and the rest run without it."""
        images = batch[0].payload[2] if len(batch) == 1 else np.concatenate([r.payload[2] for r in batch])
        try:
            check_finite(images)
        except RequestError:  # rare: answer the requests that hold the bad values, gather the rest again
            valid = []
            for request in batch:
                try:
                    check_finite(request.payload[2])
                    valid.append(request)
                except RequestError as exc:
                    responses[request.payload[0]] = self._invalid(exc)
            return self._gather(valid, responses) if valid else (valid, images)
        return batch, images

    def _refuse(self, images: np.ndarray) -> Any:
        """The answer to a request no SubNet can serve in time: its input's values are checked first, so that a
        bad input is reported as such whatever the load."""
        try:
            check_finite(images)
        except RequestError as exc:
            return self._invalid(exc)
        self.metrics.outcome("shed")
        return self.transport.error("unavailable", DEADLINE_MESSAGE)

    def _invalid(self, exc: RequestError) -> Any:
        """The answer to a malformed request: INVALID_ARGUMENT, saying what to fix."""
        self.metrics.outcome("error")
        return self.transport.error("invalid", str(exc))

    def _replan(self) -> None:
        """The cost model moved: a new policy over it."""
        self.policy = self._make_policy()
        self._feasibility.clear()
        self.metrics.cost_model(self.cost.per_batch_ns, self.cost.per_sample_ns)

    def _planned_ns(self, subnet: int, samples: int) -> int:
        return int(self._planning_factor() * self.cost.profile.latency_ns(subnet, samples))

    def _send_held(self, held: list[QueuedRequest], responses: list[Any]) -> None:
        now = self.clock()
        answers = []
        for request in held:
            slot, handle, _ = request.payload
            answers.append((slot, handle, responses[slot]))
            responses[slot] = _SENT
            self.metrics.outcome("on_time" if now <= request.deadline_ns else "late")
        held.clear()
        self._sending.append(self._sender.submit(self._send_all, answers))

    def _send_all(self, answers: list[tuple[int, Any, Any]]) -> list[tuple[int, Any]]:
        """Send each answer; returns (slot, response) of those whose send failed."""
        failed = []
        for slot, handle, response in answers:
            try:
                self.transport.send(handle, response)
            except Exception:
                log.exception("sending an answer early failed; it goes back in the round's list")
                failed.append((slot, response))
        return failed

    def close(self) -> None:
        """Stop the sender thread (the model is unloading)."""
        self._sender.shutdown(wait=True)

    def _drop_cancelled(self, batch: list[QueuedRequest], now: int, responses: list[Any]) -> list[QueuedRequest]:
        """Requests whose client gave up are answered CANCELLED before any compute. Asking is an IPC round trip
        in Triton's Python backend, so only requests that waited ``cancel_check_ms`` are asked."""
        asked_before = now - self._cancel_check_ns
        live = []
        for request in batch:
            if request.arrival_ns <= asked_before and self.transport.is_cancelled(request.payload[1]):
                self.metrics.outcome("cancelled")
                responses[request.payload[0]] = self.transport.error("cancelled", CANCELLED_MESSAGE)
            else:
                live.append(request)
        return live

    def _feasible(self, spec) -> bool:
        feasible = self._feasibility.get(spec)
        if feasible is None:
            if len(self._feasibility) >= _SPEC_CACHE_SIZE:
                self._feasibility.clear()
            feasible = self._feasibility[spec] = self.policy.feasible(spec.lo, spec.hi, spec.slo_ns)
        return feasible
