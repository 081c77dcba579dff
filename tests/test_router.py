"""The router: one global EDF queue over many workers (the dispatcher's books, then the threaded router with fake
workers, a fake transport and a fake clock). Deterministic: workers answer only when a test lets them."""

import json
import os
import queue
import threading
import time

import numpy as np
import pytest

from superserve.scheduler import EDFQueue, LoadEstimate, Profile, QueuedRequest, make_policy
from superserve.scheduler.dispatcher import Dispatcher
from superserve.serving.config import ServingConfig
from superserve.serving.metrics import MetricsBuffer
from superserve.serving.router import NO_WORKER_MESSAGE, Router
from superserve.serving.workers import WorkerLost, at_low_priority

MS = 1_000_000
PROFILE_DICT = {"max_batch_size": 2, "input_shape": [3], "num_classes": 2, "subnets": [
    {"accuracy": 0.90, "latency_ms": {"1": 1.0, "2": 1.5}},
    {"accuracy": 0.99, "latency_ms": {"1": 4.0, "2": 6.0}}]}
PROFILE = Profile.from_dict(PROFILE_DICT)


def _dispatcher(workers, policy="fixed:0"):
    d = Dispatcher(lambda up: make_policy(policy, PROFILE, workers=up), workers)
    for w in range(workers):
        d.restore(w)
    return d


