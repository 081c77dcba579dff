"""The serving cost model the policies plan with: profiled compute plus what serving costs around it, per batch
and per sample, times how much slower than that the machine runs right now.

The profile knows only bare forward passes. Serving also costs, inside each batch, deciding, gathering the
inputs and building one response per request, and outside the batches, Triton's turn-around between two rounds
(turning the returned answers into responses, handing the next requests over) and each round's own bookkeeping.
Both are learned from what the server really runs, as a cost per batch (or round) plus a cost per sample. On the
reference 2-core machine under a bursty load: inside batches 0.35 ms per batch and 0.014 ms per sample for the
transformer, 0.13 ms and 0.05 ms for the ResNet; between back-to-back rounds 0.9-1.3 ms per round. Charged per
sample alone, a batch of one looked 16 times dearer per sample than it is: the policy then could afford only
batches of one, which confirmed the estimate. Left out, the turn-around made the server look far faster than it
was, and at the transformer's 4,000 req/s the policy kept choosing SubNets it could not sustain. A round's cost
is planned as a batch's: at moderate load a round is one batch.

And when other work shares the cores (the clients and Triton's frontends in a burst), batches run up to twice as
long as planned for as long as the burst lasts; that slowdown is learned fast, so that the policy plans the next
batches with it. Pure Python, tested with a fake clock.
"""

from __future__ import annotations

from .profile import Profile

__all__ = ["CostModel", "DecayedLine"]

OVERHEAD_FLOOR_NS = 100_000  # lets a learned overhead of ~0 still grow
PRIOR_WEIGHT = 0.0002  # the starting values' lasting pull; a decayed history counts at most 1
REPLAN_CHANGE = 0.15  # a new plan once the overhead moved this much since the last one
REPLAN_FLOOR_NS = 50_000
SLOWDOWN_CLIP = 3.0  # one batch may count at most this slow: a stall is not the machine's speed


