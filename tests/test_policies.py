"""Policies on hand-built queues and profiles: bucket choice, EDF order, shedding, accuracy floors."""

import math

import pytest

from superserve.scheduler import Decision, EDFQueue, LoadEstimate, Profile, ProfileError, QueuedRequest, make_policy
from superserve.scheduler.policies import POLICY_NAMES, SlackFit

MS = 1_000_000


def _profile(rows):
    """rows: (accuracy, latency_ms at batch 1..4) for a max batch of 4."""
    return Profile.from_dict({"max_batch_size": 4, "subnets": [
        {"id": f"s{i}", "accuracy": acc, "latency_ms": {str(b + 1): lat[b] for b in range(4)}}
        for i, (acc, lat) in enumerate(rows)]})


# Three SubNets: fast/inaccurate, middle, slow/accurate.
PROFILE = _profile([
    (0.90, [1.0, 1.5, 2.0, 2.5]),
    (0.95, [2.0, 3.0, 4.0, 5.0]),
    (0.99, [4.0, 6.0, 8.0, 10.0]),
])


def _queue(*deadlines_ms, lo=0, hi=2, now_ms=0):
    q = EDFQueue()
    for d in deadlines_ms:
        q.push(QueuedRequest(int(d * MS), now_ms * MS, lo, hi))
    return q


def test_edf_queue_orders_by_deadline_then_arrival():
    q = EDFQueue()
    for i, d in enumerate([30, 10, 20, 10]):
        q.push(QueuedRequest(d, 0, 0, 2, payload=i))
    assert [r.payload for r in q.pop_batch(0, 4)] == [1, 3, 2, 0]


def test_pop_batch_skips_requests_the_subnet_may_not_serve_and_keeps_them():
    q = EDFQueue()
    q.push(QueuedRequest(1, 0, 2, 2, payload="pinned-2"))
    q.push(QueuedRequest(2, 0, 0, 2, payload="any"))
    q.push(QueuedRequest(3, 0, 1, 2, payload="floor-1"))
    assert q.count_for(0) == 1 and q.count_for(1) == 2 and q.count_for(2) == 3
    assert [r.payload for r in q.pop_batch(1, 4)] == ["any", "floor-1"]
    assert len(q) == 1 and q.head().payload == "pinned-2" and q.count_for(2) == 1


def test_pop_batch_counts_samples_and_never_splits_a_request():
    q = EDFQueue()
    for d, size in [(1, 3), (2, 2), (3, 1)]:
        q.push(QueuedRequest(d, 0, 0, 2, size=size))
    assert q.count_for(0) == 6
    assert [r.size for r in q.pop_batch(0, 4)] == [3]  # 3 + 2 > 4: the second waits
    assert [r.size for r in q.pop_batch(0, 1)] == [2]  # the head is always taken


def test_slackfit_buckets_follow_the_paper():
    policy = SlackFit(PROFILE, num_buckets=4)
    edges, choices = policy.buckets()
    # evenly spaced from the fastest at batch 1 (1 ms) to the slowest at the largest batch (10 ms)
    assert edges == [1 * MS, 4 * MS, 7 * MS, 10 * MS]
    # largest batch under each edge, ties to the more accurate SubNet
    assert choices == [Decision(0, 1), Decision(0, 4), Decision(1, 4), Decision(2, 4)]


def test_slackfit_picks_the_bucket_closest_below_the_slack():
    policy = make_policy("slackfit", PROFILE, num_buckets=4)
    assert policy.decide(_queue(100), 0) == Decision(2, 4)  # loose: the most accurate SubNet
    assert policy.decide(_queue(5), 0) == Decision(0, 4)  # 5 ms slack -> the 4 ms bucket
    assert policy.decide(_queue(7.5), 0) == Decision(1, 4)  # 7.5 ms -> the 7 ms bucket
    assert policy.decide(_queue(1.2), 0) == Decision(0, 1)  # tight: the fastest at batch 1
    assert policy.decide(_queue(0.5), 0) is None  # nothing fits: shed the head
    assert policy.decide(_queue(105), 100 * MS) == Decision(0, 4)  # slack counts from now


