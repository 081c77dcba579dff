"""A discrete-event SIMULATOR of SuperServe, for traces and scales beyond this machine; its results are simulated
and labelled so.

``simulate`` runs one worker's rounds by the live model's own serving loop: the same ``SuperServeCore`` object the
Triton model drives, on simulated time, with profiled latencies instead of forward passes (``ProfiledRunner``) and
Triton's hand-overs replayed: whenever the model is free, it is handed every request that has arrived. Everything
else (dating, checks, the EDF queue, the load estimate, the policy, the cost model, shedding, holding answers for
the end of a round) is the server's code.

``simulate_router`` runs the router of a model with several workers: the same ``Dispatcher`` the live router
drives from its threads, here driven by events, with workers that can be killed and brought back.
"""

from __future__ import annotations

import heapq
import itertools
import json
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..scheduler.dispatcher import Dispatcher
from ..scheduler.load import LoadEstimate
from ..scheduler.policies import Policy
from ..scheduler.profile import Profile
from ..scheduler.queue import QueuedRequest
from .config import ServingConfig
from .core import SuperServeCore

__all__ = ["SimulatedRecord", "ProfiledRunner", "simulate", "simulate_router"]


@dataclass(slots=True)
class SimulatedRecord:
    scheduled_s: float
    latency_ms: float
    outcome: str  # on_time, late, shed
    subnet: int = -1
    accuracy: float = float("nan")
    send_error_ms: float = 0.0


class _SimulatedTime:
    """The simulator's clock, in ns: it moves only when a batch runs or the server waits for an arrival."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class ProfiledRunner:
    """The simulator's compute: a batch takes its profiled latency plus the serving overheads in simulated time, and
    answers zeros (no forward pass)."""

    def __init__(self, profile: Profile, clock: _SimulatedTime, input_shape, num_classes: int,
                 per_batch_ns: int = 0, per_sample_ns: int = 0) -> None:
        self.profile, self.clock = profile, clock
        self.input_shape = tuple(input_shape)
        self.per_batch_ns, self.per_sample_ns = per_batch_ns, per_sample_ns
        self._logits = np.zeros((profile.max_batch, num_classes), np.float32)

    def run(self, subnet: int, images: np.ndarray) -> np.ndarray:
        samples = images.shape[0]
        self.clock.now += self.profile.latency_ns(subnet, samples) + self.per_batch_ns + samples * self.per_sample_ns
        return self._logits[:samples]

    def warm_up(self) -> None:
        pass


class _AtOnce(Executor):
    """Early answers leave the moment they are sent: sending takes no simulated time."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class _SimulatedTransport:
    """Requests are arrival indices; an answer is a tuple, and one sent before its round returns is stamped."""

    def __init__(self, clock: _SimulatedTime, images: np.ndarray, parameters: str) -> None:
        self.clock, self._images, self._parameters = clock, images, parameters
        self.sent_at: dict[int, tuple[int, Any]] = {}

    def images(self, handle: int) -> np.ndarray:
        return self._images

    def parameters(self, handle: int) -> str:
        return self._parameters

    def result(self, handle: int, logits: np.ndarray, subnet: int, accuracy: float) -> tuple:
        return ("result", subnet, accuracy)

    def error(self, code: str, message: str) -> tuple:
        return ("error", code)

    def send(self, handle: int, response: Any) -> None:
        self.sent_at[handle] = (self.clock.now, response)

    def is_cancelled(self, handle: int) -> bool:
        return False


def simulate(arrivals_s, profile: Mapping[str, Any], config: ServingConfig, slo_ms: float,
             params: dict | None = None, handover_samples: int = 128, overhead_ms: tuple[float, float] = (0.0, 0.0),
             turnaround_ms: float = 0.0, lead_in_s: float = 0.0,
             duration_s: float | None = None) -> list[SimulatedRecord]:
    """One worker's rounds, by the live model's own serving loop (``SuperServeCore``, with ``config``) on simulated
    time: Triton hands the model every request that has arrived (up to ``handover_samples``) whenever the model is
    free, ``turnaround_ms`` after its previous round; a batch takes its profiled latency plus ``overhead_ms`` (per
    batch, per sample). ``profile``: profile.json's form. With ``lead_in_s``, the trace's last ``lead_in_s`` (of
    ``duration_s``, by default its last arrival) are replayed first, as the live benchmark's lead-in; only the
    trace's own arrivals are recorded, each in one record."""
    clock = _SimulatedTime()
    compute = Profile.from_dict(profile)
    input_shape = tuple(profile.get("input_shape", (1,)))
    runner = ProfiledRunner(compute, clock, input_shape, int(profile.get("num_classes", 1)),
                            int(overhead_ms[0] * 1e6), int(overhead_ms[1] * 1e6))
    transport = _SimulatedTransport(clock, np.zeros((1, *input_shape), np.float32),
                                    json.dumps({"slo_ms": slo_ms, **(params or {})}))
    core = SuperServeCore(None, profile, config, transport, clock=clock, handover_samples=handover_samples,
                          runner=runner, sender=_AtOnce())
    end = duration_s if duration_s is not None else (arrivals_s[-1] if len(arrivals_s) else 0.0)
    lead_in = [t - (end - lead_in_s) for t in arrivals_s if t >= end - lead_in_s] if lead_in_s else []
    arrivals = [int(t * 1e9) for t in lead_in] + [int((t + lead_in_s) * 1e9) for t in arrivals_s]
    first, slo_ns, turnaround_ns = len(lead_in), int(slo_ms * 1e6), int(turnaround_ms * 1e6)
    records: list[SimulatedRecord | None] = [None] * len(arrivals_s)
    i, n, free_ns = 0, len(arrivals), 0
    while i < n:
        clock.now = max(free_ns, arrivals[i])
        j = i
        while j < n and arrivals[j] <= clock.now and j - i < handover_samples:
            j += 1
        handles = list(range(i, j))
        responses = core.serve(handles)
        done_ns = clock.now
        for handle, response in zip(handles, responses):
            if handle < first:
                continue  # the lead-in: not measured
            when, response = transport.sent_at.pop(handle) if response is None else (done_ns, response)
            arrival = arrivals[handle]
            if response[0] == "result":
                outcome = "on_time" if when <= arrival + slo_ns else "late"
                record = SimulatedRecord(arrival / 1e9 - lead_in_s, (when - arrival) / 1e6, outcome, response[1],
                                         response[2])
            else:
                record = SimulatedRecord(arrival / 1e9 - lead_in_s, (when - arrival) / 1e6,
                                         "shed" if response[1] == "unavailable" else "error")
            records[handle - first] = record
        transport.sent_at.clear()
        free_ns = done_ns + turnaround_ns
        i = j
    return records