def _deadlines(assignment):
    return [r.deadline_ns // MS for r in assignment.batch]


# The dispatcher's books ------------------------------------------------------------------------------------
def test_batches_go_to_free_workers_in_global_deadline_order():
    d = _dispatcher(2)
    for deadline in (50, 10, 30, 20, 40):
        d.push(QueuedRequest(deadline * MS, 0, 0, 1))
    first, _ = d.take(0, 0)
    second, _ = d.take(1, 0)
    assert _deadlines(first) == [10, 20] and _deadlines(second) == [30, 40]
    assert not d.idle(0) and not d.idle(1)
    with pytest.raises(ValueError, match="busy"):
        d.take(0, 0)
    d.finish(1)  # worker 1 is done first: it takes the next batch while worker 0 still runs its own
    third, _ = d.take(1, 2 * MS)
    assert _deadlines(third) == [50] and d.running[0] is first


def test_heads_no_subnet_can_meet_are_shed_on_the_way_to_a_batch():
    d = _dispatcher(1)
    for deadline in (1, 2, 30):  # the fastest SubNet needs 1 ms: at t=1.5 ms the first two cannot make it
        d.push(QueuedRequest(deadline * MS, 0, 0, 1))
    assignment, shed = d.take(0, int(1.5 * MS))
    assert [r.deadline_ns // MS for r in shed] == [1, 2] and _deadlines(assignment) == [30]


def test_a_lost_workers_batch_is_requeued_where_deadlines_allow_and_refused_otherwise():
    d = _dispatcher(2)
    for deadline in (3, 40):
        d.push(QueuedRequest(deadline * MS, 0, 0, 1))
    d.take(0, 0)
    requeued, refused = d.lose(0, 2_500_000)  # at 2.5 ms: the 3 ms deadline can no longer be met (+1 ms)
    assert [r.deadline_ns // MS for r in requeued] == [40] and [r.deadline_ns // MS for r in refused] == [3]
    assert d.workers_up == 1 and len(d.queue) == 1 and d.idle(1) and not d.idle(0)
    # a requeued request is no new arrival: the rate the policies read counts it once
    counted_once = LoadEstimate()
    for _ in range(2):
        counted_once.arrived(0)
    assert d.load.arrival_rate(0) == pytest.approx(counted_once.arrival_rate(0))
    requeued, refused = d.lose(1, 2_500_000)  # no worker left: nothing may wait
    assert not requeued and [r.deadline_ns // MS for r in refused] == [40] and not d.queue
    d.restore(0)
    assert d.workers_up == 1 and d.idle(0)


def test_a_request_no_worker_can_serve_in_time_behind_the_queue_is_refused_on_arrival():
    d = _dispatcher(2)
    for _ in range(64):
        d.push(QueuedRequest(10 * MS, 0, 0, 1))
    # 64 ahead: 32 full batches of the fastest SubNet (1.5 ms) over 2 workers = 24 ms, then 1 ms alone
    assert not d.admits(0, 1, 20 * MS, 0) and d.admits(0, 1, 25 * MS, 0)
    assert d.admits(0, 1, 5 * MS, 0)  # due before all of them: it goes first
    d.lose(1, 0)  # one worker: 48 ms behind the queue
    assert not d.admits(0, 1, 25 * MS, 0) and d.admits(0, 1, 49 * MS, 0)


def test_slackfit_la_plans_the_backlog_over_the_workers_that_are_up():
    # 8 requests due at 10 ms: after this batch, 6 more need 3 batches of the fastest SubNet (4.5 ms on one
    # worker, 1.5 ms more than this batch on two), so the accurate SubNet's 6 ms batch fits only with two workers
    profile = Profile.from_dict({"max_batch_size": 2, "subnets": PROFILE_DICT["subnets"]})
    decisions = {}
    for workers in (1, 2):
        policy = make_policy("slackfit-la", profile, workers=workers)
        q = EDFQueue()
        for _ in range(8):
            q.push(QueuedRequest(10 * MS, 0, 0, 1))
        decisions[workers] = policy.decide(q, 0).subnet
    assert decisions == {1: 0, 2: 1}


# The threaded router with fake workers ---------------------------------------------------------------------
class _Request:
    """Its input holds its name's character code, so a fake worker can tell which requests it runs."""

    def __init__(self, name, slo_ms):
        self.name, self.images = name, np.full((1, 3), ord(name), np.float32)
        self.params = json.dumps({"slo_ms": slo_ms})


class _Transport:
    def __init__(self):
        self.sent, self.lock = [], threading.Lock()

    def images(self, request):
        return request.images

    def parameters(self, request):
        return request.params

    def result(self, request, logits, subnet, accuracy):
        return ("result", subnet)

    def error(self, code, message):
        return ("error", code, message)

    def send(self, request, response):
        with self.lock:
            self.sent.append((request.name, response))

    def is_cancelled(self, request):
        return False


class _Worker:
    """Runs nothing until the test says: ``finish()`` answers its batch, ``die()`` makes it lost."""

    def __init__(self, index, log):
        self.index, self.name, self.pid, self.log = index, f"fake worker {index}", 1000 + index, log
        self.where = f"process id {self.pid}"
        self.starts, self.outcomes = 0, queue.Queue()
        self.restarts_allowed = threading.Event()  # a test clears it to hold a restart until it has looked
        self.restarts_allowed.set()
        self.dead = False  # its process is gone (for an idle worker: seen by alive())

    def start(self):
        self.starts += 1
        if self.starts > 1:
            assert self.restarts_allowed.wait(30)
        self.dead = False

    def alive(self):
        return not self.dead

    def submit(self, subnet, images):
        self.log.put((self.index, subnet, "".join(chr(int(v)) for v in images[:, 0])))

    def result(self, timeout_s):
        outcome = self.outcomes.get(timeout=30)
        if outcome == "die":
            raise WorkerLost(f"{self.name} died")
        return np.zeros((outcome, 2), np.float32)

    def finish(self, samples):
        self.outcomes.put(samples)

    def die(self):
        self.outcomes.put("die")

    def stop(self):
        pass


class _Clock:
    def __init__(self):
        self.now = 1_000 * MS

    def __call__(self):
        return self.now


def _router(workers=2, policy="fixed:0"):
    log, transport, clock, metrics = queue.Queue(), _Transport(), _Clock(), MetricsBuffer()
    fakes = [_Worker(i, log) for i in range(workers)]
    config = ServingConfig(policy=policy, margin_ms=0.0, overhead_per_batch_ms=0.0, overhead_per_sample_ms=0.0,
                           overhead_adapt_rate=0.0, slowdown_adapt_rate=0.0, cancel_check_ms=0.0, workers=workers)
    router = Router(PROFILE_DICT, config, transport, fakes, metrics, clock)
    assert router.wait_ready(10)
    return router, fakes, log, transport, clock, metrics


def _wait_for(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_two_workers_start_batches_in_global_deadline_order_and_a_free_one_never_waits_for_the_other():
    router, fakes, log, transport, clock, _ = _router()
    try:
        # six requests in one hand-over; SLOs so that deadline order differs from arrival order
        slos = {"a": 60, "b": 10, "c": 50, "d": 20, "e": 40, "f": 30}
        assert router.serve([_Request(name, slo) for name, slo in slos.items()]) == [None] * 6  # all queued
        first = [log.get(timeout=10), log.get(timeout=10)]  # both workers took a batch of 2 at once
        assert sorted(w for w, _, _ in first) == [0, 1]
        # one has the two earliest deadlines (b, d), the other the next two (f, e), each in deadline order
        batches = {batch: worker for worker, _, batch in first}
        assert sorted(batches) == ["bd", "fe"]
        early, late = batches["bd"], batches["fe"]
        assert log.empty()
        fakes[late].finish(2)  # the second worker is done while the first still runs
        assert log.get(timeout=10) == (late, 0, "ca")  # it takes the rest at once, not waiting for the first
        _wait_for(lambda: len(transport.sent) == 2)
        assert {name for name, _ in transport.sent} == {"f", "e"}
        fakes[early].finish(2)
        fakes[late].finish(2)
        _wait_for(lambda: len(transport.sent) == 6)
        assert sorted(name for name, _ in transport.sent) == sorted(slos)  # exactly one answer each
        assert all(response == ("result", 0) for _, response in transport.sent)
    finally:
        router.close(5)


def test_a_lost_worker_is_replaced_its_batch_requeued_and_served_by_the_other_and_it_comes_back():
    router, fakes, log, transport, clock, metrics = _router()
    try:
        router.serve([_Request("x", 100), _Request("y", 100)])  # one batch of two
        taker, _, _ = log.get(timeout=10)
        other = 1 - taker
        fakes[taker].restarts_allowed.clear()
        fakes[taker].die()
        assert log.get(timeout=10) == (other, 0, "xy")  # requeued at once, on the worker still up
        fakes[taker].restarts_allowed.set()
        fakes[other].finish(2)
        _wait_for(lambda: len(transport.sent) == 2)
        assert sorted(name for name, _ in transport.sent) == ["x", "y"]
        assert all(response[0] == "result" for _, response in transport.sent)
        _wait_for(lambda: router.dispatcher.workers_up == 2)  # restarted without restarting anything else
        assert fakes[taker].starts == 2 and fakes[other].starts == 1
        snapshot = metrics.drain()
        assert snapshot.worker_losses[taker] == 1 and snapshot.worker_restarts[taker] == 1
        assert snapshot.requeued == 2 and snapshot.workers_up == {0: 1, 1: 1}
        assert snapshot.outcomes["on_time"] == 2
    finally:
        router.close(5)


def test_with_every_worker_down_requests_are_refused_at_once_not_queued():
    router, fakes, log, transport, clock, metrics = _router(workers=2)
    try:
        for fake in fakes:  # from now on every start fails: the workers stay down
            fake.start = lambda: (_ for _ in ()).throw(WorkerLost("cannot start"))
        router.serve([_Request("p", 100), _Request("q", 100)])
        w1, _, _ = log.get(timeout=10)
        fakes[w1].die()
        w2, _, _ = log.get(timeout=10)
        assert w2 != w1
        fakes[w2].die()
        _wait_for(lambda: len(transport.sent) == 2)
        assert {response for _, response in transport.sent} == {("error", "unavailable", NO_WORKER_MESSAGE)}
        assert router.serve([_Request("r", 100)]) == [("error", "unavailable", NO_WORKER_MESSAGE)]  # at once
    finally:
        router.close(5)


def test_close_finishes_running_batches_and_refuses_what_is_queued():
    router, fakes, log, transport, clock, _ = _router(workers=1)
    router.serve([_Request(name, 100) for name in "abc"])  # a batch of 2 runs, 1 waits
    log.get(timeout=10)
    closer = threading.Thread(target=router.close, args=(10,))
    closer.start()
    fakes[0].finish(2)
    closer.join(15)
    assert not closer.is_alive()
    answers = dict(transport.sent)
    assert len(transport.sent) == 3 and answers["c"][:2] == ("error", "unavailable")
    assert answers["a"] == answers["b"] == ("result", 0)


def test_an_answer_that_cannot_be_made_fails_alone_and_a_worker_that_raises_is_replaced():
    router, fakes, log, transport, clock, metrics = _router(workers=1)
    try:
        made = transport.result
        transport.result = lambda request, *rest: (_ for _ in ()).throw(RuntimeError("no memory")) \
            if request.name == "x" else made(request, *rest)
        router.serve([_Request("x", 100), _Request("y", 100)])
        log.get(timeout=10)
        fakes[0].finish(2)
        _wait_for(lambda: len(transport.sent) == 2)
        answers = dict(transport.sent)
        assert answers["y"] == ("result", 0) and answers["x"][:2] == ("error", "internal")
        # a client library's own error on submit: the worker is lost (its batch refused: no other worker is up)
        # and restarted
        fakes[0].submit = lambda subnet, images: (_ for _ in ()).throw(OSError("broken pipe"))
        router.serve([_Request("z", 100)])
        _wait_for(lambda: len(transport.sent) == 3)
        assert transport.sent[-1] == ("z", ("error", "unavailable", NO_WORKER_MESSAGE))
        del fakes[0].submit  # the restarted worker works
        _wait_for(lambda: fakes[0].starts == 2 and router.dispatcher.workers_up == 1)
        router.serve([_Request("w", 100)])
        assert log.get(timeout=10) == (0, 0, "w")
        fakes[0].finish(1)
        _wait_for(lambda: len(transport.sent) == 4)
        assert transport.sent[-1] == ("w", ("result", 0))
    finally:
        router.close(5)


def test_a_worker_that_dies_while_idle_leaves_the_rotation_without_being_sent_a_batch():
    router, fakes, log, transport, clock, metrics = _router(workers=2)
    try:
        fakes[1].restarts_allowed.clear()
        fakes[1].dead = True
        _wait_for(lambda: router.dispatcher.workers_up == 1)  # seen within IDLE_CHECK_S, no traffic needed
        _wait_for(lambda: fakes[1].starts == 2)  # restarting, held by the test
        assert log.empty()  # no batch was sent to find out
        assert metrics.drain().worker_losses[1] == 1
        fakes[1].restarts_allowed.set()
        _wait_for(lambda: router.dispatcher.workers_up == 2)
    finally:
        router.close(5)


def test_start_up_work_runs_at_the_lowest_priority_and_the_caller_keeps_its_own():
    """A worker imports torch on such a thread, so that one restarting under load takes no core from one serving."""
    def own_nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = own_nice()
    assert at_low_priority(own_nice) == 19
    assert own_nice() == before
    with pytest.raises(KeyError, match="raised on the thread"):
        at_low_priority(lambda: {}["raised on the thread"])
