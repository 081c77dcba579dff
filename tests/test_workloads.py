"""Trace generators (rates and CV^2 measured on generated traces, seeds, Azure parsing) and metrics."""

import numpy as np
import pytest

from superserve_bench.metrics import summarise
from superserve_bench.replay import Record
from superserve_bench.traces import Trace, azure_functions, azure_minute_counts, bursty, time_varying


def _cv2(arrivals):
    gaps = np.diff(arrivals)
    return gaps.var() / gaps.mean() ** 2


@pytest.mark.parametrize("cv2", [2, 4, 8])
def test_bursty_variable_stream_has_the_rate_and_cv2_asked_for(cv2):
    trace = bursty(0, 200, cv2, duration_s=600, seed=1)
    assert trace.mean_rate == pytest.approx(200, rel=0.1)
    assert _cv2(trace.arrivals_s) == pytest.approx(cv2, rel=0.25)


def test_bursty_base_stream_is_steady_and_streams_add_up():
    base = bursty(100, 0, 0, duration_s=10, seed=0)
    assert _cv2(base.arrivals_s) < 1e-6 and len(base.arrivals_s) == 1000
    both = bursty(100, 50, 4, duration_s=200, seed=0)
    assert both.mean_rate == pytest.approx(150, rel=0.1)
    assert np.all(np.diff(both.arrivals_s) >= 0) and both.arrivals_s[-1] < 200


