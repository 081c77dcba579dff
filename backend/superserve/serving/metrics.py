"""What the serving core reports, and a buffer that keeps reporting off the hot path.

In Triton's Python backend every Prometheus update is an IPC round trip to the server process (~0.1 ms on an idle
2-core machine) made with the GIL held, so the serving thread stalls while one runs. The core therefore writes
into ``MetricsBuffer`` (plain Python) and the adapter drains it periodically; histograms are binned here, so a
drain costs a bounded number of updates however many observations it holds.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter, deque
from dataclasses import dataclass, field

__all__ = ["Metrics", "MetricsBuffer", "MetricsSnapshot", "Binned", "OUTCOMES", "HISTOGRAMS", "histogram_bounds"]

OUTCOMES = ("on_time", "late", "shed", "error", "cancelled")
HISTOGRAMS = {  # name -> (help, default bucket upper bounds; +Inf is implied)
    "batch_size": ("Samples per dispatched batch", (1, 2, 4, 8, 12, 16)),
    "served_accuracy": ("Profiled accuracy of each batch's SubNet", (0.9, 0.95, 0.97, 0.98, 0.99, 1.0)),
    "slack_ms": ("Head request's remaining slack at dispatch", (1, 2, 5, 10, 20, 50, 100, 1000)),
    "decision_us": ("Policy decision time", (1, 5, 10, 25, 50, 100, 1000)),
    "round_requests": ("Requests per execute() hand-over (round)", (1, 2, 4, 8, 16, 32, 64, 128, 256)),
}
MAX_ACCURACY_BUCKETS = 12
SLACK_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 20.0)  # of the default SLO


def _powers_of_two(top: int) -> tuple[int, ...]:
    bounds = [1]
    while bounds[-1] < top:
        bounds.append(min(2 * bounds[-1], top))
    return tuple(bounds)


def histogram_bounds(profile: dict, default_slo_ms: float, handover_samples: int) -> dict[str, tuple]:
    """Bucket bounds that fit the served model rather than the digits': batch sizes up to its largest batch,
    the served SubNets' own accuracies (a bucket per SubNet, at most 12), slack as fractions of its default SLO,
    hand-overs up to its largest."""
    accuracies = sorted({round(s["accuracy"], 4) for s in profile["subnets"]})
    if len(accuracies) > MAX_ACCURACY_BUCKETS:
        step = (len(accuracies) - 1) / (MAX_ACCURACY_BUCKETS - 1)
        accuracies = sorted({accuracies[round(i * step)] for i in range(MAX_ACCURACY_BUCKETS)})
    return {"batch_size": _powers_of_two(int(profile["max_batch_size"])),
            "served_accuracy": tuple(accuracies),
            "slack_ms": tuple(round(default_slo_ms * f, 3) for f in SLACK_FRACTIONS),
            "decision_us": HISTOGRAMS["decision_us"][1],
            "round_requests": _powers_of_two(max(1, handover_samples))}


class Metrics:
    """The interface the core reports through; this base records nothing."""

    def outcome(self, outcome: str, count: int = 1) -> None:
        """A request ended: on_time, late, shed (refused UNAVAILABLE), error (bad request / failure), cancelled."""

    def queue_length(self, length: int) -> None:
        """Waiting requests after a change."""

    def decision(self, slack_ns: int, decision_ns: int) -> None:
        """The head's slack when a batch was chosen, and how long the policy took to choose it."""

    def batch(self, subnet: int, size: int, accuracy: float) -> None:
        """A batch of ``size`` samples ran on ``subnet`` (profiled accuracy ``accuracy``)."""

    def cost_model(self, per_batch_ns: float, per_sample_ns: float) -> None:
        """The serving overheads (per batch, per sample) the policy currently plans with."""

    def round(self, requests: int) -> None:
        """Triton handed over ``requests`` requests in one execute() call."""

    def worker(self, index: int, up: bool, lost: bool = False, restarted: bool = False) -> None:
        """Worker ``index`` came up (``restarted``: not for the first time) or went down (``lost``)."""

    def worker_busy(self, index: int, seconds: float) -> None:
        """Worker ``index`` spent ``seconds`` on a batch."""

    def requeued(self, count: int) -> None:
        """``count`` requests of a lost worker's batch went back into the queue."""


