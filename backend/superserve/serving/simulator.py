"""A discrete-event SIMULATOR of SuperServe, for traces and scales beyond this machine; its results are simulated
and labelled so.

``simulate`` runs one worker's rounds by the live model's own serving loop: the same ``SuperServeCore`` object the
Triton model drives, on simulated time, with profiled latencies instead of forward passes (``ProfiledRunner``) and
Triton's hand-overs replayed: whenever the model is free, it is handed every request that has arrived. Everything
else (dating, checks, the EDF queue, the load estimate, the policy, the cost model, shedding, holding answers for
the end of a round) is the server's code.

``simulate_router`` runs the router of a model with several workers: the live ``Router`` object itself, its steps
(intake, the next batch for a free worker, answers, the cost model, a lost worker and its return) driven by events
on simulated time instead of by its threads, with workers that can be killed and brought back.
"""

from __future__ import annotations

import heapq
import itertools
import json
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..scheduler.profile import Profile
from .config import ServingConfig
from .core import SuperServeCore
from .router import Router

__all__ = ["SimulatedRecord", "ProfiledRunner", "simulate", "simulate_router", "simulate_model"]


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


def _with_lead_in(arrivals_s, lead_in_s: float, duration_s: float | None) -> tuple[list[int], int]:
    """Arrival times in ns with the trace's last ``lead_in_s`` (of ``duration_s``, by default its last arrival)
    replayed first, as the live benchmark's lead-in; and how many of them the lead-in is."""
    end = duration_s if duration_s is not None else (arrivals_s[-1] if len(arrivals_s) else 0.0)
    lead_in = [t - (end - lead_in_s) for t in arrivals_s if t >= end - lead_in_s] if lead_in_s else []
    return [int(t * 1e9) for t in lead_in] + [int((t + lead_in_s) * 1e9) for t in arrivals_s], len(lead_in)


def _record(arrival_ns: int, answered_ns: int, response: tuple, slo_ns: int, lead_in_s: float) -> SimulatedRecord:
    """What the client of a request that arrived at ``arrival_ns`` and got ``response`` at ``answered_ns`` saw."""
    scheduled_s, latency_ms = arrival_ns / 1e9 - lead_in_s, (answered_ns - arrival_ns) / 1e6
    if response[0] == "result":
        outcome = "on_time" if answered_ns <= arrival_ns + slo_ns else "late"
        return SimulatedRecord(scheduled_s, latency_ms, outcome, response[1], response[2])
    return SimulatedRecord(scheduled_s, latency_ms, "shed" if response[1] == "unavailable" else "error")


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
    arrivals, first = _with_lead_in(arrivals_s, lead_in_s, duration_s)
    slo_ns, turnaround_ns = int(slo_ms * 1e6), int(turnaround_ms * 1e6)
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
            records[handle - first] = _record(arrivals[handle], when, response, slo_ns, lead_in_s)
        transport.sent_at.clear()
        free_ns = done_ns + turnaround_ns
        i = j
    return records


class _SimulatedWorker:
    """A worker of the simulated router: its compute is the simulator's events; stopping it is its death."""

    def __init__(self, index: int) -> None:
        self.name, self.where = f"simulated worker {index}", "in the simulator"

    def alive(self) -> bool:
        return True

    def stop(self) -> None:
        pass


