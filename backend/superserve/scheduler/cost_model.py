"""The serving cost model the policies plan with: profiled compute plus a per-sample serving overhead, times
how much slower than that the machine runs right now.

The profile knows only bare forward passes. Serving a batch also costs gathering its inputs and building one
response per request, which the server learns slowly from the batches it really runs. And when other work
shares the cores (on the reference 2-core machine: the clients and Triton's frontends in a burst), batches run
up to twice as long as planned for as long as the burst lasts; the slowdown is learned fast, so that the
policy plans the next batches with it. Pure Python, so the simulator replays the same learning the live
server does.
"""

from __future__ import annotations

from .profile import Profile

__all__ = ["CostModel"]

OVERHEAD_FLOOR_NS = 100_000  # lets a learned overhead of ~0 still grow
REPLAN_CHANGE = 0.15  # a new plan once the overhead moved this much since the last one
REPLAN_FLOOR_NS = 50_000
SLOWDOWN_CLIP = 3.0  # one batch may count at most this slow: a stall is not the machine's speed


class CostModel:
    """``profile`` is compute + per-sample overhead; ``planned_slowdown`` how much slower than that batches run
    now (never below 1: a machine faster than its profile is planned as profiled); ``version`` counts new plans.

    Each observed batch weighs by its samples (a batch of 1 is 1/max_batch of the evidence of a full one). One
    observation may at most double the overhead, and counts at most ``SLOWDOWN_CLIP`` times slow: a single
    stall (the stub's garbage collector, a preempted thread) is neither a per-sample cost nor the machine's
    speed. Unweighted and unclipped, one 35 ms stall in a batch of 2 moved the overhead from 0.4 to 1.0 ms, and
    the policy then served cheaper SubNets for a while.
    """

    def __init__(self, compute: Profile, overhead_per_sample_ms: float, adapt_rate: float,
                 slowdown_rate: float = 0.0) -> None:
        if overhead_per_sample_ms < 0 or not 0.0 <= adapt_rate <= 1.0 or not 0.0 <= slowdown_rate <= 1.0:
            raise ValueError("overhead_per_sample_ms must be >= 0, adapt_rate and slowdown_rate within [0, 1]")
        self.compute = compute
        self.adapt_rate = adapt_rate
        self.slowdown_rate = slowdown_rate
        self.overhead_ns = float(overhead_per_sample_ms * 1e6)
        self.slowdown = 1.0
        self.planned_slowdown = 1.0
        self._planned_overhead_ns = self.overhead_ns
        self.profile = compute.with_overhead(0, int(self.overhead_ns))
        self.version = 0

    def observe(self, subnet: int, samples: int, elapsed_ns: int) -> bool:
        """Fold one batch's serving time into the overhead and the slowdown; True when the plan changed
        (re-make the policy)."""
        weight = samples / self.compute.max_batch
        compute_ns = self.compute.latency_ns(subnet, samples)
        if self.slowdown_rate:
            ratio = min(elapsed_ns / (compute_ns + self.overhead_ns * samples), SLOWDOWN_CLIP)
            self.slowdown += min(1.0, self.slowdown_rate * weight) * (ratio - self.slowdown)
        if self.adapt_rate:
            observed = max(0.0, (elapsed_ns - compute_ns) / samples)
            observed = min(observed, 2.0 * self.overhead_ns + OVERHEAD_FLOOR_NS)
            self.overhead_ns += self.adapt_rate * weight * (observed - self.overhead_ns)
        overhead, slowdown = self._planned_overhead_ns, self.planned_slowdown
        if abs(self.overhead_ns - overhead) <= REPLAN_CHANGE * max(overhead, REPLAN_FLOOR_NS) and \
                abs(max(1.0, self.slowdown) - slowdown) <= REPLAN_CHANGE * slowdown:
            return False
        self._planned_overhead_ns, self.planned_slowdown = self.overhead_ns, max(1.0, self.slowdown)
        self.profile = self.compute.with_overhead(0, int(self.overhead_ns))
        self.version += 1
        return True
