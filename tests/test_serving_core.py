"""The Triton-agnostic serving core: config, request checks, dispatcher and core with a fake transport."""

import json
import threading
import time

import numpy as np
import pytest
import torch

from superserve.scheduler import Profile, QueuedRequest, make_policy
from superserve.serving.config import ServingConfig, parse_config
from superserve.serving.core import SuperServeCore
from superserve.serving.dispatcher import DEADLINE_MESSAGE, QUEUE_FULL_MESSAGE, Dispatcher
from superserve.serving.requests import RequestError, check_images, parse_parameters
from superserve.supernet import MNIST_RESNET, ElasticResNet

PROFILE = Profile.from_dict({"max_batch_size": 2, "subnets": [
    {"accuracy": 0.90, "latency_ms": {"1": 1.0, "2": 1.5}},
    {"accuracy": 0.95, "latency_ms": {"1": 2.0, "2": 3.0}},
    {"accuracy": 0.99, "latency_ms": {"1": 4.0, "2": 6.0}}]})


# Model config ------------------------------------------------------------------------------------
def test_config_defaults_and_triton_parameter_form():
    assert parse_config({}) == ServingConfig()
    config = parse_config({"policy": {"string_value": "fixed:2"}, "max_queue": {"string_value": "8"},
                           "margin_ms": "1.5"})
    assert (config.policy, config.max_queue, config.margin_ms) == ("fixed:2", 8, 1.5)