class DecayedLine:
    """``fixed + per_sample * n``: the weighted least-squares line through observed (n, cost), each observation
    taking ``rate`` of the weight (older ones fade), neither part below 0. One observation counts at most twice
    what the line expected of it (plus ``OVERHEAD_FLOOR_NS``): a single stall is not a cost.

    The starting values enter as two observations (at n = 1 and n = ``scale``) that fade like the rest, and as
    a lasting pull of ``PRIOR_WEIGHT``, on the per-sample part ``scale``^2 times stronger: while every
    observation has the same n, the line through them is decided by that pull, which charges what they cost to
    the fixed part.
    """

    def __init__(self, fixed_ns: float, per_sample_ns: float, scale: int, rate: float) -> None:
        self.fixed_ns, self.per_sample_ns = float(fixed_ns), float(per_sample_ns)
        self._prior = (self.fixed_ns, self.per_sample_ns)
        self._scale, self._rate = scale, rate
        self._sums = [0.0] * 5  # decayed sums of weight x (1, n, n^2, y, n*y)
        for n in (1, scale):
            self._add(0.5, n, self.at(n))

    def at(self, n: int) -> float:
        return self.fixed_ns + self.per_sample_ns * n

    def observe(self, n: int, cost_ns: float) -> None:
        cost_ns = min(max(0.0, cost_ns), 2.0 * self.at(n) + OVERHEAD_FLOOR_NS)
        self._sums = [(1.0 - self._rate) * s for s in self._sums]
        self._add(self._rate, n, cost_ns)
        w, sn, snn, sy, sny = self._sums
        prior_fixed, prior_sample = PRIOR_WEIGHT, PRIOR_WEIGHT * self._scale ** 2
        a11, a12, a22 = w + prior_fixed, sn, snn + prior_sample
        b1, b2 = sy + prior_fixed * self._prior[0], sny + prior_sample * self._prior[1]
        det = a11 * a22 - a12 * a12  # > 0: both pulls are > 0 and the data's matrix is positive semi-definite
        fixed, per_sample = (b1 * a22 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det
        if per_sample < 0:
            fixed, per_sample = b1 / a11, 0.0
        elif fixed < 0:
            fixed, per_sample = 0.0, b2 / a22
        self.fixed_ns, self.per_sample_ns = max(0.0, fixed), max(0.0, per_sample)

    def _add(self, weight: float, n: int, cost_ns: float) -> None:
        for i, term in enumerate((1.0, n, n * n, cost_ns, n * cost_ns)):
            self._sums[i] += weight * term


class CostModel:
    """``profile`` is compute + (``batch`` + ``round``).at(samples); ``planned_slowdown`` how much slower than that
    batches run now (never below 1: a machine faster than its profile is planned as profiled); ``version`` counts
    new plans.

    ``batch``: a batch's time beyond its profiled compute, from the starting values given. ``round``: a round's
    time outside its batches, plus Triton's turn-around before it when it followed the previous round back to
    back (idle time is no cost), from 0. A batch or round counts at most twice what its line expected of it,
    and a batch at most ``SLOWDOWN_CLIP`` times slow: a single stall (the stub's garbage collector, a preempted
    thread) is neither an overhead nor the machine's speed.
    """

    def __init__(self, compute: Profile, per_batch_ms: float, per_sample_ms: float, adapt_rate: float,
                 slowdown_rate: float = 0.0) -> None:
        if per_batch_ms < 0 or per_sample_ms < 0 or not 0.0 <= adapt_rate <= 1.0 or not 0.0 <= slowdown_rate <= 1.0:
            raise ValueError("overheads must be >= 0, adapt_rate and slowdown_rate within [0, 1]")
        self.compute = compute
        self.adapt_rate = adapt_rate
        self.slowdown_rate = slowdown_rate
        self.batch = DecayedLine(per_batch_ms * 1e6, per_sample_ms * 1e6, compute.max_batch, adapt_rate)
        self.round = DecayedLine(0.0, 0.0, compute.max_batch, adapt_rate)
        self.slowdown = 1.0
        self.planned_slowdown = 1.0
        self._planned = (self.overhead_ns(1), self.overhead_ns(compute.max_batch))
        self.profile = compute.with_overhead(int(self.per_batch_ns), int(self.per_sample_ns))

    @property
    def per_batch_ns(self) -> float:
        """What the plan adds to a batch's compute, whatever its size."""
        return self.batch.fixed_ns + self.round.fixed_ns

    @property
    def per_sample_ns(self) -> float:
        """What the plan adds to a batch's compute for each of its samples."""
        return self.batch.per_sample_ns + self.round.per_sample_ns

    def overhead_ns(self, samples: int) -> float:
        """The serving time planned beyond compute for a batch of ``samples``."""
        return self.per_batch_ns + self.per_sample_ns * samples

    def observe(self, subnet: int, samples: int, elapsed_ns: int) -> bool:
        """Fold one batch's serving time into the batch overhead and the slowdown; True when the plan changed
        (re-make the policy)."""
        compute_ns = self.compute.latency_ns(subnet, samples)
        expected_ns = self.batch.at(samples)
        if self.slowdown_rate:
            ratio = min(elapsed_ns / (compute_ns + expected_ns), SLOWDOWN_CLIP)
            weight = samples / self.compute.max_batch  # a batch of 1 is 1/max_batch of the evidence of a full one
            self.slowdown += min(1.0, self.slowdown_rate * weight) * (ratio - self.slowdown)
        if self.adapt_rate:
            self.batch.observe(samples, elapsed_ns - compute_ns)
        return self._replan()

    def observe_round(self, samples: int, outside_ns: int) -> bool:
        """Fold one round's time outside its batches into the round overhead; True when the plan changed."""
        if not (self.adapt_rate and samples):
            return False
        self.round.observe(samples, outside_ns)
        return self._replan()

    def _replan(self) -> bool:
        one, full = self.overhead_ns(1), self.overhead_ns(self.compute.max_batch)
        planned_one, planned_full = self._planned
        if abs(one - planned_one) <= REPLAN_CHANGE * max(planned_one, REPLAN_FLOOR_NS) and \
                abs(full - planned_full) <= REPLAN_CHANGE * max(planned_full, REPLAN_FLOOR_NS) and \
                abs(max(1.0, self.slowdown) - self.planned_slowdown) <= REPLAN_CHANGE * self.planned_slowdown:
            return False
        self._planned = (one, full)
        self.planned_slowdown = max(1.0, self.slowdown)
        self.profile = self.compute.with_overhead(int(self.per_batch_ns), int(self.per_sample_ns))
        return True
