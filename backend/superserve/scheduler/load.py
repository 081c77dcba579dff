"""The load a policy plans for: how fast requests arrive, what the current hand-over hides, and recent bursts.

The serving loop owns one ``LoadEstimate`` per served SuperNet and updates it: every arrival (``arrived``), every
Triton hand-over (``start_round``) and, before each decision, the burst memory (``remember_burst``). Policies only
read it, so a decision is a pure function of (queue, load, profile, now).
"""

from __future__ import annotations

import math

__all__ = ["LoadEstimate"]


class LoadEstimate:
    """Arrival rates in samples per second, counted with exponential decay over two time constants: a long one
    for the load and a short one that sees a burst within a few batches. From the first arrival (or the first
    after an idle spell) a count is read over the time seen so far: read over the whole time constant, a load
    starting from cold looked a fifth of what it was for the first 100 ms, and the utilization cap let a burst at
    start-up in on the most accurate SubNets.

    ``round_min_samples``: a hand-over's own rate counts as a burst rate only if it holds at least this many
    samples (the loop sets the profile's largest batch: a cluster of 9 in the 1.5 ms of a one-request round reads
    as 6,000/s). ``burst_memory_ns``: how long the highest burst rate seen is remembered, fading (0: not at all).
    """

    def __init__(self, rate_window_ns: int = 500_000_000, burst_window_ns: int = 50_000_000,
                 burst_memory_ns: int = 0, round_min_samples: int = 1) -> None:
        self._windows_ns = (rate_window_ns, burst_window_ns)
        self._decayed = [0.0, 0.0]
        self._last_arrival_ns: int | None = None
        self._first_arrival_ns = 0  # of the arrivals counted since the estimate (re)started
        # Arrivals after this time are not in the queue yet (they wait in Triton's queue until the round ends);
        # None: every arrival is in it.
        self._unseen_since_ns: int | None = None
        self._round_rate = 0.0  # samples per second over the current round's hand-over
        self._round_samples = 0
        self.round_min_samples = round_min_samples
        # on a bursty load the next burst comes as fast as the last, and a slow batch started in the lull between
        # them meets it in full
        self._burst_memory_ns = burst_memory_ns
        self._peak_rate = 0.0
        self._peak_ns = 0

    def arrived(self, arrival_ns: int, size: int = 1) -> None:
        """Count a new request of ``size`` samples (not one put back after its worker was lost)."""
        decayed = self._decayed
        if self._last_arrival_ns is None or arrival_ns - self._last_arrival_ns > self._windows_ns[0]:
            # the first arrival, or the first after an idle spell of a long time constant: a new estimate
            self._decayed = decayed = [0.0, 0.0]
            self._first_arrival_ns = arrival_ns
            self._last_arrival_ns = arrival_ns
        if arrival_ns > self._last_arrival_ns:
            age = arrival_ns - self._last_arrival_ns
            decayed[0] = decayed[0] * math.exp(-age / self._windows_ns[0]) + size
            decayed[1] = decayed[1] * math.exp(-age / self._windows_ns[1]) + size
            self._last_arrival_ns = arrival_ns
        else:
            decayed[0] += size
            decayed[1] += size

    def arrival_rate(self, now_ns: int, burst: bool = False) -> float:
        """Recent arrivals, in samples per second; ``burst``: over the short time constant, never below the long
        one, and at least the current hand-over's own rate if it holds ``round_min_samples`` or more."""
        if self._last_arrival_ns is None:
            return 0.0
        age = max(0, now_ns - self._last_arrival_ns)
        # Over the time seen so far (at least the short time constant) until it spans a long one: the decayed
        # count of a steady rate grows to its full weight only over a time constant.
        seen = max(now_ns - self._first_arrival_ns, self._windows_ns[1])
        rates = [decayed * math.exp(-age / window) * 1e9 / (window * -math.expm1(-seen / window))
                 for decayed, window in zip(self._decayed, self._windows_ns)]
        if not burst:
            return rates[0]
        return max(*rates, self._round_rate if self._round_samples >= self.round_min_samples else 0.0)

    def start_round(self, unseen_since_ns: int, head_ns: int, now_ns: int, samples: int) -> None:
        """A hand-over of ``samples`` that arrived from ``head_ns`` on is about to be queued; what arrives from
        ``unseen_since_ns`` on stays out of sight until the round ends. The hand-over's own rate counts as a burst
        rate for this round: the short time constant takes tens of ms to see a burst in full."""
        self._unseen_since_ns = unseen_since_ns
        self._round_rate = samples * 1e9 / (now_ns - head_ns) if now_ns > head_ns else 0.0
        self._round_samples = samples

    def round_rate(self) -> float:
        """The current hand-over's own rate, samples per second (0 if it found the model idle)."""
        return self._round_rate

    def unseen_since(self) -> int | None:
        return self._unseen_since_ns

    def remember_burst(self, now_ns: int) -> None:
        """Remember the burst rate of now if it is above the remembered one, faded (the loop calls this before
        each decision)."""
        if self._burst_memory_ns:
            self.remember(now_ns, self.arrival_rate(now_ns, burst=True))

    def remember(self, now_ns: int, rate: float) -> None:
        if self._burst_memory_ns and rate >= self.peak_rate(now_ns):
            self._peak_rate, self._peak_ns = rate, now_ns

    def peak_rate(self, now_ns: int) -> float:
        """The highest burst rate remembered, faded by its age over the burst memory (0 without a memory)."""
        if not self._burst_memory_ns:
            return 0.0
        return self._peak_rate * math.exp((self._peak_ns - now_ns) / self._burst_memory_ns)


IDLE = LoadEstimate()  # what a policy reads when its caller keeps no load estimate: nothing arrives (never updated)
