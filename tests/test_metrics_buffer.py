"""The metrics buffer bins histogram observations as Prometheus does, so the exporter's cost per flush is bounded."""

from __future__ import annotations

from superserve.serving.metrics import HISTOGRAMS, MetricsBuffer


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
