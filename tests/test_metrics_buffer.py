"""The metrics buffer bins histogram observations as Prometheus does, so the exporter's cost per flush is bounded."""

from __future__ import annotations

from superserve.serving.metrics import HISTOGRAMS, MetricsBuffer, histogram_bounds


def test_histograms_are_binned_cumulatively_and_drained_once():
    buffer = MetricsBuffer()
    for size in (1, 3, 16, 16, 40):  # bounds 1, 2, 4, 8, 12, 16, then +Inf
        buffer.batch(subnet=2, size=size, accuracy=0.97)
    buffer.outcome("on_time", 4)
    buffer.round(7)
    snapshot = buffer.drain()
    sizes = snapshot.histograms["batch_size"]
    assert sizes.cumulative == [1, 1, 2, 2, 2, 4, 5] and sizes.count == 5 and sizes.total == 76
    assert len(sizes.cumulative) == len(HISTOGRAMS["batch_size"][1]) + 1
    assert snapshot.histograms["served_accuracy"].cumulative == [0, 0, 5, 5, 5, 5, 5]  # 0.97 is in le="0.97"
    assert snapshot.histograms["round_requests"].cumulative == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    assert snapshot.samples == {2: 76} and snapshot.outcomes == {"on_time": 4}
    assert "slack_ms" not in snapshot.histograms  # nothing observed, nothing to send
    again = buffer.drain()
    assert again.histograms == {} and not again.outcomes and not again.samples


def test_every_observation_keeps_the_exported_counters_growing():
    """Triton's counters refuse a negative increment (the exporter's thread would die on one), so a histogram's
    sum must never shrink: a head already past due is observed as 0 slack."""
    buffer = MetricsBuffer()
    buffer.decision(slack_ns=-5_000_000, decision_ns=2_000)
    buffer.decision(slack_ns=3_000_000, decision_ns=2_000)
    slack = buffer.drain().histograms["slack_ms"]
    assert slack.total == 3.0 and slack.count == 2 and slack.cumulative[0] == 1


def test_bucket_bounds_follow_the_served_model():
    """A user's model gets buckets from its own profile and SLO, not the digits' (batch <= 16, accuracy 0.9-1)."""
    profile = {"max_batch_size": 32, "subnets": [{"accuracy": a} for a in (0.61, 0.7, 0.75)]}
    bounds = histogram_bounds(profile, default_slo_ms=400.0, handover_samples=256)
    assert bounds["batch_size"] == (1, 2, 4, 8, 16, 32)
    assert bounds["served_accuracy"] == (0.61, 0.7, 0.75)
    assert bounds["slack_ms"] == (8.0, 20.0, 40.0, 80.0, 200.0, 400.0, 800.0, 8000.0)
    assert bounds["round_requests"] == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    buffer = MetricsBuffer(bounds=bounds)
    buffer.batch(subnet=1, size=20, accuracy=0.7)
    snapshot = buffer.drain()
    assert snapshot.histograms["batch_size"].cumulative == [0, 0, 0, 0, 0, 1, 1]  # 20 is in le="32"
    assert snapshot.histograms["served_accuracy"].cumulative == [0, 1, 1, 1]
    many = {"max_batch_size": 12, "subnets": [{"accuracy": i / 100} for i in range(40)]}
    thinned = histogram_bounds(many, 50.0, 96)
    assert len(thinned["served_accuracy"]) == 12 and thinned["served_accuracy"][::11] == (0.0, 0.39)
    assert thinned["batch_size"] == (1, 2, 4, 8, 12) and thinned["round_requests"][-1] == 96
