"""The serving cost model the policies plan with: profiled compute plus a per-sample serving overhead.

The profile knows only bare forward passes. Serving a batch also costs gathering its inputs and building one
response per request, which the server learns from the batches it really runs. Pure Python, so the simulator
replays the same learning the live server does.
"""

from __future__ import annotations

from .profile import Profile

__all__ = ["CostModel"]

OVERHEAD_FLOOR_NS = 100_000  # lets a learned overhead of ~0 still grow
REPLAN_CHANGE = 0.15  # a new plan once the overhead moved this much since the last one
REPLAN_FLOOR_NS = 50_000


class CostModel:
    """``profile`` is the compute profile plus the current per-sample overhead; ``version`` counts new plans.

    Each observed batch weighs by its samples (a batch of 1 is 1/max_batch of the evidence of a full one), and
    one observation may at most double the estimate: a single stall (the stub's garbage collector, a preempted
    thread) is not a per-sample cost. Unweighted and unclipped, one 35 ms stall in a batch of 2 moved the
    estimate from 0.4 to 1.0 ms, and the policy then served cheaper SubNets for a while.
    """

    def __init__(self, compute: Profile, overhead_per_sample_ms: float, adapt_rate: float) -> None:
        if overhead_per_sample_ms < 0 or not 0.0 <= adapt_rate <= 1.0:
            raise ValueError("overhead_per_sample_ms must be >= 0 and adapt_rate within [0, 1]")
        self.compute = compute
        self.adapt_rate = adapt_rate
        self.overhead_ns = float(overhead_per_sample_ms * 1e6)
        self._planned_overhead_ns = self.overhead_ns
        self.profile = compute.with_overhead(0, int(self.overhead_ns))
        self.version = 0

    def observe(self, subnet: int, samples: int, elapsed_ns: int) -> bool:
        """Fold one batch's serving time into the overhead; True when the plan changed (re-make the policy)."""
        if not self.adapt_rate:
            return False
        observed = max(0.0, (elapsed_ns - self.compute.latency_ns(subnet, samples)) / samples)
        observed = min(observed, 2.0 * self.overhead_ns + OVERHEAD_FLOOR_NS)
        self.overhead_ns += self.adapt_rate * samples / self.compute.max_batch * (observed - self.overhead_ns)
        if abs(self.overhead_ns - self._planned_overhead_ns) <= REPLAN_CHANGE * max(self._planned_overhead_ns,
                                                                                     REPLAN_FLOOR_NS):
            return False
        self._planned_overhead_ns = self.overhead_ns
        self.profile = self.compute.with_overhead(0, int(self.overhead_ns))
        self.version += 1
        return True