def simulate_router(arrivals_s, make_policy: Callable[[int], Policy], slo_ms: float, workers: int = 1,
                    overhead_ms: float = 0.0, params: dict | None = None, kills: Sequence[tuple[float, int]] = (),
                    restart_s: float | None = None, rate_window_ms: float = 500.0,
                    burst_memory_ms: float = 0.0) -> list[SimulatedRecord]:
    """The router over ``workers`` simulated workers: the live router's books (``Dispatcher``: one EDF queue from
    each request's arrival, the policy made by ``make_policy(workers up)``), driven by events instead of threads,
    each batch taking its profiled latency plus ``overhead_ms``. ``kills``: (time s, worker) at which a worker
    dies; its batch is requeued or refused as live, and it is back ``restart_s`` later (None: never). Every
    arrival ends in one record."""
    max_batch = make_policy(1).profile.max_batch
    dispatcher = Dispatcher(make_policy, workers, LoadEstimate(int(rate_window_ms * 1e6),
                                                               burst_memory_ns=int(burst_memory_ms * 1e6),
                                                               round_min_samples=max_batch))
    for w in range(workers):
        dispatcher.restore(w)
    profile = dispatcher.policy.profile
    lo, hi = (int(params["subnet"]),) * 2 if params and "subnet" in params else (0, profile.size - 1)
    slo_ns, overhead_ns = int(slo_ms * 1e6), int(overhead_ms * 1e6)
    arrivals = [int(t * 1e9) for t in arrivals_s]
    records: list[SimulatedRecord | None] = [None] * len(arrivals)
    events: list[tuple[int, int, str, int, int]] = []  # (time, order, kind, worker, batch token)
    order = itertools.count()
    tokens = [0] * workers  # a batch's done event counts only if its worker has not died since
    for t_s, w in kills:
        heapq.heappush(events, (int(t_s * 1e9), next(order), "kill", w, 0))

    def shed(request: QueuedRequest, now: int) -> None:
        k = request.payload
        records[k] = SimulatedRecord(arrivals[k] / 1e9, (now - arrivals[k]) / 1e6, "shed")

    idle = list(range(workers))  # up and running nothing, in the order they became so

    def dispatch(now: int) -> None:
        while idle and dispatcher.queue:
            w = idle[0]
            assignment, refused = dispatcher.take(w, now)
            for request in refused:
                shed(request, now)
            if assignment is not None:
                idle.pop(0)
                tokens[w] += 1
                done = now + profile.latency_ns(assignment.subnet, assignment.samples) + overhead_ns
                heapq.heappush(events, (done, next(order), "done", w, tokens[w]))

    i, n = 0, len(arrivals)
    while i < n or events:
        if i < n and (not events or arrivals[i] <= events[0][0]):
            now = arrivals[i]
            request = QueuedRequest(now + slo_ns, now, lo, hi, payload=i)
            if dispatcher.workers_up and dispatcher.policy.feasible(lo, hi, slo_ns):
                dispatcher.push(request)
            else:
                shed(request, now)
            i += 1
        else:
            now, _, kind, w, token = heapq.heappop(events)
            if kind == "done":
                if token != tokens[w]:
                    continue  # the worker died while running it: the batch went back to the queue then
                assignment = dispatcher.finish(w)
                idle.append(w)
                accuracy = profile.subnets[assignment.subnet].accuracy
                for request in assignment.batch:
                    k = request.payload
                    records[k] = SimulatedRecord(arrivals[k] / 1e9, (now - arrivals[k]) / 1e6,
                                                 "on_time" if now <= request.deadline_ns else "late",
                                                 assignment.subnet, accuracy)
            elif kind == "kill":
                if not dispatcher.up[w]:
                    continue  # already down
                tokens[w] += 1
                if w in idle:
                    idle.remove(w)
                _, refused = dispatcher.lose(w, now)
                for request in refused:
                    shed(request, now)
                if restart_s is not None:
                    heapq.heappush(events, (now + int(restart_s * 1e9), next(order), "back", w, 0))
            elif not dispatcher.up[w]:  # back
                dispatcher.restore(w)
                idle.append(w)
        dispatch(now)
    return records  # type: ignore[return-value]
