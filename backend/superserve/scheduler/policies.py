"""Scheduling policies: pure functions of (queue, load, profile, now) returning which SubNet runs how many requests.

The live Triton model, the benchmarks and the simulator call the same objects. A policy never runs a
model, never removes requests and changes nothing it reads (the queue, the ``LoadEstimate``); it returns a
``Decision`` for the request at the head of the EDF queue, or ``None`` when even the fastest SubNet allowed
for that request cannot meet its deadline (the caller then sheds the head and asks again).

- ``slackfit`` (SuperServe): latency buckets evenly spaced between the fastest SubNet at batch 1 and the
  slowest at the largest batch; each bucket holds the (SubNet, batch) with the largest batch whose latency
  fits under the bucket's upper edge, ties to the more accurate SubNet. The head's remaining slack
  selects the bucket whose edge is closest to but not above it.
- ``slackfit-la`` (ours, not in the paper): SlackFit with a backlog lookahead, spare capacity and a
  latency safety. The slack it spends is the head's, tightened so that the rest of the queue and the
  requests arriving meanwhile, served after this batch by the fastest SubNet, still meet their deadlines;
  within it, the most accurate SubNet that serves a full batch of what waits, planned at ``1 + safety``
  times its latency, without keeping the server busier than ``max_utilization`` at the recent arrival rate.
  In an overload it sheds an urgent head rather than serve it in a batch too small to keep up.
- ``maxacc``: the most accurate SubNet that fits at batch 1, then the largest batch it fits.
- ``maxbatch``: the largest batch some SubNet fits, then the most accurate SubNet at that batch.
- ``fixed:<i>``: always SubNet ``i`` (Clipper+, one fixed model), at the largest batch that fits.
- ``cheapest``: the least accurate SubNet a request allows (INFaaS; without a floor, the smallest).

``slackfit-la``, ``fixed`` and ``cheapest`` serve a queue longer than one batch in even batches where the profile
says these cost less than full ones and a remainder (``Policy._even_batch``).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Protocol, Sequence

from .load import IDLE, LoadEstimate
from .profile import Profile

__all__ = ["Decision", "QueueView", "Policy", "SlackFit", "SlackFitLookahead", "MaxAcc", "MaxBatch", "Fixed", "Cheapest",
           "POLICIES", "POLICY_NAMES", "DEFAULT_POLICY", "DEFAULT_BUCKETS", "LA_RULES", "check_policy_name",
           "check_rules_off", "make_policy"]

DEFAULT_BUCKETS = 32

# SlackFit-LA's rules that are not a value to set, each of which ``rules_off`` can switch off (for ablations). The
# others are settings with an "off" value: max_utilization 1, burst_memory_ms 0, latency_safety 0, margin_ms 0,
# slowdown_adapt_rate 0, overhead_adapt_rate 0.
LA_RULES = {
    "backlog": "after this batch, the rest of the queue, served by full batches of the fastest SubNet, still meets "
               "its deadlines",
    "unseen_backlog": "so do the requests that arrive meanwhile behind Triton's batcher, at the burst rate",
    "burst_guard": "in a burst the fastest SubNet cannot keep up with in full batches, only it runs",
    "shed_urgent_head": "in an overload, an urgent head is shed rather than served in a batch too small to keep up",
    "even_batches": "a queue longer than one batch runs in even batches where the profile says they cost less",
}


@dataclass(frozen=True, slots=True)
class Decision:
    subnet: int
    batch_size: int  # at most this many earliest-deadline requests that ``subnet`` may serve


class QueueView(Protocol):
    """What a policy may read of the queue (``EDFQueue`` implements it)."""

    def __len__(self) -> int: ...
    def head(self): ...
    def count_for(self, subnet: int) -> int: ...
    def deadline_at(self, position: int) -> int: ...
    def position_of(self, deadline_ns: int, start: int = 0) -> int: ...  # first position due at or after it


class Policy:
    """Base: clamps the head's allowed SubNet range, computes its slack, delegates the choice."""

    name = "policy"

    def __init__(self, profile: Profile, margin_ns: int = 0) -> None:
        if margin_ns < 0:
            raise ValueError(f"margin_ns must be >= 0, got {margin_ns}")
        self.profile = profile
        self.margin_ns = margin_ns
        self._floors: dict[tuple[int, int], int] = {}

    def allowed(self, lo: int, hi: int) -> tuple[int, int]:
        return lo, hi

    def decide(self, queue: QueueView, now_ns: int, load: LoadEstimate = IDLE) -> Decision | None:
        """The next (SubNet, batch) for the queue's head; ``load``: what the serving loop knows of arrivals (only
        ``slackfit-la`` reads it)."""
        head = queue.head()
        lo, hi = self.allowed(head.lo, head.hi)
        if lo > hi:
            return None
        slack = head.deadline_ns - now_ns - self.margin_ns
        if slack < self.floor_ns(lo, hi):  # nothing fits, whatever the policy: overloaded, it sheds thousands/s
            return None
        return self.choose(queue, lo, hi, slack, now_ns, load)

    def floor_ns(self, lo: int, hi: int) -> int:
        """The least latency of any SubNet lo..hi (at batch 1): a head with less slack is shed by every policy."""
        floor = self._floors.get((lo, hi))
        if floor is None:
            floor = self._floors[(lo, hi)] = min(self.profile.latency_ns(s, 1) for s in range(lo, hi + 1))
        return floor

    def choose(self, queue: QueueView, lo: int, hi: int, slack_ns: int, now_ns: int,
               load: LoadEstimate = IDLE) -> Decision | None:
        raise NotImplementedError

    def feasible(self, lo: int, hi: int, slo_ns: int) -> bool:
        """Could a request with this SubNet range and latency target be met on an idle server?"""
        lo, hi = self.allowed(lo, hi)
        return lo <= hi and self.floor_ns(lo, hi) + self.margin_ns <= slo_ns

    def _largest_batch(self, subnet: int, slack_ns: int, limit: int) -> int:
        """Largest batch <= limit whose latency on ``subnet`` fits in the slack (0 if none)."""
        latency = self.profile.subnets[subnet].latency_ns
        return bisect.bisect_right(latency, slack_ns, 0, limit)

    def _fill(self, subnet: int, queue: QueueView, slack_ns: int) -> Decision | None:
        """``subnet`` at the largest batch of what waits for it that the slack allows, in even batches where they
        cost less (None if not even one request fits)."""
        waiting = queue.count_for(subnet)
        b = self._largest_batch(subnet, slack_ns, min(self.profile.max_batch, waiting))
        return Decision(subnet, self._even_batch(subnet, b, waiting, slack_ns)) if b else None

    def _even_batch(self, subnet: int, batch: int, waiting: int, budget_ns: int,
                    latency_ns: Sequence[int] | None = None) -> int:
        """The first batch of those that serve the ``waiting`` samples on ``subnet``: ``batch`` (the largest the
        policy allows), unless as many batches of even sizes cost less and all of them end within ``budget_ns``
        (so no request they serve finishes later than the head's own deadline allows). A CPU runs a batch past
        its caches dearer per sample: the ResNet's fastest SubNet 193 us a sample at 16 and 160 at 15, so 36
        samples ran as 16 + 16 + 4 where 12 + 12 + 12 costs a sixth less. ``latency_ns``: the latencies planned
        (default: the profile's)."""
        if waiting <= batch:
            return batch
        latency = self.profile.subnets[subnet].latency_ns if latency_ns is None else latency_ns
        count = -(-waiting // batch)
        size, larger = divmod(waiting, count)  # ``larger`` batches of size + 1, the rest of size
        even = (count - larger) * latency[size - 1] + (larger * latency[size] if larger else 0)
        greedy = (count - 1) * latency[batch - 1] + latency[waiting - (count - 1) * batch - 1]
        if even < greedy and even <= budget_ns:
            return size + 1 if larger else size
        return batch


class SlackFit(Policy):
    name = "slackfit"

    def __init__(self, profile: Profile, margin_ns: int = 0, num_buckets: int = DEFAULT_BUCKETS) -> None:
        super().__init__(profile, margin_ns)
        if num_buckets < 2:
            raise ValueError(f"num_buckets must be >= 2, got {num_buckets}")
        self.num_buckets = num_buckets
        self._tables: dict[tuple[int, int], tuple[list[int], list[Decision]]] = {}

    def buckets(self, lo: int = 0, hi: int | None = None) -> tuple[list[int], list[Decision]]:
        """Upper edges (ns, ascending) and the choice kept in each bucket, for SubNets ``lo..hi``."""
        hi = self.profile.size - 1 if hi is None else hi
        table = self._tables.get((lo, hi))
        if table is None:
            table = self._tables[(lo, hi)] = self._build(lo, hi)
        return table

    def _build(self, lo: int, hi: int) -> tuple[list[int], list[Decision]]:
        p = self.profile
        fastest = min(p.latency_ns(s, 1) for s in range(lo, hi + 1))
        slowest = max(p.latency_ns(s, p.max_batch) for s in range(lo, hi + 1))
        k = self.num_buckets
        edges = [fastest + (slowest - fastest) * i // (k - 1) for i in range(k)]
        choices = []
        for edge in edges:
            best = None  # (batch, accuracy index) maximised: largest batch, then the more accurate SubNet
            for s in range(lo, hi + 1):
                b = self._largest_batch(s, edge, p.max_batch)
                if b and (best is None or (b, s) > best):
                    best = (b, s)
            choices.append(Decision(best[1], best[0]))
        return edges, choices

    def choose(self, queue, lo, hi, slack_ns, now_ns, load=IDLE):
        edges, choices = self.buckets(lo, hi)
        i = bisect.bisect_right(edges, slack_ns) - 1
        if i < 0:
            return None
        return choices[i]


class SlackFitLookahead(Policy):
    """SlackFit that also budgets for the requests behind the batch it is about to run (ours).

    The paper's SlackFit spends the head's whole slack, so under load the requests queued behind the batch
    inherit too little time, and every spare cycle becomes accuracy, so a slow batch or a burst costs
    deadlines. This policy serves a full batch of what waits (up to ``max_batch`` samples) on the most
    accurate SubNet within four limits, planning every batch at ``1 + safety`` times the cost model's
    latency (real batches run slower than the profile in bursts, when clients and Triton's frontends share
    the cores: p90 1.3x on the reference machine, and a batch planned to the edge of a deadline then misses
    it and pushes the queue behind it into sheds):

    - the head's slack;
    - the backlog budget: after this batch, the rest of the queue, served by full batches of the fastest
      allowed SubNet on the ``workers`` that are up, must still meet each batch's first deadline. Positions
      count requests; a request holding several images counts as one;
    - the unseen backlog: behind Triton's batcher, requests that arrive during a round wait in Triton's queue
      until the round ends (``load.unseen_since()``). At the burst rate (the recent one, or the highest the
      loop remembers, faded, if that is higher: ``LoadEstimate.peak_rate``), as many arrive while this batch and
      the rest of the round run, and the fastest SubNet must still serve them within the SLO of the first
      (that of the head), counted from when they can first have arrived. Remembered, a burst keeps slow
      SubNets' long batches out of the lulls between bursts, where the next burst caught them in full;
    - the utilization cap: at the recent arrival rate, batches on this SubNet settle at the smallest
      size k whose cost per sample keeps the server busy at most ``max_utilization`` of the time, and a
      request then waits for one such batch and runs in the next, so two batches of k must fit the head's
      SLO. Behind Triton's batcher a batch is what gathered during the previous one: a full batch's cost per
      sample let the most accurate SubNet run batches of 3-5 at 89% of capacity on the Azure trace, and the
      batch at hand (often a single request at light load) ruled out SubNets that a steady load settles to.

    The fastest SubNet is exempt from the last two, and alone runs while the burst rate is beyond what it
    serves in full batches, planned (a hand-over smaller than one full batch is no such burst). If no SubNet
    fits, the fastest serves the largest batch the head's slack allows (planned without the safety: better a
    likely hit than a certain shed), unless shedding the head lets more of the queue be served on time
    (``on_time``): in an overload, serving an urgent head in a batch of one or two slows the whole queue to
    small-batch speed, and the requests behind it then miss in turn.
    """

    name = "slackfit-la"

    def __init__(self, profile: Profile, margin_ns: int = 0, safety: float = 0.0,
                 max_utilization: float = 1.0, workers: int = 1, rules_off: frozenset[str] = frozenset()) -> None:
        super().__init__(profile, margin_ns)
        self.rules_off = check_rules_off(rules_off)
        self._backlog, self._unseen_backlog, self._burst_guard, self._shed_urgent_head, self._even_batches = (
            rule not in self.rules_off for rule in LA_RULES)
        if not 0.0 <= safety:
            raise ValueError(f"latency safety must be >= 0, got {safety}")
        if not 0.0 < max_utilization:
            raise ValueError(f"max_utilization must be > 0, got {max_utilization}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.safety = safety
        self.max_utilization = max_utilization
        self.workers = workers
        # planned_ns[s][b - 1]: what a batch of b on SubNet s is budgeted for, safety included
        self._planned_ns = [[int((1.0 + safety) * lat) for lat in sub.latency_ns] for sub in profile.subnets]
        # per SubNet, for batch sizes 1..max: minus the least server seconds per sample at a batch of at most
        # that size (ascending, for bisect), over the utilization cap
        self._settle_cost: list[list[float]] = []
        for s in range(profile.size):
            least, costs = float("inf"), []
            for b in range(1, profile.max_batch + 1):
                least = min(least, profile.latency_ns(s, b) / b / 1e9 / max_utilization)
                costs.append(-least)
            self._settle_cost.append(costs)
        self._fastest_tables: dict[tuple[int, int], tuple[list[int], int]] = {}

    def choose(self, queue, lo, hi, slack_ns, now_ns, load=IDLE):
        p = self.profile
        fastest, cheapest = self._fastest(lo, hi)
        taken = min(p.max_batch, len(queue))
        budget = min(slack_ns, self.backlog_budget(queue, taken, slack_ns, fastest)) if self._backlog else slack_ns
        head = queue.head()
        slo_ns = head.deadline_ns - head.arrival_ns
        # what arrives is shared by the workers that are up: each sees its share
        rate = load.arrival_rate(now_ns) / self.workers if self.max_utilization < 1.0 else 0.0
        # not even the fastest keeps up with this burst: it alone runs (a hand-over counts only if it holds a
        # full batch: the loop sets the load's ``round_min_samples`` to the profile's largest batch)
        guard = load.arrival_rate(now_ns, burst=True) / 1e9 / self.workers  # per ns
        if self._burst_guard and guard * fastest[-1] > p.max_batch:
            hi = lo = cheapest
        # the unseen backlog counts any hand-over's rate, and the bursts the loop remembers
        burst = max(guard, load.round_rate() / 1e9, load.peak_rate(now_ns) / 1e9 / self.workers)
        unseen = load.unseen_since() if self._unseen_backlog else None
        if unseen is not None:
            rest_ns = self.drain_ns(len(queue) - taken, fastest)
            unseen_left = unseen + slo_ns - self.margin_ns - now_ns - rest_ns  # for this batch, then the unseen
            unseen_ns = now_ns - unseen + rest_ns  # they keep arriving until the round ends
        for s in range(hi, lo - 1, -1):
            # every test below passes over s; the cap's, which needs no count of what waits, goes first
            if rate and s != cheapest and not self.settles(s, rate, slo_ns):
                continue
            waiting = queue.count_for(s)
            b = min(p.max_batch, waiting)
            if not b:
                continue
            planned = self._planned_ns[s][b - 1]
            if planned > budget:
                continue
            if s != cheapest and unseen is not None and \
                    planned + self.drain_ns(burst * (unseen_ns + planned), fastest) > unseen_left:
                continue
            if self._even_batches:
                b = self._even_batch(s, b, waiting, budget, self._planned_ns[s])
            return Decision(s, b)
        # The backlog cannot all be met: serve the most samples the head's slack allows, fastest first, unless
        # shedding the head serves more of the queue on time.
        b = self._largest_batch(cheapest, slack_ns, min(p.max_batch, queue.count_for(cheapest)))
        if not b:
            return None
        if self._shed_urgent_head and b < taken and self.on_time(queue, 1, 0, slack_ns, fastest) > \
                b + self.on_time(queue, b, p.latency_ns(cheapest, b), slack_ns, fastest):
            return None
        return Decision(cheapest, b)

    def settles(self, subnet: int, rate: float, slo_ns: int) -> bool:
        """At ``rate`` samples/s, is there a batch size that keeps ``subnet`` under the utilization cap, and do
        two batches of the smallest such size fit ``slo_ns`` (less the margin)?"""
        k = bisect.bisect_left(self._settle_cost[subnet], -1.0 / rate)
        return k < self.profile.max_batch and 2 * self._planned_ns[subnet][k] <= slo_ns - self.margin_ns

    def backlog_budget(self, queue, taken: int, slack_ns: int, fastest: list[int]) -> int:
        """Latest finish of the next batch (ns from now, less the margin) that leaves the requests from
        position ``taken`` on servable by full batches of the fastest SubNet by their deadlines."""
        n, batch, workers, deadline_at = len(queue), self.profile.max_batch, self.workers, queue.deadline_at
        base = slack_ns - deadline_at(0)  # a deadline plus this is that request's slack
        budget = slack_ns
        before = 0  # the batches ahead of this one, spread over the workers that are up
        full = fastest[batch - 1]
        i = taken
        while i < n:  # (locals and no min() calls: this loop runs per decision, 16 times at 256 waiting)
            cost = full if n - i >= batch else fastest[n - i - 1]
            left = base + deadline_at(i) - before // workers - cost
            if left < budget:
                budget = left
            before += cost
            i += batch
        return budget

    def on_time(self, queue, start: int, spent_ns: int, slack_ns: int, fastest: list[int]) -> int:
        """How many requests from position ``start`` on full batches of the fastest SubNet serve by their
        deadlines, starting ``spent_ns`` from now, passing over (shedding) those that such a batch would make
        late. Positions count requests, as in ``backlog_budget``."""
        n, batch, workers, deadline_at = len(queue), self.profile.max_batch, self.workers, queue.deadline_at
        start_ns = deadline_at(0) - slack_ns + spent_ns  # when the first of these batches can start
        served, i, before = 0, start, 0
        while i < n:
            k = batch if n - i >= batch else n - i
            finish = start_ns + before // workers + fastest[k - 1]
            if deadline_at(i) < finish:
                i = queue.position_of(finish, i)  # nothing before it makes a batch of k in time
                continue
            served += k
            before += fastest[k - 1]
            i += k
        return served

    def drain_ns(self, samples: float, fastest: list[int]) -> int:
        """Planned time for full batches of the fastest SubNet to serve ``samples``."""
        full, rest = divmod(math.ceil(samples), self.profile.max_batch)
        return (full * fastest[-1] + (fastest[rest - 1] if rest else 0)) // self.workers

    def _fastest(self, lo: int, hi: int) -> tuple[list[int], int]:
        """Cheapest planned latency at each batch size over SubNets lo..hi, and the SubNet fastest at full batch."""
        table = self._fastest_tables.get((lo, hi))
        if table is None:
            p = self.profile
            latency = [min(self._planned_ns[s][b] for s in range(lo, hi + 1)) for b in range(p.max_batch)]
            cheapest = min(range(lo, hi + 1), key=lambda s: (p.latency_ns(s, p.max_batch), s))
            table = self._fastest_tables[(lo, hi)] = (latency, cheapest)
        return table


class MaxAcc(Policy):
    name = "maxacc"

    def choose(self, queue, lo, hi, slack_ns, now_ns, load=IDLE):
        for s in range(hi, lo - 1, -1):
            if self.profile.latency_ns(s, 1) <= slack_ns:
                return Decision(s, self._largest_batch(s, slack_ns, min(self.profile.max_batch, queue.count_for(s))))
        return None


class MaxBatch(Policy):
    name = "maxbatch"

    def choose(self, queue, lo, hi, slack_ns, now_ns, load=IDLE):
        best = None
        for s in range(hi, lo - 1, -1):  # most accurate first, so ties keep the more accurate SubNet
            b = self._largest_batch(s, slack_ns, min(self.profile.max_batch, queue.count_for(s)))
            if b and (best is None or b > best.batch_size):
                best = Decision(s, b)
        return best


class Fixed(Policy):
    """One SubNet for every request (requests pinned to another SubNet are refused)."""

    def __init__(self, profile: Profile, subnet: int, margin_ns: int = 0) -> None:
        super().__init__(profile, margin_ns)
        if not 0 <= subnet < profile.size:
            raise ValueError(f"fixed SubNet index {subnet} is outside 0..{profile.size - 1}")
        self.subnet = subnet
        self.name = f"fixed:{subnet}"

    def allowed(self, lo, hi):
        return (self.subnet, self.subnet) if lo <= self.subnet <= hi else (1, 0)

    def choose(self, queue, lo, hi, slack_ns, now_ns, load=IDLE):
        return self._fill(lo, queue, slack_ns)


class Cheapest(Policy):
    """The least accurate SubNet each request allows (INFaaS-style: cheapest variant that meets the floor)."""

    name = "cheapest"

    def allowed(self, lo, hi):
        return lo, lo

    def choose(self, queue, lo, hi, slack_ns, now_ns, load=IDLE):
        return self._fill(lo, queue, slack_ns)


# The registry: every policy name the server, the benchmarks and the README know, in one place.
# name -> (one-line summary, constructor from (profile, margin_ns, num_buckets, latency_safety, max_utilization,
# workers up, rules off))
POLICIES = {
    "slackfit-la": ("SlackFit with a backlog lookahead, latency safety and a utilization cap (ours; the default)",
                    lambda p, m, k, s, u, w, r: SlackFitLookahead(p, m, s, u, w, r)),
    "slackfit": ("the paper's SlackFit: the head's slack picks a latency bucket",
                 lambda p, m, k, s, u, w, r: SlackFit(p, m, k)),
    "maxacc": ("the most accurate SubNet that fits at batch 1, then its largest batch",
               lambda p, m, k, s, u, w, r: MaxAcc(p, m)),
    "maxbatch": ("the largest batch some SubNet fits, then the most accurate SubNet at it",
                 lambda p, m, k, s, u, w, r: MaxBatch(p, m)),
    "cheapest": ("the least accurate SubNet each request allows (INFaaS)",
                 lambda p, m, k, s, u, w, r: Cheapest(p, m)),
    "fixed:<i>": ("always SubNet i (Clipper+, one fixed model)", None),
}
DEFAULT_POLICY = "slackfit-la"
POLICY_NAMES = tuple(POLICIES)


def check_policy_name(spec: str) -> str:
    """The normalised policy name, or ValueError naming the choices (``fixed:<i>`` is checked for a number;
    whether ``i`` exists is known only with a profile)."""
    name = spec.strip().lower()
    if name in POLICIES and name != "fixed:<i>":
        return name
    if name.startswith("fixed:"):
        try:
            int(name.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"policy {spec!r}: fixed needs a SubNet index, e.g. fixed:3") from None
        return name
    raise ValueError(f"unknown policy {spec!r}; choose one of {', '.join(POLICY_NAMES)}")


def check_rules_off(names) -> frozenset[str]:
    """``names`` (an iterable, or a comma-separated string) as a set of SlackFit-LA rules, or ValueError."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = frozenset(names)
    unknown = names - set(LA_RULES)
    if unknown:
        raise ValueError(f"unknown slackfit-la rule {', '.join(sorted(unknown))}; rules: {', '.join(LA_RULES)}")
    return names


def make_policy(spec: str, profile: Profile, margin_ns: int = 0, num_buckets: int = DEFAULT_BUCKETS,
                latency_safety: float = 0.0, max_utilization: float = 1.0, workers: int = 1,
                rules_off: frozenset[str] = frozenset()) -> Policy:
    """Create a policy by its registry name (``POLICIES``). ``workers``: how many workers share the queue (the
    paper's policies decide each batch from the head's slack alone, whatever the count); ``rules_off``: SlackFit-LA
    rules switched off (``LA_RULES``)."""
    name = check_policy_name(spec)
    if name.startswith("fixed:"):
        return Fixed(profile, int(name.split(":", 1)[1]), margin_ns)
    return POLICIES[name][1](profile, margin_ns, num_buckets, latency_safety, max_utilization, workers, rules_off)
