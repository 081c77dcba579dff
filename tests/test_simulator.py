"""The discrete-event simulator: the server's own serving loop on simulated time, one record per arrival."""

import numpy as np
import pytest

from superserve.scheduler import Profile
from superserve.serving.config import ServingConfig
from superserve.serving.core import SuperServeCore
from superserve.serving.simulator import simulate, simulate_router

PROFILE_DICT = {"max_batch_size": 4, "input_shape": [1, 28, 28], "num_classes": 10, "subnets": [
    {"accuracy": 0.90, "latency_ms": {"1": 1.0, "2": 1.2, "3": 1.4, "4": 1.6}},
    {"accuracy": 0.99, "latency_ms": {"1": 4.0, "2": 6.0, "3": 8.0, "4": 10.0}}]}
PROFILE = Profile.from_dict(PROFILE_DICT)


def _config(policy, **settings):
    """A serving config whose costs are the profile's exactly: no margin, no overheads, nothing learned."""
    exact = dict(margin_ms=0.0, overhead_per_batch_ms=0.0, overhead_per_sample_ms=0.0, overhead_adapt_rate=0.0,
                 slowdown_adapt_rate=0.0, latency_safety=0.0, max_utilization=1.0, burst_memory_ms=0.0)
    return ServingConfig(policy=policy, **{**exact, **settings})


def test_the_simulator_runs_the_live_models_serving_loop(monkeypatch):
    served = []
    real = SuperServeCore.serve
    monkeypatch.setattr(SuperServeCore, "serve", lambda core, handles: served.append(len(handles)) or
                        real(core, handles))
    records = simulate(np.arange(0, 0.1, 0.01), PROFILE_DICT, _config("fixed:1"), slo_ms=20)
    assert sum(served) == len(records) == 10 and all(r.outcome == "on_time" for r in records)


def test_light_load_is_served_on_time_by_the_accurate_subnet():
    arrivals = np.arange(0, 1, 0.02)  # 50 req/s, far below capacity
    records = simulate(arrivals, PROFILE_DICT, _config("slackfit", num_buckets=8), slo_ms=20)
    assert len(records) == 50 and all(r.outcome == "on_time" and r.subnet == 1 for r in records)
    assert all(r.latency_ms == pytest.approx(4.0) for r in records)


def test_overload_moves_slackfit_to_the_fast_subnet_while_a_fixed_model_falls_behind():
    arrivals = np.arange(0, 1, 1 / 1000)  # 1000 req/s: SubNet 1 sustains 400, SubNet 0 2500
    slack = simulate(arrivals, PROFILE_DICT, _config("slackfit", num_buckets=8), slo_ms=20)
    fixed = simulate(arrivals, PROFILE_DICT, _config("fixed:1"), slo_ms=20)
    assert len(slack) == len(fixed) == 1000
    attainment = lambda rs: sum(r.outcome == "on_time" for r in rs) / len(rs)
    assert attainment(slack) > 0.99 and attainment(fixed) < 0.6
    assert {r.subnet for r in slack if r.outcome == "on_time"} >= {0}


def test_impossible_slo_is_shed_at_arrival():
    records = simulate([0.0, 0.1], PROFILE_DICT, _config("slackfit"), slo_ms=0.5)
    assert [r.outcome for r in records] == ["shed", "shed"]


def test_requests_arriving_during_a_round_are_dated_to_its_start_as_the_live_server_does():
    # SubNet 1 takes 4 ms. #0 starts a round at 0; #1 arrives at 1 ms, while it runs, so the next round dates it
    # at 0 (the model cannot see when it arrived): with a 6 ms SLO only 2 ms seem left, and it is refused,
    # though it really had 5 ms. #2 arrives long after, finds the model idle, and is served.
    records = simulate([0.0, 0.001, 0.1], PROFILE_DICT, _config("fixed:1"), slo_ms=6)
    assert [r.outcome for r in records] == ["on_time", "shed", "on_time"]