def test_slack_is_taken_from_the_earliest_deadline():
    policy = make_policy("slackfit", PROFILE, num_buckets=4)
    assert policy.decide(_queue(100, 7.5, 50), 0) == Decision(1, 4)


def test_margin_is_reserved_from_the_slack():
    policy = make_policy("slackfit", PROFILE, margin_ns=1 * MS, num_buckets=4)
    assert policy.decide(_queue(7.5), 0) == Decision(0, 4)  # 6.5 ms left: the 4 ms bucket, not the 7 ms one
    assert not policy.feasible(0, 2, int(1.5 * MS)) and policy.feasible(0, 2, 2 * MS)


def test_accuracy_floor_restricts_every_policy_to_accurate_subnets():
    for name in ("slackfit", "maxacc", "maxbatch", "cheapest"):
        policy = make_policy(name, PROFILE, num_buckets=4)
        decision = policy.decide(_queue(5, lo=1), 0)
        assert decision.subnet >= 1, name
        assert policy.decide(_queue(1.5, lo=1), 0) is None, name  # even SubNet 1 at batch 1 needs 2 ms


def test_the_shed_shortcut_never_changes_a_decision():
    """decide() answers None without asking the policy when no SubNet fits the head's slack at batch 1: for
    every policy, exactly what the policy itself would have answered."""
    for name in ("slackfit", "slackfit-la", "maxacc", "maxbatch", "cheapest", "fixed:1"):
        policy = make_policy(name, PROFILE, margin_ns=MS // 2, num_buckets=4, latency_safety=0.2,
                             max_utilization=0.85)
        for lo, hi in ((0, 2), (1, 2), (2, 2)):
            for quarter_ms in range(0, 60):
                queue = _queue(quarter_ms / 4, 6, 9, lo=lo, hi=hi)
                head_lo, head_hi = policy.allowed(lo, hi)
                if head_lo > head_hi:
                    continue
                slack = queue.head().deadline_ns - policy.margin_ns
                assert policy.decide(queue, 0) == policy.choose(queue, head_lo, head_hi, slack, 0), (name, lo, hi)
            assert policy.decide(_queue(0.1, lo=lo, hi=hi), 0) is None


def test_pinned_requests_run_on_their_subnet():
    policy = make_policy("slackfit", PROFILE, num_buckets=4)
    assert policy.decide(_queue(100, lo=1, hi=1), 0).subnet == 1
    assert policy.decide(_queue(3.5, lo=2, hi=2), 0) is None  # SubNet 2 needs 4 ms


def test_maxacc_prefers_accuracy_then_batch():
    policy = make_policy("maxacc", PROFILE)
    assert policy.decide(_queue(6, 6, 6, 6), 0) == Decision(2, 2)  # 4 ms at 1, 6 ms at 2
    assert policy.decide(_queue(3, 3), 0) == Decision(1, 2)
    assert policy.decide(_queue(100), 0) == Decision(2, 1)  # batch capped by what waits


def test_maxbatch_prefers_batch_then_accuracy():
    policy = make_policy("maxbatch", PROFILE)
    assert policy.decide(_queue(6, 6, 6, 6), 0) == Decision(1, 4)  # 4 fits on SubNets 0 and 1: take 1
    assert policy.decide(_queue(2.5, 2.5, 2.5, 2.5), 0) == Decision(0, 4)


def test_fixed_and_cheapest():
    fixed = make_policy("fixed:1", PROFILE)
    assert fixed.decide(_queue(100, 100), 0) == Decision(1, 2)
    assert fixed.decide(_queue(100, lo=2, hi=2), 0) is None  # pinned elsewhere: refused
    assert not fixed.feasible(0, 2, int(1.5 * MS))
    cheapest = make_policy("cheapest", PROFILE)
    assert cheapest.decide(_queue(100, 100, 100), 0) == Decision(0, 3)


# A CPU's cache cliff: a batch of 4 costs more per sample than one of 3.
CLIFF = _profile([(0.90, [1.0, 1.8, 2.4, 4.0]), (0.95, [1.5, 2.7, 3.6, 6.0]), (0.99, [2.0, 3.6, 4.8, 8.0])])