@dataclass
class Binned:
    """One histogram's observations since the last drain: Prometheus' cumulative bucket counts (one per bound in
    the buffer's ``bounds``, then +Inf), their sum and their count."""

    cumulative: list[int]
    total: float = 0.0
    count: int = 0


@dataclass
class MetricsSnapshot:
    outcomes: Counter = field(default_factory=Counter)
    samples: Counter = field(default_factory=Counter)  # per SubNet index
    queue_length: int = 0
    histograms: dict = field(default_factory=dict)  # name -> Binned, only those observed
    overhead_per_batch_ms: float = 0.0
    overhead_per_sample_ms: float = 0.0
    workers_up: dict = field(default_factory=dict)  # worker index -> 1 up, 0 down (its latest state)
    worker_losses: Counter = field(default_factory=Counter)
    worker_restarts: Counter = field(default_factory=Counter)
    worker_busy_s: Counter = field(default_factory=Counter)
    requeued: int = 0


class MetricsBuffer(Metrics):
    """``bounds``: histogram name -> bucket upper bounds (default: ``HISTOGRAMS``' own)."""

    def __init__(self, max_observations: int = 20_000, bounds: dict[str, tuple] | None = None) -> None:
        self.bounds = {name: (bounds or {}).get(name, default) for name, (_, default) in HISTOGRAMS.items()}
        self._lock = threading.Lock()
        self._outcomes: Counter = Counter()
        self._samples: Counter = Counter()
        self._queue_length = 0
        self._overhead_ms = (0.0, 0.0)  # per batch, per sample
        self._observations: deque = deque(maxlen=max_observations)  # oldest dropped if nobody drains
        self._workers_up: dict[int, int] = {}
        self._worker_events = (Counter(), Counter(), Counter())  # losses, restarts, busy seconds
        self._requeued = 0

    def outcome(self, outcome, count=1):
        with self._lock:
            self._outcomes[outcome] += count

    def queue_length(self, length):
        self._queue_length = length

    def decision(self, slack_ns, decision_ns):
        # Triton's counters only grow, and a histogram's sum is one: a head already past due counts as 0 slack
        self._observations.append(("slack_ms", max(0, slack_ns) / 1e6))
        self._observations.append(("decision_us", decision_ns / 1e3))

    def batch(self, subnet, size, accuracy):
        with self._lock:
            self._samples[subnet] += size
        self._observations.append(("batch_size", size))
        self._observations.append(("served_accuracy", accuracy))

    def cost_model(self, per_batch_ns, per_sample_ns):
        self._overhead_ms = (per_batch_ns / 1e6, per_sample_ns / 1e6)

    def round(self, requests):
        self._observations.append(("round_requests", requests))

    def worker(self, index, up, lost=False, restarted=False):
        with self._lock:
            self._workers_up[index] = int(up)
            self._worker_events[0][index] += lost
            self._worker_events[1][index] += restarted

    def worker_busy(self, index, seconds):
        with self._lock:
            self._worker_events[2][index] += seconds

    def requeued(self, count):
        with self._lock:
            self._requeued += count

    def drain(self) -> MetricsSnapshot:
        """Everything recorded since the last drain (counters and histograms as increments)."""
        with self._lock:
            outcomes, self._outcomes = self._outcomes, Counter()
            samples, self._samples = self._samples, Counter()
            workers_up = dict(self._workers_up)
            (losses, restarts, busy), self._worker_events = self._worker_events, (Counter(), Counter(), Counter())
            requeued, self._requeued = self._requeued, 0
        histograms: dict[str, Binned] = {}
        while True:
            try:
                name, value = self._observations.popleft()
            except IndexError:
                break
            bounds = self.bounds[name]
            binned = histograms.get(name)
            if binned is None:
                binned = histograms[name] = Binned([0] * (len(bounds) + 1))
            binned.cumulative[bisect.bisect_left(bounds, value)] += 1  # per bucket for now
            binned.total += value
            binned.count += 1
        for binned in histograms.values():
            running = 0
            for i, n in enumerate(binned.cumulative):
                running += n
                binned.cumulative[i] = running
        return MetricsSnapshot(outcomes, samples, self._queue_length, histograms, *self._overhead_ms,
                               workers_up, losses, restarts, busy, requeued)