def test_answers_wait_for_the_end_of_their_round_unless_the_next_batch_would_make_them_late():
    # one round of 5 requests on SubNet 1 at a 15 ms SLO: a batch of 4 (10 ms), then 1 (4 ms). The first four
    # would be answered at 14 ms by the end of the round (fine); with a latency safety of 0.5 the second batch
    # is planned at 6 ms, 16 > 15, so they go out at 10 ms.
    arrivals = [0.0] * 5
    held = simulate(arrivals, PROFILE_DICT, _config("fixed:1"), slo_ms=15)
    assert [r.latency_ms for r in held] == [pytest.approx(14.0)] * 5
    sent = simulate(arrivals, PROFILE_DICT, _config("fixed:1", latency_safety=0.5), slo_ms=15)
    assert [r.latency_ms for r in sent] == [pytest.approx(10.0)] * 4 + [pytest.approx(14.0)]
    assert all(r.outcome == "on_time" for r in held + sent)


def test_a_lead_in_leaves_the_run_a_warm_arrival_rate_as_the_live_benchmark_does():
    # 300 req/s: SubNet 1 at its best (batches of 4, 2.5 ms a sample) would keep the server 75% busy, beyond a
    # 70% cap. From cold the first requests read as a light load and get SubNet 1; after the trace's last half
    # second, the estimate knows better from the first request on.
    arrivals = np.arange(0, 1, 1 / 300)
    config = _config("slackfit-la", max_utilization=0.7)
    cold = simulate(arrivals, PROFILE_DICT, config, slo_ms=100)
    warm = simulate(arrivals, PROFILE_DICT, config, slo_ms=100, lead_in_s=0.5)
    assert len(cold) == len(warm) == len(arrivals)  # only the trace's own arrivals are recorded
    assert [r.scheduled_s for r in warm] == pytest.approx(list(arrivals))  # on the trace's clock
    assert cold[0].subnet == 1 and warm[0].subnet == 0
    # the lead-in is the trace's end, as the live benchmark's: a trace whose end is quiet leaves it cold
    quiet_end = np.concatenate([arrivals, [3.0]])
    assert simulate(quiet_end, PROFILE_DICT, config, slo_ms=100, lead_in_s=0.5)[0].subnet == 1
    assert simulate(quiet_end, PROFILE_DICT, config, slo_ms=100, lead_in_s=0.5, duration_s=1.0)[0].subnet == 0
    assert all(r.outcome == "on_time" for r in cold + warm)


# The router over many workers (simulate_router: the live Router, driven by events) ------------------------------
def test_the_simulated_router_is_the_live_router(monkeypatch):
    from superserve.serving.router import Router

    handed, answered = [], []
    serve, answer = Router.serve, Router.answer
    monkeypatch.setattr(Router, "serve", lambda router, handles: handed.append(len(handles)) or serve(router, handles))
    monkeypatch.setattr(Router, "answer", lambda router, assignment, logits: answered.append(assignment.samples)
                        or answer(router, assignment, logits))
    records = simulate_router(np.arange(0, 0.1, 0.01), PROFILE_DICT, _config("fixed:1"), slo_ms=20, workers=2)
    assert sum(handed) == sum(answered) == len(records) == 10 and all(r.outcome == "on_time" for r in records)


def _router_config(policy="slackfit-la"):
    return _config(policy, max_utilization=0.85)


def test_the_simulated_router_requeues_a_killed_workers_batch_and_serves_it_after_the_restart():
    arrivals = np.arange(0, 2, 1 / 100)  # 100 req/s: one worker serves it on the accurate SubNet
    records = simulate_router(arrivals, PROFILE_DICT, _router_config(), slo_ms=40, workers=2, kills=[(0.5, 0)],
                              restart_s=0.3)
    assert len(records) == 200 and all(r is not None for r in records)
    assert all(r.outcome == "on_time" and r.subnet == 1 for r in records)


