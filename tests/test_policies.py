"""Policies on hand-built queues and profiles: bucket choice, EDF order, shedding, accuracy floors."""

import pytest

from superserve.scheduler import Decision, EDFQueue, Profile, ProfileError, QueuedRequest, make_policy
from superserve.scheduler.policies import SlackFit

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


def test_slackfit_lookahead_steps_down_only_when_a_backlog_is_at_stake():
    paper = make_policy("slackfit", PROFILE, num_buckets=4)
    la = make_policy("slackfit-la", PROFILE, num_buckets=4)
    # 10.5 ms slack, nothing behind the batch: both take the top bucket (SubNet 2, batch 4, 10 ms)
    assert la.decide(_queue(10.5), 0) == paper.decide(_queue(10.5), 0) == Decision(2, 4)
    # six waiting: after SubNet 2 x4 (10 ms) the other two need >= 1.2 ms more; 10.5 is not enough
    q = _queue(10.5, 11, 11, 11, 11, 11)
    assert paper.decide(q, 0) == Decision(2, 4)
    assert la.decide(q, 0) == Decision(1, 4)  # 5 ms + 1.2 ms fits
    assert la.decide(_queue(0.5), 0) is None  # infeasible heads are still shed