def test_a_queue_longer_than_a_batch_runs_in_even_batches_where_the_profile_says_they_cost_less():
    fixed = make_policy("fixed:0", CLIFF)
    # 6 waiting: 4 + 2 costs 4.0 + 1.8 = 5.8 ms, 3 + 3 costs 4.8 ms; 5 waiting: 4 + 1 is 5.0, 3 + 2 is 4.2
    assert fixed.decide(_queue(*[100] * 6), 0) == Decision(0, 3)
    assert fixed.decide(_queue(*[100] * 5), 0) == Decision(0, 3)
    assert fixed.decide(_queue(*[100] * 4), 0) == Decision(0, 4)  # one batch serves them all: no split
    assert fixed.decide(_queue(*[100] * 8), 0) == Decision(0, 4)  # 4 + 4 is already even
    # the even batches would end after the head's deadline (4.8 ms > 4.5): the largest batch, as before
    assert fixed.decide(_queue(4.5, *[100] * 5), 0) == Decision(0, 4)
    assert make_policy("cheapest", CLIFF).decide(_queue(*[100] * 6), 0) == Decision(0, 3)
    # planned with the latency safety: 3 + 3 on SubNet 2 (2 x 4.8 x 1.25 = 12 ms) against 4 + 2 (14.5 ms)
    la = make_policy("slackfit-la", CLIFF, latency_safety=0.25)
    assert la.decide(_queue(*[100] * 6), 0) == Decision(2, 3)
    assert la.decide(_queue(11, *[100] * 5), 0) == Decision(2, 4)  # 12 ms of even batches > 11 ms of slack
    # where batches cost the same per sample or less as they grow, nothing changes
    assert make_policy("fixed:0", PROFILE).decide(_queue(*[100] * 6), 0) == Decision(0, 4)
    assert make_policy("slackfit-la", PROFILE).decide(_queue(*[100] * 6), 0) == Decision(2, 4)


def test_a_batch_is_never_planned_faster_than_a_smaller_one():
    profile = Profile.from_dict({"max_batch_size": 4, "subnets": [
        {"accuracy": 0.9, "latency_ms": {"1": 1.0, "2": 1.6, "3": 1.4, "4": 2.0}}]})
    assert profile.subnets[0].latency_ns == (1 * MS, int(1.6 * MS), int(1.6 * MS), 2 * MS)


@pytest.mark.parametrize("spec, message", [("fifo", "unknown policy"), ("fixed:x", "needs a SubNet index"),
                                           ("fixed:7", "outside 0..2")])
def test_policy_names_are_checked(spec, message):
    with pytest.raises(ValueError, match=message):
        make_policy(spec, PROFILE)


@pytest.mark.parametrize("data, message", [
    ({}, "needs a 'subnets' list"),
    ({"subnets": []}, "non-empty"),
    ({"max_batch_size": 2, "subnets": [{"accuracy": 0.5, "latency_ms": {"1": 1.0}}]}, "batch 1..2"),
    ({"max_batch_size": 1, "subnets": [{"accuracy": 1.5, "latency_ms": {"1": 1.0}}]}, "outside"),
    ({"max_batch_size": 1, "subnets": [{"accuracy": 0.9, "latency_ms": {"1": 1.0}},
                                        {"accuracy": 0.8, "latency_ms": {"1": 1.0}}]}, "sorted"),
])
def test_profile_errors(data, message):
    with pytest.raises(ProfileError, match=message):
        Profile.from_dict(data)