def test_losing_half_the_workers_costs_accuracy_not_attainment():
    # 8 workers serve 2,000 req/s on the accurate SubNet (400 each at full batches); 4 of them cannot
    arrivals = np.sort(np.random.default_rng(0).uniform(0, 4, 8000))
    records = simulate_router(arrivals, PROFILE_DICT, _router_config(), slo_ms=40, workers=8,
                              kills=[(2.0, 0), (2.0, 1), (2.0, 2), (2.0, 3)])
    before = [r for r in records if 0.5 <= r.scheduled_s < 2.0]
    after = [r for r in records if r.scheduled_s >= 2.2]
    attainment = lambda rs: sum(r.outcome == "on_time" for r in rs) / len(rs)
    accuracy = lambda rs: np.mean([r.accuracy for r in rs if r.outcome == "on_time"])
    assert attainment(before) >= 0.99 and attainment(after) >= 0.99
    assert accuracy(after) < accuracy(before) - 0.02


def test_without_a_worker_left_the_simulated_router_refuses_at_once():
    records = simulate_router([0.0, 0.5, 0.6], PROFILE_DICT, _router_config("fixed:1"), slo_ms=40, workers=1,
                              kills=[(0.1, 0)])
    assert [r.outcome for r in records] == ["on_time", "shed", "shed"]


def test_the_simulated_router_learns_the_overheads_as_the_live_router_does():
    # batches take 5 ms more than profiled; the router plans with no overhead at first, then with what it observed
    config = _config("slackfit-la", overhead_adapt_rate=0.5)
    records = simulate_router(np.arange(0, 1, 0.05), PROFILE_DICT, config, slo_ms=8, workers=1, overhead_ms=(5.0, 0.0))
    assert (records[0].subnet, records[0].outcome) == (1, "late")  # 4 ms planned, 9 ms taken
    assert all((r.subnet, r.outcome) == (0, "on_time") for r in records[-5:])  # 6 ms: the only SubNet in time


def test_the_simulated_router_refuses_on_arrival_what_no_worker_can_serve_behind_the_queue():
    # 12 requests at once, 2 ms SLO: the first runs at once; behind it a batch of 4 fits the optimistic bound
    # (Dispatcher.admits, as live), the 7 after it are refused on arrival; none is answered late
    records = simulate_router(np.zeros(12), PROFILE_DICT, _router_config("slackfit"), slo_ms=2, workers=1)
    assert [r.latency_ms for r in records[5:]] == [0.0] * 7 and all(r.outcome == "shed" for r in records[5:])
    assert [r.outcome for r in records[:2]] == ["on_time"] * 2 and "late" not in {r.outcome for r in records}


def test_the_simulated_routers_lead_in_is_not_recorded():
    arrivals = np.arange(0, 1, 0.1)
    records = simulate_router(arrivals, PROFILE_DICT, _router_config(), slo_ms=40, workers=2, lead_in_s=0.5,
                              duration_s=1.0)
    assert len(records) == 10 and [round(r.scheduled_s, 6) for r in records] == [round(t, 6) for t in arrivals]


def test_simulate_model_runs_the_router_only_when_the_config_has_several_workers():
    from superserve.serving.simulator import simulate_model

    arrivals = np.random.default_rng(1).uniform(0, 1, 400).cumsum() / 400
    one, two = _config("slackfit-la"), _config("slackfit-la", workers=2)
    args = dict(slo_ms=8, overhead_ms=(0.5, 0.1), lead_in_s=0.2, duration_s=1.0)
    def seen(records):
        return [(r.outcome, r.subnet, r.latency_ms) for r in records]

    routed = seen(simulate_model(arrivals, PROFILE_DICT, two, handover_samples=4, **args))
    assert routed == seen(simulate_router(arrivals, PROFILE_DICT, two, **args))
    rounds = seen(simulate_model(arrivals, PROFILE_DICT, one, handover_samples=4, **args))
    assert rounds == seen(simulate(arrivals, PROFILE_DICT, one, handover_samples=4, **args)) != routed