def simulate_router(arrivals_s, profile: Mapping[str, Any], config: ServingConfig, slo_ms: float,
                    workers: int | None = None, params: dict | None = None,
                    overhead_ms: tuple[float, float] = (0.0, 0.0), kills: Sequence[tuple[float, int]] = (),
                    restart_s: float | None = None, lead_in_s: float = 0.0,
                    duration_s: float | None = None) -> list[SimulatedRecord]:
    """The live ``Router`` of a model with ``workers`` workers (default: those ``config`` sets), driven by events
    on simulated time instead of its threads: each request is handed to ``Router.serve`` at its arrival (dated,
    checked, admitted or refused, queued); a free worker takes its next batch by ``Router.next_batch``; a batch takes
    its profiled latency plus ``overhead_ms`` (per batch, per sample), after which the router frees the worker,
    takes its next batch, answers and folds the batch's time into its cost model, in the live order. ``kills``:
    (time s, worker) at which a worker dies (``Router.lose``: its batch requeued or refused as live); it is back
    ``restart_s`` later (None: never). ``lead_in_s`` and ``duration_s`` as in ``simulate``. Every arrival of the
    trace ends in one record."""
    clock = _SimulatedTime()
    workers = workers if workers is not None else config.workers + len(config.remote_list())
    input_shape = tuple(profile.get("input_shape", (1,)))
    transport = _SimulatedTransport(clock, np.zeros((1, *input_shape), np.float32),
                                    json.dumps({"slo_ms": slo_ms, **(params or {})}))
    router = Router(profile, config, transport, [_SimulatedWorker(w) for w in range(workers)], clock=clock,
                    threads=False)
    for w in range(workers):
        router.up(w, restarted=False)
    compute = router.cost.compute
    logits = np.zeros((compute.max_batch, int(profile.get("num_classes", 1))), np.float32)
    per_batch_ns, per_sample_ns = int(overhead_ms[0] * 1e6), int(overhead_ms[1] * 1e6)
    arrivals, first = _with_lead_in(arrivals_s, lead_in_s, duration_s)
    events: list[tuple[int, int, str, int, Any]] = []  # (time, order, kind, worker, batch)
    order = itertools.count()
    running: list[Any] = [None] * workers  # the batch each worker computes (a done event for another is void)
    for t_s, w in kills:
        heapq.heappush(events, (int((t_s + lead_in_s) * 1e9), next(order), "kill", w, None))

    def start(w: int, batch) -> None:
        running[w] = batch
        if batch is not None:
            assignment = batch[0]
            samples = assignment.samples
            done = clock.now + compute.latency_ns(assignment.subnet, samples) + per_batch_ns + samples * per_sample_ns
            heapq.heappush(events, (done, next(order), "done", w, batch))

    def dispatch() -> None:
        for w in range(workers):
            if router.dispatcher.idle(w) and router.dispatcher.queue:
                start(w, router.next_batch(w, wait=False))

    refused: dict[int, tuple[int, Any]] = {}
    i, n = 0, len(arrivals)
    while i < n or events:
        if i < n and (not events or arrivals[i] <= events[0][0]):
            clock.now = arrivals[i]
            response = router.serve([i])[0]
            if response is not None:  # refused on arrival, in the hand-over's own answers
                refused[i] = (clock.now, response)
            i += 1
        else:
            clock.now, _, kind, w, batch = heapq.heappop(events)
            if kind == "done":
                if batch is not running[w]:
                    continue  # the worker died while running it: the batch went back to the queue then
                router.finish(w, batch[0])
                start(w, router.next_batch(w, wait=False))
                router.answer(batch[0], logits[:batch[0].samples])
                router.observe(batch[0])
            elif kind == "kill":
                if not router.dispatcher.up[w]:
                    continue  # already down
                running[w] = None
                router.lose(w, RuntimeError("killed by the simulator"))
                if restart_s is not None:
                    heapq.heappush(events, (clock.now + int(restart_s * 1e9), next(order), "back", w, None))
            elif not router.dispatcher.up[w]:  # back
                router.up(w, restarted=True)
        dispatch()
    slo_ns = int(slo_ms * 1e6)
    return [_record(arrivals[k], *(refused[k] if k in refused else transport.sent_at[k]), slo_ns, lead_in_s)
            for k in range(first, n)]


def simulate_model(arrivals_s, profile: Mapping[str, Any], config: ServingConfig, slo_ms: float,
                   handover_samples: int, overhead_ms: tuple[float, float], lead_in_s: float = 0.0,
                   duration_s: float | None = None) -> list[SimulatedRecord]:
    """The model ``config`` sets, as the server runs it: with several workers its router (``simulate_router``),
    else one worker's rounds in Triton's hand-overs of ``handover_samples`` (``simulate``)."""
    if config.routed:
        return simulate_router(arrivals_s, profile, config, slo_ms, overhead_ms=overhead_ms, lead_in_s=lead_in_s,
                               duration_s=duration_s)
    return simulate(arrivals_s, profile, config, slo_ms, handover_samples=handover_samples, overhead_ms=overhead_ms,
                    lead_in_s=lead_in_s, duration_s=duration_s)