def test_serving_overhead_is_part_of_the_cost_model():
    p = PROFILE.with_overhead(per_batch_ns=1 * MS, per_sample_ns=MS // 2)
    assert p.latency_ns(0, 1) == int(2.5 * MS) and p.latency_ns(2, 4) == 13 * MS
    assert PROFILE.with_overhead() is PROFILE
    # with 0.5 ms per sample SubNet 0 no longer fits 4 samples in 2.5 ms: SlackFit sees the true cost
    assert make_policy("maxbatch", PROFILE.with_overhead(0, MS // 2)).decide(_queue(2.5, 2.5, 2.5, 2.5), 0) == \
        Decision(0, 2)


def test_slackfit_lookahead_budgets_for_the_backlog():
    paper = make_policy("slackfit", PROFILE, num_buckets=4)
    la = make_policy("slackfit-la", PROFILE, num_buckets=4)
    # nothing behind the head: the most accurate SubNet that fits the head's slack, at the queue's size
    assert paper.decide(_queue(10.5), 0) == Decision(2, 4)
    assert la.decide(_queue(10.5), 0) == Decision(2, 1)
    # six waiting: after SubNet 2 x4 (10 ms) the other two need 1.5 ms on SubNet 0 by 11 ms: budget 9.5 ms
    q = _queue(10.5, 11, 11, 11, 11, 11)
    assert paper.decide(q, 0) == Decision(2, 4)
    assert la.decide(q, 0) == Decision(1, 4)
    # the same backlog with later deadlines leaves time: the head's slack is the binding limit again
    assert la.decide(_queue(10.5, 20, 20, 20, 20, 20), 0) == Decision(2, 4)
    # every later full batch is checked, not only the next one: 4 + 4 + 2 behind the head's batch
    deep = _queue(10.5, 11, 11, 11, 13, 13, 13, 13, 14, 14, 14, 14, 30, 30)
    assert la.backlog_budget(deep, 4, int(10.5 * MS), [int(x * MS) for x in (1.0, 1.5, 2.0, 2.5)]) == \
        int(min(10.5, 13 - 2.5, 14 - 5.0, 30 - 6.5) * MS)
    assert la.decide(deep, 0) == Decision(1, 4)  # 5 ms <= 9 ms < 10 ms
    # the backlog cannot all be met: throughput first, the fastest SubNet at the largest batch the head allows
    assert la.decide(_queue(3, 3, 3, 3, 3.2, 3.2), 0) == Decision(0, 4)
    assert la.decide(_queue(0.5), 0) is None  # infeasible heads are still shed


def test_slackfit_lookahead_sheds_an_urgent_head_when_its_small_batch_would_cost_the_queue_more():
    la = make_policy("slackfit-la", PROFILE)
    # The head's 1.2 ms fit a batch of one (1 ms). Served, the next four (due 2.6 ms) miss: 1 + 4 on time.
    # Shed, a full batch of them (2.5 ms) and one of the four behind (5 ms by 5.2 ms) make it: 8 on time.
    overloaded = _queue(1.2, 2.6, 2.6, 2.6, 2.6, 5.2, 5.2, 5.2, 5.2)
    fastest = [int(x * MS) for x in (1.0, 1.5, 2.0, 2.5)]
    assert la.on_time(overloaded, 1, 0, int(1.2 * MS), fastest) == 8
    assert la.on_time(overloaded, 1, 1 * MS, int(1.2 * MS), fastest) == 4
    assert la.decide(overloaded, 0) is None
    # ... and serves the next head in a full batch
    overloaded.pop_head()
    assert la.decide(overloaded, 0) == Decision(0, 4)
    # with time for the queue behind it, the urgent head is served, in the largest batch its slack allows
    assert la.decide(_queue(1.2, 3.6, 3.6, 3.6, 3.6, 7, 7, 7, 7), 0) == Decision(0, 1)
    assert la.decide(_queue(1.6, 3.6, 3.6, 3.6, 3.6), 0) == Decision(0, 2)


def test_slackfit_lookahead_plans_every_batch_with_the_latency_safety():
    la = make_policy("slackfit-la", PROFILE)
    safe = make_policy("slackfit-la", PROFILE, latency_safety=0.25)
    # SubNet 2 at batch 1 costs 4 ms: it fits 4.5 ms of slack, but not when planned at 5 ms
    assert la.decide(_queue(4.5), 0) == Decision(2, 1)
    assert safe.decide(_queue(4.5), 0) == Decision(1, 1)
    assert safe.decide(_queue(5.0), 0) == Decision(2, 1)
    # the backlog is planned with it too: after SubNet 1 x4 (5 ms, planned 6.25), two more need SubNet 0 x2
    # (1.5 ms, planned 1.875) by 8 ms: budget 6.125 ms, too little for the planned 6.25
    q = _queue(10.5, 8, 8, 8, 8, 8)
    assert la.decide(q, 0) == Decision(1, 4)
    assert safe.decide(q, 0) == Decision(0, 4)
    # nothing fits once planned with the safety: the fastest SubNet still tries on the bare slack, no shed
    assert safe.decide(_queue(1.1), 0) == Decision(0, 1)
    assert safe.decide(_queue(0.5), 0) is None
    with pytest.raises(ValueError, match="latency safety"):
        make_policy("slackfit-la", PROFILE, latency_safety=-0.1)


def test_edf_queue_reads_deadlines_in_order_after_out_of_order_pushes():
    q = _queue(5, 1, 3, 2, 4)
    assert [q.deadline_at(i) // MS for i in range(5)] == [1, 2, 3, 4, 5]
    q.pop_batch(0, 2)
    assert [q.deadline_at(i) // MS for i in range(3)] == [3, 4, 5]


def test_the_load_estimates_the_recent_arrival_rate():
    q = LoadEstimate(rate_window_ns=100 * MS)
    assert q.arrival_rate(0) == 0.0
    for i in range(1000):  # 1,000 req/s for 1 s, ten time constants
        q.arrived(i * MS)
    assert q.arrival_rate(999 * MS) == pytest.approx(1000, rel=0.01)
    assert q.arrival_rate(1099 * MS) == pytest.approx(1000 / 2.718281828, rel=0.01)  # decays with no arrivals


def test_the_arrival_rate_is_read_over_the_time_seen_until_it_spans_a_time_constant():
    q = LoadEstimate(rate_window_ns=500 * MS, burst_window_ns=50 * MS)
    for i in range(100):  # 1,000 req/s from cold, for a fifth of the long time constant
        q.arrived(i * MS)
    assert q.arrival_rate(99 * MS) == pytest.approx(1000, rel=0.02)  # not 181: the count of a fifth of it
    assert q.arrival_rate(99 * MS, burst=True) == pytest.approx(1000, rel=0.02)
    # after an idle spell longer than the long time constant, a new estimate: 100 in 10 ms, over the 50 ms
    # the short time constant spans, rather than 100 on top of the old count, decayed
    for i in range(100):
        q.arrived(700 * MS + i * MS // 10)
    assert q.arrival_rate(710 * MS) == pytest.approx(100 / (0.5 * -math.expm1(-0.1)), rel=0.02)
    decayed = sum(math.exp(-(10 - i / 10) / 50) for i in range(100))  # what the short time constant counts
    assert q.arrival_rate(710 * MS, burst=True) == pytest.approx(decayed / (0.05 * -math.expm1(-1.0)), rel=0.01)


def _steady_queue(rate_per_s, slo_ms=100.0, waiting=1, seconds=1.0):
    """A queue after ``seconds`` of arrivals at ``rate_per_s``, all but the last ``waiting`` already served;
    returns it, the arrival time of the last request and the load the loop counted."""
    q, load = EDFQueue(), LoadEstimate(rate_window_ns=100 * MS, round_min_samples=PROFILE.max_batch)
    gap = int(1e9 / rate_per_s)
    count = int(seconds * rate_per_s)
    for i in range(count):
        q.push(QueuedRequest(i * gap + int(slo_ms * MS), i * gap, 0, 2))
        load.arrived(i * gap)
    while len(q) > waiting:
        q.pop_head()
    return q, (count - 1) * gap, load


def test_slackfit_lookahead_keeps_spare_capacity_at_the_arrival_rate():
    def decide(max_utilization, rate=500, slo_ms=100.0):
        return make_policy("slackfit-la", PROFILE, max_utilization=max_utilization).decide(
            *_steady_queue(rate, slo_ms))

    # 500 req/s leave 2 ms of server time per sample. SubNet 2 costs 4, 3, 2.7, 2.5 ms a sample in batches of
    # 1..4: over any cap. SubNet 1 costs 2, 1.5, 1.3, 1.25 ms: at a cap of 0.9 batches settle at 2 (1.5 / 0.9
    # <= 2); at 0.6 none does. SubNet 0, the fastest, is never capped.
    assert decide(1.0) == Decision(2, 1)  # no cap
    assert decide(0.9) == Decision(1, 1)
    assert decide(0.6) == Decision(0, 1)
    assert decide(0.1) == Decision(0, 1)  # the cap never sheds by itself
    # a request waits for one settled batch and runs in the next: SubNet 1 settles at 2 (3 ms), so 6 ms
    assert decide(0.9, slo_ms=6.0) == Decision(1, 1)
    assert decide(0.9, slo_ms=5.9) == Decision(0, 1)


def test_slackfit_lookahead_prices_the_batch_a_steady_load_settles_to_not_the_one_at_hand():
    # one request at hand, whatever the load: the settled batch grows with the rate until it no longer fits
    assert make_policy("slackfit-la", PROFILE, max_utilization=0.9).decide(*_steady_queue(700)) == Decision(1, 1)
    assert make_policy("slackfit-la", PROFILE, max_utilization=0.9).decide(*_steady_queue(900)) == Decision(0, 1)
    policy = make_policy("slackfit-la", PROFILE, max_utilization=0.9)
    assert [policy.settles(1, rate, 100 * MS) for rate in (500, 700, 900)] == [True, True, False]
    assert policy.settles(1, 700, 10 * MS) and not policy.settles(1, 700, 9 * MS)  # settles at 4: 2 x 5 ms


def test_slackfit_lookahead_leaves_time_for_the_requests_it_cannot_see_yet():
    def decide(unseen_ago_ms, slo_ms=6.0, rate=1000):
        q, now, load = _steady_queue(rate, slo_ms, seconds=0.3)  # the burst rate
        if unseen_ago_ms is not None:  # else nothing is out of sight, as in a queue no round has started
            load.start_round(now - int(unseen_ago_ms * MS), now, now, 0)
        return make_policy("slackfit-la", PROFILE).decide(q, now, load)

    # Everything is in the queue: the head's 6 ms fit SubNet 2.
    assert decide(None) == Decision(2, 1)
    # Triton holds what arrived since the round started (just now): SubNet 2's 4 ms let 4 arrive at 1,000/s, a
    # batch of the fastest SubNet takes 2.5 ms, and 6.5 ms > 6; SubNet 1's 2 ms let 2 arrive, 1.5 ms: 3.5 ms fit.
    assert decide(0.0) == Decision(1, 1)
    # the round started 3 ms ago: more wait already and their first deadline is 3 ms nearer: only the fastest
    assert decide(3.0) == Decision(0, 1)
    # a loose SLO leaves room for them all
    assert decide(3.0, slo_ms=40.0) == Decision(2, 1)
    # a burst the fastest SubNet cannot keep up with (4 samples in 2.5 ms: 1,600/s) leaves it alone, SLO or not
    assert decide(None, slo_ms=40.0, rate=2000) == Decision(0, 1)
    assert decide(None, slo_ms=40.0, rate=1500) == Decision(2, 1)


def test_a_hand_over_smaller_than_a_full_batch_does_not_trip_the_burst_guard():
    def decide(samples, over_ms=1.0, slo_ms=40.0):
        q, load, now = EDFQueue(), LoadEstimate(round_min_samples=PROFILE.max_batch), 100 * MS
        load.start_round(now, now - int(over_ms * MS), now, samples)
        for i in range(samples):
            q.push(QueuedRequest(now + int(slo_ms * MS), now - int(over_ms * MS) + i * MS // 10, 0, 2))
            load.arrived(now - int(over_ms * MS) + i * MS // 10)
        return make_policy("slackfit-la", PROFILE).decide(q, now, load)

    # 3 samples in 1 ms read as 3,000/s, beyond the fastest SubNet's 4 per 2.5 ms (1,600/s): but one batch
    # serves them all, so they run on the most accurate SubNet the SLO allows
    assert decide(3) == Decision(2, 3)
    # a full batch's worth in 1 ms is a burst the fastest alone can try to keep up with
    assert decide(4) == Decision(0, 4)
    # and a full batch at a rate the fastest keeps up with is no burst
    assert decide(4, over_ms=4.0) == Decision(2, 4)


def test_the_load_sees_a_burst_on_its_short_time_constant():
    q = LoadEstimate(rate_window_ns=500 * MS, burst_window_ns=50 * MS)
    for i in range(1000):  # 1,000 req/s for 1 s
        q.arrived(i * MS)
    assert q.arrival_rate(999 * MS, burst=True) == pytest.approx(1000, rel=0.02)
    for i in range(100):  # then 100 in 10 ms
        q.arrived(1000 * MS + i * MS // 10)
    now = 1010 * MS
    assert q.arrival_rate(now) == pytest.approx(1204, rel=0.02)  # the long estimate moves by a fifth
    assert q.arrival_rate(now, burst=True) == pytest.approx(2620, rel=0.02)  # the short one sees the burst
    assert q.arrival_rate(now + 500 * MS, burst=True) == q.arrival_rate(now + 500 * MS)  # never below the long one


def test_a_hand_over_counts_as_a_burst_rate_for_its_round():
    q = LoadEstimate(rate_window_ns=500 * MS, burst_window_ns=50 * MS)
    q.start_round(100 * MS, 90 * MS, 100 * MS, 20)  # 20 arrived over the last 10 ms: 2,000/s
    for i in range(20):
        q.arrived(90 * MS + i * MS // 2)
    assert q.unseen_since() == 100 * MS
    assert q.arrival_rate(100 * MS, burst=True) == pytest.approx(2000)
    assert q.arrival_rate(100 * MS) == pytest.approx(416, rel=0.05)  # the long estimate: 20 over the 50 ms it
    # has seen at least (it has seen 10)
    q.round_min_samples = 20
    assert q.arrival_rate(100 * MS, burst=True) == pytest.approx(2000)
    q.round_min_samples = 21
    assert q.arrival_rate(100 * MS, burst=True) == pytest.approx(571, rel=0.05)  # the short time constant alone:
    # a hand-over of 20 is too small to count here
    q.round_min_samples = 1
    q.start_round(200 * MS, 200 * MS, 200 * MS, 1)  # a round that found the model idle says nothing of the rate
    # back to the time constants' estimates: 20 arrivals over the 110 ms seen
    assert q.arrival_rate(200 * MS, burst=True) == pytest.approx(q.arrival_rate(200 * MS))
    assert q.arrival_rate(200 * MS) < 200


def test_the_load_remembers_the_highest_burst_rate_fading_over_its_memory():
    q = LoadEstimate(burst_memory_ns=1000 * MS)
    q.remember(0, 4000.0)
    assert q.peak_rate(0) == 4000.0
    q.remember(1000 * MS, 100.0)
    assert q.peak_rate(1000 * MS) == pytest.approx(4000 * math.exp(-1))  # a second later, faded by e
    q.remember(1000 * MS, 3000.0)
    assert q.peak_rate(1000 * MS) == 3000.0  # a higher rate than the faded one is remembered instead
    assert q.peak_rate(2000 * MS) == pytest.approx(3000 * math.exp(-1))
    forgetful = LoadEstimate()
    forgetful.remember(0, 4000.0)
    assert forgetful.peak_rate(0) == 0.0  # no memory: nothing remembered


def test_slackfit_lookahead_budgets_for_a_burst_it_remembers_in_the_lull_after_it():
    def decide(burst_memory_ms, lull_ms=100):
        q = EDFQueue()
        load = LoadEstimate(burst_memory_ns=int(burst_memory_ms * MS), round_min_samples=PROFILE.max_batch)
        policy = make_policy("slackfit-la", PROFILE)
        for i in range(200):  # 4,000 req/s for 50 ms, served as they come
            q.push(QueuedRequest(i * MS // 4 + 40 * MS, i * MS // 4, 0, 2))
            load.arrived(i * MS // 4)
            if len(q) == 4:
                load.remember_burst(i * MS // 4)  # as the serving loop does before each decision
                while q:
                    q.pop_head()
        now = 50 * MS + lull_ms * MS
        load.start_round(now, now, now, 1)  # then one request, alone, in a round that sees nothing else
        q.push(QueuedRequest(now + 10 * MS, now, 0, 2))
        load.arrived(now)
        load.remember_burst(now)
        return policy.decide(q, now, load)

    # Forgotten, the burst leaves SubNet 2 (4 ms) the head's 10 ms. Remembered (faded to 3,600/s after 100 ms),
    # 15 requests may arrive during it, and full batches of the fastest SubNet take 9.5 ms more to serve them:
    # SubNet 1 (2 ms, then 8 arriving in 5 ms) fits.
    assert decide(0) == Decision(2, 1)
    assert decide(1000) == Decision(1, 1)
    assert decide(1000, lull_ms=3000) == Decision(2, 1)  # faded to 200/s three seconds later


@pytest.mark.parametrize("name", [n for n in POLICY_NAMES if "<" not in n] + ["fixed:1"])
def test_a_decision_changes_nothing_it_reads_and_is_the_same_when_asked_again(name):
    """Policies are pure: the serving loop owns the queue and the load, and asking twice gives one answer."""
    import copy

    q = EDFQueue()
    load = LoadEstimate(rate_window_ns=100 * MS, burst_memory_ns=3000 * MS, round_min_samples=PROFILE.max_batch)
    for i in range(40):  # a burst on top of a steady load, with every kind of SubNet range
        arrival = i * MS // 2 if i < 30 else 15 * MS + (i - 30) * MS // 20
        lo, hi = [(0, 2), (1, 2), (2, 2), (0, 2)][i % 4]
        q.push(QueuedRequest(arrival + 30 * MS, arrival, lo, hi, size=1 + i % 2))
        load.arrived(arrival, 1 + i % 2)
    now = 16 * MS
    load.start_round(now - MS, 15 * MS, now, 10)
    load.remember_burst(now)
    policy = make_policy(name, PROFILE, margin_ns=MS // 10, latency_safety=0.2, max_utilization=0.85, workers=2)
    before = (copy.deepcopy(vars(load)), [(r.deadline_ns, r.seq, r.lo, r.hi, r.size) for r in q._items],
              dict(q._ranges))
    first = policy.decide(q, now, load)
    second = policy.decide(q, now, load)
    assert first == second
    assert first is not None  # the state is one where every policy serves something
    assert (vars(load), [(r.deadline_ns, r.seq, r.lo, r.hi, r.size) for r in q._items], q._ranges) == before


def test_each_slackfit_la_rule_can_be_switched_off_and_changes_a_decision_it_made():
    def la(*rules_off):
        return make_policy("slackfit-la", PROFILE, rules_off=frozenset(rules_off))

    backlog = _queue(10.5, 11, 11, 11, 11, 11)  # after SubNet 2's batch the other two would miss
    assert la().decide(backlog, 0) == Decision(1, 4) and la("backlog").decide(backlog, 0) == Decision(2, 4)
    overloaded = _queue(1.2, 2.6, 2.6, 2.6, 2.6, 5.2, 5.2, 5.2, 5.2)  # serving the urgent head costs four
    assert la().decide(overloaded, 0) is None and la("shed_urgent_head").decide(overloaded, 0) == Decision(0, 1)
    even = make_policy("slackfit-la", CLIFF), make_policy("slackfit-la", CLIFF, rules_off=frozenset({"even_batches"}))
    assert even[0].decide(_queue(*[100] * 6), 0) == Decision(2, 3) and even[1].decide(_queue(*[100] * 6), 0) == \
        Decision(2, 4)
    q, now, load = _steady_queue(1000, 6.0, seconds=0.3)
    load.start_round(now, now, now, 0)  # what arrives from now on waits behind Triton's batcher
    assert la().decide(q, now, load) == Decision(1, 1) and la("unseen_backlog").decide(q, now, load) == Decision(2, 1)
    q, now, load = _steady_queue(2000, 40.0, seconds=0.3)  # a burst beyond the fastest SubNet's full batches
    assert la().decide(q, now, load) == Decision(0, 1) and la("burst_guard").decide(q, now, load) == Decision(2, 1)


def test_rules_off_names_only_rules_there_are():
    from superserve.scheduler.policies import LA_RULES, check_rules_off

    assert check_rules_off(" burst_guard, even_batches ") == {"burst_guard", "even_batches"}
    assert check_rules_off(list(LA_RULES)) == set(LA_RULES)
    with pytest.raises(ValueError, match="unknown slackfit-la rule utilization_cap; rules: backlog"):
        check_rules_off("utilization_cap")
