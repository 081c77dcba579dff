"""A discrete-event SIMULATOR of SuperServe: replays an arrival trace through the same policy, EDF queue and
hand-over estimate as the live server, with profiled latencies instead of forward passes, on any number of
workers. For exploring paper-scale rates; its results are simulated and labelled so.

``simulate_router`` runs the router of a model with several workers: the same ``Dispatcher`` the live router
drives from its threads, here driven by events, with workers that can be killed and brought back.

It follows the live server's rounds: a free worker takes every request that has arrived (up to the hand-over
size), dates them as the live model does (``HandoverClock``: it cannot see when they arrived), and serves them
in the batches the policy picks until the round is empty. An answer waits for the end of its round unless the
next batch would make it late or hold it longer than ``max_hold_ms``, as in the live server; its outcome is judged
on its true arrival. Like the live benchmark, it can replay a trace's last seconds first, unmeasured
(``lead_in_s``), so that a run starts with the arrival rates and rounds they leave, not cold.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

from ..scheduler.dispatcher import Dispatcher
from ..scheduler.load import LoadEstimate
from ..scheduler.policies import Policy
from ..scheduler.queue import EDFQueue, QueuedRequest
from .handover import HandoverClock

__all__ = ["SimulatedRecord", "simulate", "simulate_router"]


@dataclass(slots=True)
class SimulatedRecord:
    scheduled_s: float
    latency_ms: float
    outcome: str  # on_time, late, shed
    subnet: int = -1
    accuracy: float = float("nan")
    send_error_ms: float = 0.0


def simulate(arrivals_s, policy: Policy, slo_ms: float, workers: int = 1, overhead_ms: float = 0.0,
             params: dict | None = None, shed_ms: float = 0.0, handover_samples: int = 256,
             idle_gap_ms: float = 1.0, latency_safety: float = 0.0,
             max_hold_ms: float = 20.0, lead_in_s: float = 0.0,
             arrival_spread: float = 1.0, rate_window_ms: float = 500.0,
             burst_memory_ms: float = 0.0, duration_s: float | None = None) -> list[SimulatedRecord]:
    """Every arrival ends in one record. ``overhead_ms`` is added to each batch (gathering inputs, building
    answers); ``shed_ms`` is the worker time one refusal costs. Batches are planned at ``1 + latency_safety``
    times their latency when deciding whether the answers already computed can wait for the next one. With
    ``lead_in_s``, the trace's last ``lead_in_s`` (of ``duration_s``, by default its last arrival) are replayed
    first and the trace follows at once, as the live benchmark's lead-in; only the trace's own arrivals are
    recorded. ``arrival_spread``, ``rate_window_ms`` and ``burst_memory_ms`` date a round's requests and estimate
    arrival rates as the live server's settings of those names."""
    profile = policy.profile
    lo, hi = 0, profile.size - 1
    if params and "subnet" in params:
        lo = hi = int(params["subnet"])
    slo_ns = int(slo_ms * 1e6)
    overhead_ns, shed_ns, max_hold_ns = int(overhead_ms * 1e6), int(shed_ms * 1e6), int(max_hold_ms * 1e6)
    margin_ns = policy.margin_ns
    end = duration_s if duration_s is not None else (arrivals_s[-1] if len(arrivals_s) else 0.0)
    lead_in = [t - (end - lead_in_s) for t in arrivals_s if t >= end - lead_in_s] if lead_in_s else []
    arrivals = [int(t * 1e9) for t in lead_in] + [int((t + lead_in_s) * 1e9) for t in arrivals_s]
    records: list[SimulatedRecord | None] = [None] * len(arrivals)
    clocks = [HandoverClock(handover_samples, 1, int(idle_gap_ms * 1e6)) for _ in range(workers)]
    free = [(0, w) for w in range(workers)]  # (time the worker is free, worker)
    queue = EDFQueue()
    load = LoadEstimate(int(rate_window_ms * 1e6), burst_memory_ns=int(burst_memory_ms * 1e6),
                        round_min_samples=profile.max_batch)
    feasible = policy.feasible(lo, hi, slo_ns)
    i, n = 0, len(arrivals)

    def finish(request: QueuedRequest, done_ns: int, subnet: int) -> None:
        true_arrival = arrivals[request.payload]
        records[request.payload] = SimulatedRecord(true_arrival / 1e9, (done_ns - true_arrival) / 1e6,
                                                   "on_time" if done_ns <= true_arrival + slo_ns else "late", subnet,
                                                   profile.subnets[subnet].accuracy)

    while i < n:
        free_ns, worker = heapq.heappop(free)
        now = max(free_ns, arrivals[i])
        taken = []
        while i < n and arrivals[i] <= now and len(taken) < handover_samples:
            taken.append(i)
            i += 1
        head = clocks[worker].start(now, len(taken), len(taken))
        load.start_round(clocks[worker].unseen_since(), head, now, len(taken))
        for position, k in enumerate(taken):
            if not feasible:
                records[k] = SimulatedRecord(arrivals[k] / 1e9, 0.0, "shed")
                continue
            arrival = HandoverClock.arrival(head, now, position, len(taken), arrival_spread)
            queue.push(QueuedRequest(arrival + slo_ns, arrival, lo, hi, payload=k))
            load.arrived(arrival)
        held: list[tuple[QueuedRequest, int]] = []  # computed, waiting for the end of the round
        while len(queue):
            load.remember_burst(now)
            decision = policy.decide(queue, now, load)
            if decision is None:
                k = queue.pop_head().payload
                records[k] = SimulatedRecord(arrivals[k] / 1e9, (now - arrivals[k]) / 1e6, "shed")
                now += shed_ns
                continue
            batch = queue.pop_batch(decision.subnet, decision.batch_size)
            latency = profile.latency_ns(decision.subnet, len(batch)) + overhead_ns
            planned_end = now + (1.0 + latency_safety) * latency
            if held and (planned_end - held_since > max_hold_ns or
                         planned_end > min(r.deadline_ns for r, _ in held) - margin_ns):
                for request, subnet in held:  # they cannot wait for this batch: sent now
                    finish(request, now, subnet)
                held.clear()
            now += latency
            if not held:
                held_since = now
            held.extend((request, decision.subnet) for request in batch)
        for request, subnet in held:
            finish(request, now, subnet)
        clocks[worker].end(now)
        heapq.heappush(free, (now, worker))
    measured = records[len(lead_in):]
    for record in measured:  # times in the trace's own clock
        record.scheduled_s -= lead_in_s
    return measured  # type: ignore[return-value]


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
