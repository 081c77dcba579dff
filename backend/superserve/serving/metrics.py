"""What the serving core reports, and a buffer that keeps reporting off the hot path.

In Triton's Python backend every Prometheus update is an IPC round trip to the server process, so the
core writes into ``MetricsBuffer`` (plain Python, under a lock) and the adapter drains it periodically.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

__all__ = ["Metrics", "MetricsBuffer", "MetricsSnapshot", "OUTCOMES", "HISTOGRAMS"]

OUTCOMES = ("on_time", "late", "shed", "error", "cancelled")
HISTOGRAMS = ("batch_size", "served_accuracy", "slack_ms", "decision_us", "round_requests")


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

    def cost_model(self, overhead_per_sample_ns: float) -> None:
        """The per-sample serving overhead the policy currently plans with."""

    def round(self, requests: int) -> None:
        """Triton handed over ``requests`` requests in one execute() call."""


@dataclass
class MetricsSnapshot:
    outcomes: Counter = field(default_factory=Counter)
    samples: Counter = field(default_factory=Counter)  # per SubNet index
    queue_length: int = 0
    observations: list = field(default_factory=list)  # (histogram name, value)
    overhead_per_sample_ms: float = 0.0


class MetricsBuffer(Metrics):
    def __init__(self, max_observations: int = 20_000) -> None:
        self._lock = threading.Lock()
        self._outcomes: Counter = Counter()
        self._samples: Counter = Counter()
        self._queue_length = 0
        self._overhead_ms = 0.0
        self._observations: deque = deque(maxlen=max_observations)  # oldest dropped if nobody drains

    def outcome(self, outcome, count=1):
        with self._lock:
            self._outcomes[outcome] += count

    def queue_length(self, length):
        self._queue_length = length

    def decision(self, slack_ns, decision_ns):
        self._observations.append(("slack_ms", slack_ns / 1e6))
        self._observations.append(("decision_us", decision_ns / 1e3))

    def batch(self, subnet, size, accuracy):
        with self._lock:
            self._samples[subnet] += size
        self._observations.append(("batch_size", size))
        self._observations.append(("served_accuracy", accuracy))

    def cost_model(self, overhead_per_sample_ns):
        self._overhead_ms = overhead_per_sample_ns / 1e6

    def round(self, requests):
        self._observations.append(("round_requests", requests))

    def drain(self) -> MetricsSnapshot:
        """Everything recorded since the last drain (counters as increments)."""
        with self._lock:
            outcomes, self._outcomes = self._outcomes, Counter()
            samples, self._samples = self._samples, Counter()
        observations = []
        while True:
            try:
                observations.append(self._observations.popleft())
            except IndexError:
                break
        return MetricsSnapshot(outcomes, samples, self._queue_length, observations, self._overhead_ms)