def test_seeds_reproduce_traces_and_differ_between_seeds():
    a, b, c = (bursty(50, 50, 8, 20, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.arrivals_s, b.arrivals_s)
    assert len(a.arrivals_s) != len(c.arrivals_s) or not np.array_equal(a.arrivals_s, c.arrivals_s)


def test_time_varying_ramps_at_the_given_acceleration():
    trace = time_varying(100, 300, acceleration=20, cv2=2, duration_s=40, seed=2)
    starts, rates = trace.rate_series(2.0)
    assert rates[:2].mean() == pytest.approx(120, rel=0.25)  # around t=2 s: 100 + 20 * 2
    assert rates[-5:].mean() == pytest.approx(300, rel=0.15)  # ramp done after 10 s
    assert _cv2(trace.arrivals_s[trace.arrivals_s > 15]) == pytest.approx(2, rel=0.3)


def test_azure_sample_parses_to_one_day_of_minute_totals():
    counts = azure_minute_counts()
    assert counts.shape == (1440,)
    assert counts.mean() == pytest.approx(8083, rel=0.01)  # the sample's documented figures
    assert counts.min() == 4098 and counts.max() == 45514


def test_azure_trace_keeps_the_shape_at_the_target_rate():
    trace = azure_functions(mean_rate=500, duration_s=120, seed=0)
    assert trace.mean_rate == pytest.approx(500, rel=0.05)
    counts = azure_minute_counts()
    _, rates = trace.rate_series(120 / 1440 * 60)  # 60 compressed minutes per bin
    expected = counts.reshape(24, 60).mean(1) / counts.mean() * 500
    assert np.corrcoef(rates[:24], expected)[0, 1] > 0.95


def test_trace_files_and_perf_analyzer_intervals_round_trip(tmp_path):
    trace = bursty(10, 10, 2, 5, seed=0)
    trace.save(tmp_path / "t.json")
    loaded = Trace.load(tmp_path / "t.json")
    np.testing.assert_allclose(loaded.arrivals_s, trace.arrivals_s, atol=1e-6)
    trace.write_request_intervals(tmp_path / "intervals.txt")
    gaps_us = np.loadtxt(tmp_path / "intervals.txt")
    np.testing.assert_allclose(np.cumsum(gaps_us) / 1e6, trace.arrivals_s, atol=1e-3)


@pytest.mark.parametrize("bad", [dict(base_rate=-1), dict(cv2=float("nan")), dict(duration_s=float("inf"))])
def test_trace_parameters_are_checked(bad):
    args = dict(base_rate=1.0, variable_rate=1.0, cv2=2.0, duration_s=1.0) | bad
    with pytest.raises(ValueError, match="finite number"):
        bursty(**args)


def test_metrics_follow_the_paper_definitions():
    records = [
        Record(0.0, 0.1, 10.0, "on_time", 3, 0.98),
        Record(0.1, 0.2, 12.0, "on_time", 1, 0.94),
        Record(0.2, 0.3, 40.0, "late", 3, 0.98),
        Record(0.3, 0.0, 0.5, "shed"),
    ]
    s = summarise(records, slo_ms=30)
    assert s["slo_attainment"] == 0.5  # shed and late requests are misses
    assert s["mean_serving_accuracy"] == pytest.approx(0.96)  # over on-time requests only
    assert s["outcomes"] == {"on_time": 2, "late": 1, "shed": 1, "error": 0, "timeout": 0}
    assert s["latency_ms"]["max"] == 40.0 and s["subnet_share"] == {"1": 0.5, "3": 0.5}


def _row(system, attainment, accuracy, att_spread=0.0, acc_spread=0.0):
    return {"system": system, "slo_attainment": attainment, "mean_serving_accuracy": accuracy,
            "attainment_spread": att_spread, "accuracy_spread": acc_spread}


def test_benchmark_figures_against_fixed_models_and_dominance_beyond_noise():
    from superserve_bench.compare import compare_to_fixed

    rows = [_row("SlackFit-LA", 0.990, 0.980, 0.004, 0.001),
            _row("MaxBatch", 0.992, 0.9805, 0.003, 0.001),  # better on both, but within the spread
            _row("Clipper+ 0.938", 0.999, 0.938), _row("Clipper+ 0.974", 0.995, 0.974),
            _row("Clipper+ 0.987", 0.500, 0.987)]
    c = compare_to_fixed(rows, "SlackFit-LA")
    # best fixed model with at least SlackFit-LA's attainment: 0.974; with at least its accuracy: 0.987
    assert c["vs_fixed_for_accuracy_gain"] == "Clipper+ 0.974"
    assert c["accuracy_gain_points_at_equal_attainment"] == pytest.approx(0.6)
    assert c["attainment_ratio_at_equal_accuracy"] == pytest.approx(0.990 / 0.500)
    assert c["dominated_by"] == ["MaxBatch"] and c["clearly_dominated_by"] == []
    # fixed models reaching 0.99: 0.938 and 0.974; SlackFit-LA reaches it too and is more accurate than both
    assert c["bar_rule_holds"] is True
    lower = [_row("SlackFit-LA", 0.989, 0.980)] + rows[1:]
    assert compare_to_fixed(lower, "SlackFit-LA")["bar_rule_holds"] is False  # 0.989 < 0.99
    rows[1] = _row("MaxBatch", 0.999, 0.981, 0.003, 0.001)  # now beyond the spread on attainment
    assert compare_to_fixed(rows, "SlackFit-LA")["clearly_dominated_by"] == ["MaxBatch"]
    assert compare_to_fixed(rows, "SlackFit") == {}  # not run


def test_benchmark_rows_pool_repeated_runs_and_keep_their_spread():
    from superserve_bench.compare import aggregate

    def run(on_time, shed):
        return [Record(0.0, 0.0, 1.0, "on_time", 9, 0.98)] * on_time + [Record(0.0, 0.0, 0.0, "shed")] * shed

    row = aggregate("SlackFit-LA", "m", {}, [run(9, 1), run(7, 3)], slo_ms=10)
    assert row["requests"] == 20 and row["slo_attainment"] == pytest.approx(0.8)
    assert row["attainment_spread"] == pytest.approx(0.2) and row["accuracy_spread"] == pytest.approx(0.0)
    assert [r["slo_attainment"] for r in row["runs"]] == pytest.approx([0.9, 0.7])


def test_the_servers_own_books_of_runs_pool_into_the_mean_requests_time_and_the_models_count_of_misses():
    from superserve_bench.compare import aggregate
    from superserve_bench.prometheus import model_books
    from superserve_bench.report import markdown

    def scrape(requests, executions, queue_us, infer_us, output_us, late, shed, other=0.0):
        m, v = 'model="ss",version="1"', 'model="ss_vit",version="1"'  # another model's books stay out
        return {f"nv_inference_count{{{m}}}": requests, f"nv_inference_exec_count{{{m}}}": executions,
                f"nv_inference_queue_duration_us{{{m}}}": queue_us,
                f"nv_inference_compute_input_duration_us{{{m}}}": 0.0,
                f"nv_inference_compute_infer_duration_us{{{m}}}": infer_us,
                f"nv_inference_compute_output_duration_us{{{m}}}": output_us,
                f"nv_inference_request_duration_us{{{m}}}": queue_us + infer_us + output_us,
                f'superserve_requests_total{{{m},outcome="late"}}': late,
                f'superserve_requests_total{{{m},outcome="shed"}}': shed,
                f"nv_inference_count{{{v}}}": other, f'superserve_requests_total{{{v},outcome="late"}}': other}

    start = scrape(100, 10, 1e5, 2e5, 5e4, 1, 2, other=7.0)
    first = model_books(start, scrape(300, 20, 3e5, 6e5, 1.5e5, 3, 2, other=70.0), "ss")
    assert first["requests"] == 200 and first["executions"] == 10 and first["queue_us"] == 2e5
    assert first["outcomes"] == {"late": 2, "shed": 0}
    second = model_books(start, scrape(200, 20, 4e5, 2e5, 1.5e5, 1, 8), "ss")  # 100 requests, 6 refused
    runs = [[Record(0.0, 0.0, 4.0, "on_time", 1, 0.9)] * 290 + [Record(0.0, 0.0, 0.0, "shed")] * 10]
    row = aggregate("SlackFit-LA", "ss", {}, runs, slo_ms=10, books=[first, second])
    b = row["server_books"]
    assert b["requests_per_execute"] == pytest.approx(300 / 20)
    assert (b["queue_ms"], b["execute_ms"], b["output_ms"]) == pytest.approx((5 / 3, 4 / 3, 2 / 3))
    assert b["in_triton_ms"] == pytest.approx(b["queue_ms"] + b["execute_ms"] + b["output_ms"])
    assert b["outcomes"] == {"late": 2, "shed": 6}
    assert aggregate("Clipper+ 0.9", "n", {}, runs, slo_ms=10)["runs"] == row["runs"]  # books are optional
    report = markdown({"slo_ms": 10, "duration_s": 1, "capacity": {"top_rps": 1, "fastest_rps": 2},
                       "traces": [{"name": "t", "mean_rate": 1, "requests": 300, "rows": [row], "vs_fixed": {}}]})
    assert "| SlackFit-LA | 15.0 | 1.67 | 1.33 | 0.67 | 3.67 | 4.00 | 8 / 10 |" in report
    assert "measured capacity (1 req/s; the fastest SubNet's: 2 req/s)" in report
    # loads set against a given capacity (--top-rps) say so, and what was measured
    given = markdown({"slo_ms": 10, "duration_s": 1, "traces": [],
                      "capacity": {"top_rps": 600, "measured_top_rps": 553, "fastest_rps": 2}})
    assert "given capacity (600 req/s; measured now: 553 req/s; the fastest SubNet's: 2 req/s)" in given


def test_replayer_records_every_request_when_no_server_answers():
    """No server on the port: the replay must not hang on connecting, every request ends in its own record,
    and the garbage collector the replay switches off is back on afterwards."""
    import gc
    import socket
    import time

    from superserve_bench.replay import replay_sync

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    trace = bursty(0, 40, 1.0, duration_s=0.5, seed=3)
    started = time.monotonic()
    records = replay_sync(trace, f"127.0.0.1:{port}", 30.0, np.zeros((2, 1, 28, 28), np.float32), timeout_s=2.0)
    assert len(records) == len(trace.arrivals_s) > 0
    assert {r.outcome for r in records} <= {"shed", "error", "timeout"}
    assert all(r.message for r in records)
    assert time.monotonic() - started < 15
    assert gc.isenabled()


def test_pooling_benchmark_runs_matches_traces_by_relative_load_and_finds_dominance_on_the_pooled_means():
    from superserve_bench.bench_pool import pool

    def result(top_rps, rate, la, maxbatch):
        def row(system, runs):
            return {"system": system, "runs": [{"slo_attainment": a, "mean_serving_accuracy": c} for a, c in runs]}
        trace = {"params": {"kind": "bursty", "cv2": 8}, "mean_rate": rate,
                 "rows": [row("SlackFit-LA", la), row("MaxBatch", maxbatch), row("Clipper+ 0.974", [(1.0, 0.974)])]}
        return {"capacity": {"top_rps": top_rps}, "traces": [trace]}

    # two benchmarks on machines of different speed: the same 0.7x trace; LA wins the first, loses the second
    first = result(800.0, 560.0, la=[(0.998, 0.986), (0.996, 0.986)], maxbatch=[(0.995, 0.985), (0.995, 0.985)])
    second = result(700.0, 490.0, la=[(0.990, 0.980), (0.990, 0.980)], maxbatch=[(0.999, 0.987), (0.999, 0.987)])
    pooled = pool([first, second])
    assert list(pooled) == ["bursty 0.7x CV² 8"]
    rows = {r["system"]: r for r in pooled["bursty 0.7x CV² 8"]}
    assert len(rows["SlackFit-LA"]["runs"]) == 4
    assert rows["SlackFit-LA"]["slo_attainment"] == pytest.approx(0.9935)
    assert rows["SlackFit-LA"]["mean_serving_accuracy"] == pytest.approx(0.983)
    assert rows["SlackFit-LA"]["attainment_spread"] == pytest.approx(0.008)
    from superserve_bench.compare import compare_to_fixed
    verdict = compare_to_fixed(pooled["bursty 0.7x CV² 8"], "SlackFit-LA")
    assert verdict["dominated_by"] == ["MaxBatch"]  # 0.997 / 98.6% against 0.9935 / 98.3% on the pooled means
    assert verdict["clearly_dominated_by"] == []  # but within the spread between runs
    from superserve_bench.bench_pool import markdown
    report = markdown(pooled, ["a", "b"])
    # runs are counted per system: the fixed SubNet ran once in each benchmark, the adaptive systems twice
    assert "| SlackFit-LA | 4 | 0.9935 ± 0.0040 | 98.30% ± 0.30 |" in report
    assert "| Clipper+ 0.974 | 2 | 1.0000 ± 0.0000 | 97.40% ± 0.00 |" in report
    # the 0.974 SubNet reaches 0.99; SlackFit-LA does too and is more accurate on the pooled means
    assert "- **SlackFit-LA**: dominated on the pooled mean by: MaxBatch; beyond the spread between runs: none; " \
           "the bar holds." in report
    # a row without its runs listed counts as one run
    lone = {"capacity": {"top_rps": 800.0}, "traces": [{"params": {"kind": "bursty", "cv2": 8}, "mean_rate": 560.0,
                                                        "rows": [{"system": "INFaaS", "slo_attainment": 1.0,
                                                                  "mean_serving_accuracy": 0.938}]}]}
    assert pool([lone])["bursty 0.7x CV² 8"][0]["runs"] == [{"slo_attainment": 1.0, "mean_serving_accuracy": 0.938}]


def test_pooling_keeps_held_out_traces_of_the_same_kind_and_load_apart():
    from superserve_bench.bench_pool import trace_label

    azure = {"params": {"kind": "azure_functions"}, "mean_rate": 560.0}
    halves = [trace_label({**azure, "name": f"heldout-azure-functions-{part}"}, 700.0) for part in ("0-499", "500-999")]
    assert halves == ["heldout-azure-functions-0-499", "heldout-azure-functions-500-999"]
    assert trace_label(azure, 700.0) == trace_label({**azure, "mean_rate": 480.0}, 600.0) == "azure functions 0.8x"


def test_benchmark_systems_have_distinct_labels_even_when_subnets_tie_on_accuracy():
    from superserve_bench.bench import systems_for

    accuracies = [0.895, 0.931, 0.935, 0.935, 0.936, 0.941]
    profile = {"subnets": [{"accuracy": a} for a in accuracies]}
    labels = [s.label for s in systems_for(profile)]
    assert len(set(labels)) == len(labels) == 4 + 6
    assert "Clipper+ 0.935" in labels and "Clipper+ 0.935 (SubNet 3)" in labels


def test_a_benchmark_variant_is_superserve_with_its_serving_parameters_over_the_shipped_ones():
    from superserve_bench.bench import parse_variant, repository_models

    variant = parse_variant("margin 5:margin_ms=5; max_hold_ms = 10", 2)
    assert (variant.label, variant.model, variant.policy) == ("margin 5", "superserve_variant_2", "slackfit-la")
    [model] = repository_models([variant])
    assert model.parameters == {"policy": "slackfit-la", "margin_ms": "5", "max_hold_ms": "10"}
    assert parse_variant("paper:policy=SlackFit", 0).policy == "slackfit"
    for bad, message in [("no settings", "LABEL:key=value"), ("x:margin_ms", "LABEL:key=value"),
                         ("x:nope=1", "unknown parameter 'nope'"), ("x:margin_ms=soon", "must be float")]:
        with pytest.raises(ValueError, match=message):
            parse_variant(bad, 0)


def test_a_runs_lead_in_is_the_end_of_its_trace_from_zero():
    from superserve_bench.bench import tail

    trace = Trace("t", np.array([0.0, 0.1, 0.2, 9.0, 9.5, 9.9]), {"duration_s": 10.0})
    lead_in = tail(trace, 2.0)
    assert lead_in.arrivals_s.tolist() == pytest.approx([1.0, 1.5, 1.9])  # 8..10 s, from 0
    assert lead_in.duration_s == 2.0


@pytest.mark.parametrize("top_rps", ["0", "-5", "nan", "inf"])
def test_the_benchmark_refuses_a_given_capacity_that_is_no_capacity(top_rps, capsys):
    from superserve_bench.bench import main

    with pytest.raises(SystemExit) as exited:
        main(["--top-rps", top_rps])
    assert exited.value.code == 2
    assert "--top-rps must be a finite capacity above 0 req/s" in capsys.readouterr().err


def test_the_peer_report_pools_low_load_latency_over_its_rounds_against_plain_triton():
    """One round's p99 of 500 requests is its 5th-slowest; the report also gives p50/p99 over all rounds' requests,
    each system against plain Triton on the same SubNet."""
    from superserve_bench.bench_peer import BY_CONFIG, PER_REQUEST, PLAIN, markdown, percentiles

    summary = percentiles([1.0] * 98 + [5.0, 9.0])
    assert summary["requests"] == 100 and summary["p50_ms"] == 1.0
    assert summary["p99_ms"] == pytest.approx(5.0 + 0.01 * 4.0)  # numpy's linear interpolation, 99% of 99 gaps
    saturation = {"throughput_rps": 100.0, "requests_per_execution": 16.0}
    rounds, pooled = [], []
    for subnet in ("fastest", "most accurate"):
        for system, p99 in ((BY_CONFIG, 2.0), (PER_REQUEST, 2.5), (PLAIN, 2.25)):
            rounds.append({"round": 0, "subnet": subnet, "system": system, "saturation": saturation,
                           "low_load": {"p50_ms": 1.0, "p99_ms": p99}})
            pooled.append({"subnet": subnet, "system": system, "requests": 1500, "p50_ms": 1.0, "p99_ms": p99})
    report = markdown({"concurrency": 64, "seconds": 5, "low_load_requests": 500, "rounds": rounds,
                       "low_load_pooled": pooled})
    assert ("- fastest, SuperServe (pinned by config), low load pooled over the rounds (1500 requests): p50 1.00 ms "
            "(+0.00 against plain Triton's), p99 2.00 ms (-0.25)") in report
    assert "- most accurate, SuperServe (pinned per request, 3 outputs), low load pooled over the rounds" in report
    assert report.endswith("p99 2.50 ms (+0.25)")
    older = markdown({"concurrency": 64, "seconds": 5, "low_load_requests": 500, "rounds": rounds})
    assert "low load pooled" not in older and "median" in older  # a report saved before pooling still reads