@pytest.mark.parametrize("params, message", [
    ({"polcy": "slackfit"}, "unknown parameter 'polcy'"),
    ({"max_queue": "many"}, "must be int"),
    ({"max_queue": "0"}, "must be within"),
    ({"margin_ms": "nan"}, "must be finite"),
    ({"max_utilization": "1.5"}, "must be within"),
    ({"latency_safety": "-1"}, "must be within"),
    ({"policy": "fifo"}, "unknown policy"),
    ({"default_slo_ms": "100", "max_slo_ms": "50"}, "exceeds max_slo_ms"),
])
def test_config_errors_name_the_model_and_the_parameter(params, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_config(params, "mymodel")
    assert "mymodel" in str(info.value)


# Request parameters and inputs --------------------------------------------------------------------
def _parse(params):
    spec = parse_parameters(json.dumps(params), PROFILE, default_slo_ms=50, max_slo_ms=1000)
    return spec.slo_ns, spec.lo, spec.hi


def test_request_parameters():
    assert _parse({}) == (50_000_000, 0, 2)
    assert _parse({"slo_ms": 12.5})[0] == 12_500_000
    assert _parse({"x-slo-ms": "36"})[0] == 36_000_000  # forwarded HTTP header
    assert _parse({"subnet": 1})[1:] == (1, 1)
    assert _parse({"min_accuracy": 0.95})[1:] == (1, 2)
    assert _parse({"subnet": 2, "min_accuracy": 0.95})[1:] == (2, 2)
    assert _parse({"unknown": "ignored", "slo_ms": 10})[0] == 10_000_000


@pytest.mark.parametrize("params, message", [
    ({"slo_ms": 0}, "must be > 0"),
    ({"slo_ms": -5}, "must be > 0"),
    ({"slo_ms": "soon"}, "must be a number"),
    ({"slo_ms": True}, "got a boolean"),
    ({"slo_ms": 1e12}, "exceeds this model's maximum"),
    ({"slo_ms": "nan"}, "finite"),
    ({"subnet": 3}, "integer in 0..2"),
    ({"subnet": -1}, "integer in 0..2"),
    ({"subnet": 1.5}, "integer in 0..2"),
    ({"subnet": "big"}, "must be a number"),
    ({"min_accuracy": 0.995}, "above every SubNet"),
    ({"min_accuracy": 2}, "within \\[0, 1\\]"),
    ({"subnet": 0, "min_accuracy": 0.95}, "below min_accuracy"),
])
def test_bad_request_parameters(params, message):
    with pytest.raises(RequestError, match=message):
        _parse(params)


def test_parameters_must_be_a_json_object():
    with pytest.raises(RequestError, match="JSON object"):
        parse_parameters("[1]", PROFILE, 50, 1000)


@pytest.mark.parametrize("images, message", [
    (np.zeros((1, 1, 28, 28), np.float64), "must be FP32"),
    (np.zeros((1, 28, 28), np.float32), "shape"),
    (np.zeros((0, 1, 28, 28), np.float32), "empty batch"),
    (np.zeros((3, 1, 28, 28), np.float32), "exceeds the maximum of 2"),
    (np.full((1, 1, 28, 28), np.nan, np.float32), "NaN or Inf"),
    (np.full((1, 1, 28, 28), np.inf, np.float32), "NaN or Inf"),
])
def test_bad_inputs(images, message):
    with pytest.raises(RequestError, match=message):
        check_images(images, (1, 28, 28), 2)


# Dispatcher -----------------------------------------------------------------------------------------
class _Recorder:
    def __init__(self):
        self.rejected, self.ran, self.cancelled = [], [], set()
        self.gate = threading.Event()
        self.gate.set()

    def run(self, decision, batch):
        self.gate.wait(10)
        self.ran.append((decision.subnet, [r.payload for r in batch]))

    def reject(self, request, code, message):
        self.rejected.append((request.payload, message))


def _dispatcher(rec, max_queue=100, policy="slackfit"):
    return Dispatcher(make_policy(policy, PROFILE, num_buckets=4), rec.run, rec.reject,
                      lambda r: r.payload in rec.cancelled, max_queue=max_queue)


def _request(payload, slo_ms, lo=0, hi=2):
    now = time.monotonic_ns()
    return QueuedRequest(now + int(slo_ms * 1e6), now, lo, hi, payload)


def test_dispatcher_serves_and_sheds_impossible_requests_at_once():
    rec = _Recorder()
    d = _dispatcher(rec)
    d.submit(_request("ok", 1000))
    d.submit(_request("impossible", 0.5))
    d.submit(_request("pinned-too-slow", 3, lo=2, hi=2))
    d.close()
    assert rec.ran == [(2, ["ok"])]
    assert rec.rejected == [("impossible", DEADLINE_MESSAGE), ("pinned-too-slow", DEADLINE_MESSAGE)]


def test_dispatcher_bounds_its_queue_and_drains_on_close():
    rec = _Recorder()
    rec.gate.clear()  # the first batch blocks, so the queue fills up
    d = _dispatcher(rec, max_queue=3, policy="fixed:0")
    d.submit(_request("first", 10_000))
    deadline = time.monotonic() + 5
    while len(d) and time.monotonic() < deadline:  # wait until the dispatcher holds "first"
        time.sleep(0.001)
    for i in range(4):
        d.submit(_request(f"q{i}", 10_000))
    assert rec.rejected == [("q3", QUEUE_FULL_MESSAGE)]
    rec.gate.set()
    d.close()
    served = [p for _, batch in rec.ran for p in batch]
    assert served == ["first", "q0", "q1", "q2"]  # every queued request answered before exit


def test_cancelled_requests_are_never_run():
    rec = _Recorder()
    rec.gate.clear()
    d = _dispatcher(rec, policy="fixed:0")
    d.submit(_request("blocker", 10_000))
    time.sleep(0.05)
    rec.cancelled.add("gone")
    d.submit(_request("gone", 10_000))
    d.submit(_request("kept", 10_000))
    rec.gate.set()
    d.close()
    served = [p for _, batch in rec.ran for p in batch]
    assert "gone" not in served and served == ["blocker", "kept"]
    assert rec.rejected == [("gone", "request cancelled by the client before it was computed")]


def test_only_requests_queued_longer_than_the_default_cancel_check_are_asked():
    # each question is an IPC round trip in the Python backend: a request that waited tens of ms is not asked
    rec = _Recorder()
    rec.gate.clear()
    asked = []
    d = Dispatcher(make_policy("fixed:0", PROFILE), rec.run, rec.reject, lambda r: asked.append(r.payload) or False,
                   max_queue=100, cancel_check_ms=ServingConfig().cancel_check_ms)
    d.submit(_request("blocker", 10_000))
    time.sleep(0.02)  # the blocker's batch is running (held at the gate)
    d.submit(_request("long", 10_000))
    time.sleep(0.25)
    d.submit(_request("short", 10_000))
    time.sleep(0.03)
    rec.gate.set()
    d.close()
    assert [p for _, batch in rec.ran for p in batch] == ["blocker", "long", "short"]
    assert asked == ["long"]  # waited ~280 ms; "short" waited ~30 ms


# Core with a real (small, untrained) SuperNet -----------------------------------------------------
class _FakeTransport:
    def __init__(self):
        self.results, self.errors = {}, {}
        self.done = threading.Semaphore(0)

    def send_result(self, handle, logits, subnet, accuracy):
        self.results[handle] = (logits.copy(), subnet, accuracy)
        self.done.release()

    def send_error(self, handle, code, message):
        self.errors[handle] = (code, message)
        self.done.release()

    def is_cancelled(self, handle):
        return False

    def wait(self, n):
        for _ in range(n):
            assert self.done.acquire(timeout=30), "a request was never answered"


@pytest.fixture(scope="module")
def served_net():
    torch.manual_seed(0)
    net = ElasticResNet(MNIST_RESNET).eval()
    subnets = [MNIST_RESNET.smallest(), MNIST_RESNET.largest()]
    net.set_subnet_norm({s.id: net.calibrate(s, [torch.rand(32, 1, 28, 28)]) for s in subnets})
    profile = {"space": MNIST_RESNET.name, "input_shape": [1, 28, 28], "max_batch_size": 4, "threads": 1,
               "subnets": [{"id": s.id, "config": s.to_dict(), "accuracy": acc,
                            "latency_ms": {str(b): lat * b for b in range(1, 5)}}
                           for s, acc, lat in zip(subnets, (0.9, 0.99), (1.0, 3.0))]}
    return net, profile, subnets


def test_core_answers_every_request_with_the_chosen_subnets_logits(served_net):
    net, profile, subnets = served_net
    transport = _FakeTransport()
    core = SuperServeCore(net, profile, ServingConfig(max_slo_ms=100_000), transport)
    rng = np.random.default_rng(0)
    images = {i: rng.random((1 + i % 3, 1, 28, 28), dtype=np.float32) for i in range(12)}
    # odd: free choice with a loose SLO; even: pinned to SubNet 0. Separate phases, so that no free
    # request rides along in a pinned batch.
    for phase in (1, 0):
        for i, x in images.items():
            if i % 2 == phase:
                params = {"slo_ms": 10_000} if phase else {"slo_ms": 10_000, "subnet": 0}
                core.submit(x, json.dumps(params), i, time.monotonic_ns())
        transport.wait(6)
    core.submit(images[0].astype(np.float64), "{}", "bad-dtype", time.monotonic_ns())
    core.submit(images[0], json.dumps({"slo_ms": 0.01}), "impossible", time.monotonic_ns())
    transport.wait(2)
    core.close()
    assert transport.errors == {"bad-dtype": ("invalid", "INPUT must be FP32, got float64"),
                                "impossible": ("unavailable", DEADLINE_MESSAGE)}
    assert len(transport.results) == 12
    for i, (logits, subnet, accuracy) in transport.results.items():
        assert subnet == (1 if i % 2 else 0)  # loose SLO -> the accurate SubNet; pinned -> SubNet 0
        assert accuracy == (0.99 if subnet else 0.9)
        net.actuate(subnets[subnet])
        with torch.no_grad():
            expected = net(torch.from_numpy(images[i])).numpy()
        np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_core_refuses_a_profile_without_subnet_norm_statistics(served_net):
    net, profile, _ = served_net
    other = dict(profile, subnets=[dict(profile["subnets"][0], config=MNIST_RESNET.sample(
        __import__("random").Random(5)).to_dict())])
    with pytest.raises(ValueError, match="no SubnetNorm statistics"):
        SuperServeCore(net, other, ServingConfig(), _FakeTransport())


def test_core_learns_the_per_sample_overhead_and_replans(served_net):
    net, profile, _ = served_net
    config = ServingConfig(overhead_per_sample_ms=0.1, overhead_adapt_rate=0.5)
    core = SuperServeCore(net, profile, config, _FakeTransport())
    try:
        first_policy = core.dispatcher.policy
        compute = core.compute_profile.latency_ns(1, 4)
        for _ in range(200):  # batches of 4 that really take 1 ms per sample beyond compute
            core._learn_overhead(1, 4, compute + 4_000_000)
        assert core.overhead_ns == pytest.approx(1_000_000, rel=0.01)
        assert core.dispatcher.policy is not first_policy
        assert core.dispatcher.policy.profile.latency_ns(1, 4) == pytest.approx(compute + 4_000_000, rel=0.02)
        fixed = SuperServeCore(net, profile, ServingConfig(overhead_adapt_rate=0.0), _FakeTransport())
        fixed._learn_overhead(1, 4, compute + 40_000_000)
        assert fixed.overhead_ns == 300_000
        fixed.close()
    finally:
        core.close()


def test_one_stall_moves_the_learned_overhead_little_and_a_full_batch_weighs_more(served_net):
    net, profile, _ = served_net
    core = SuperServeCore(net, profile, ServingConfig(overhead_per_sample_ms=0.4, overhead_adapt_rate=0.05),
                          _FakeTransport())
    try:
        full = core.profile.max_batch
        core._learn_overhead(1, 1, core.compute_profile.latency_ns(1, 1) + 35_000_000)  # a 35 ms stall, batch 1
        # clipped to 2 x 0.4 + 0.1 ms, weighted 1/full: 0.4 + 0.05 / full * 0.5 ms
        assert core.overhead_ns == pytest.approx(400_000 + 0.05 / full * 500_000)
        small, big = (SuperServeCore(net, profile, ServingConfig(overhead_per_sample_ms=0.4, overhead_adapt_rate=0.05),
                                     _FakeTransport()) for _ in range(2))
        small._learn_overhead(1, 1, small.compute_profile.latency_ns(1, 1) + 600_000)  # 0.6 ms per sample
        big._learn_overhead(1, full, big.compute_profile.latency_ns(1, full) + full * 600_000)
        assert big.overhead_ns - 400_000 == pytest.approx(full * (small.overhead_ns - 400_000))
        assert big.overhead_ns == pytest.approx(410_000)
        small.close()
        big.close()
    finally:
        core.close()
