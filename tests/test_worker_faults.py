"""Losing a worker under load, against a real tritonserver: a worker process SIGKILLed in the middle of a steady
load. Assertions are on accounting (exactly one answer per request), on what the router logged, and on
attainment at a load one worker holds with room to spare; timings are bounds far above what is expected."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from superserve.runtime.tritonenv import REPO_ROOT, start_server
from superserve_bench.faults import running_workers, worker_events
from superserve_bench.prometheus import scrape, total
from superserve_bench.replay import replay_sync
from superserve_bench.repository import SuperServeModel, make_repository, model_dir
from superserve_bench.traces import bursty

pytestmark = pytest.mark.integration  # starts its own tritonserver

RATE = 150.0  # requests/s: a few percent of one worker's capacity on the fastest SubNet
SLO_MS = 100.0
KILL_AT_S = 3.0


def _busy_s(server, worker: int) -> float:
    return total(scrape(server.metrics_url), "superserve_worker_busy_seconds_total", f'worker="{worker}"')


def test_a_killed_worker_leaves_the_rotation_its_requests_are_answered_and_it_comes_back(tmp_path, profile,
                                                                                          digits):
    repo = make_repository(tmp_path, [SuperServeModel("superserve", workers=2)], profile, model_dir("superserve"))
    log = tmp_path / "server.log"
    server = start_server(repo, log)
    try:
        victim, pid = sorted(running_workers(log).items())[0]
        killed = {}

        def kill():
            time.sleep(KILL_AT_S)
            killed["at"] = time.time()
            os.kill(pid, signal.SIGKILL)

        trace = bursty(0.0, RATE, 1.0, duration_s=8.0, seed=3)  # Poisson
        killer = threading.Thread(target=kill)
        started = time.time()
        killer.start()
        records = replay_sync(trace, server.grpc_url, SLO_MS, digits[0])
        killer.join()
        # exactly one answer per request, and none an error
        assert len(records) == len(trace.arrivals_s)
        assert {r.outcome for r in records} <= {"on_time", "late", "shed"}, \
            [r.message for r in records if r.outcome not in ("on_time", "late", "shed")][:3]
        events = [e for e in worker_events(log) if e.worker == victim]
        lost = [e for e in events if e.kind == "lost"]
        assert [e.pid for e in lost] == [pid]
        detected_s = lost[0].time_s - killed["at"]
        assert detected_s < 2.0, detected_s
        back = [e for e in events if e.kind == "up" and e.time_s > lost[0].time_s]
        assert back and back[0].pid != pid and back[0].time_s - killed["at"] < 10.0
        # after the loss was seen, the worker left serves everything on time
        after = [r for r in records if started + r.scheduled_s > lost[0].time_s + 0.1]
        on_time = sum(r.outcome == "on_time" for r in after) / len(after)
        assert len(after) > 0.4 * len(records) and on_time >= 0.99, on_time
        # the restarted worker is used again
        busy = _busy_s(server, victim)
        assert _busy_s_after(server, victim, digits) > busy
        books = scrape(server.metrics_url)
        assert total(books, "superserve_worker_losses_total", f'worker="{victim}"') == 1
        assert total(books, "superserve_worker_restarts_total", f'worker="{victim}"') == 1
        assert total(books, "superserve_worker_up", "") == 2
    finally:
        server.stop()


def test_a_remote_worker_whose_server_dies_is_left_out_then_readmitted_when_it_answers_again(tmp_path, profile,
                                                                                             digits):
    host_log, router_log = tmp_path / "worker_host.log", tmp_path / "server.log"
    host = start_server(REPO_ROOT / "worker_repository", host_log)
    ports = (host.http_port, host.grpc_port, host.metrics_port)
    model = SuperServeModel("superserve", workers=1, parameters={"remote_workers": host.grpc_url})
    server = start_server(make_repository(tmp_path, [model], profile, model_dir("superserve")), router_log)
    try:
        remote = 1  # after the one local worker
        assert running_workers(router_log) == {0: running_workers(router_log)[0], remote: None}
        assert _busy_s_after(server, remote, digits) > 0  # the remote worker serves its share
        killed = {}

        def kill_host():
            time.sleep(KILL_AT_S)
            killed["at"] = time.time()
            os.killpg(host.process.pid, signal.SIGKILL)  # the whole machine, as far as the router can tell

        trace = bursty(0.0, RATE, 1.0, duration_s=8.0, seed=5)
        killer = threading.Thread(target=kill_host)
        started = time.time()
        killer.start()
        records = replay_sync(trace, server.grpc_url, SLO_MS, digits[0])
        killer.join()
        host.stop()
        assert len(records) == len(trace.arrivals_s)
        assert {r.outcome for r in records} <= {"on_time", "late", "shed"}, \
            [r.message for r in records if r.outcome not in ("on_time", "late", "shed")][:3]
        lost = [e for e in worker_events(router_log) if e.worker == remote and e.kind == "lost"]
        assert len(lost) == 1 and lost[0].time_s - killed["at"] < 2.0
        after = [r for r in records if started + r.scheduled_s > lost[0].time_s + 0.1]
        assert sum(r.outcome == "on_time" for r in after) / len(after) >= 0.99
        # the host comes back on the same address: the router re-admits it without any restart of its own
        host = start_server(REPO_ROOT / "worker_repository", host_log, ports=ports)
        ready_at = time.time()
        deadline = ready_at + 10.0
        while time.time() < deadline and not [e for e in worker_events(router_log)
                                               if e.worker == remote and e.kind == "up" and e.time_s > ready_at - 1]:
            time.sleep(0.1)
        back = [e for e in worker_events(router_log) if e.worker == remote and e.kind == "up"]
        assert len(back) == 2 and back[1].time_s - ready_at < 10.0
        busy = _busy_s(server, remote)
        assert _busy_s_after(server, remote, digits) > busy
    finally:
        server.stop()
        host.stop()


def _busy_s_after(server, worker: int, digits) -> float:
    """A worker's busy time once 2 s of light load have been served, every request on time."""
    records = replay_sync(bursty(0.0, RATE, 1.0, duration_s=2.0, seed=4), server.grpc_url, SLO_MS, digits[0])
    assert {r.outcome for r in records} == {"on_time"}
    time.sleep(1.2)  # metrics reach Prometheus twice a second
    return _busy_s(server, worker)
