"""Where the SuperNet runs: the ``device`` setting, and the same correctness checks on every device this machine
has (the CPU everywhere; a CUDA GPU where torch finds one, else those cases skip)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from superserve.build.profiling import accuracy, latency_curve_ms, latency_ms
from superserve.serving.config import ServingConfig, parse_config, resolve_device
from superserve.serving.core import SuperServeCore
from superserve.supernet import MNIST_RESNET, MNIST_VIT, ElasticResNet, ElasticTransformer, family_of

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch finds no CUDA GPU on this machine")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


@pytest.fixture(autouse=True)
def exact_cuda_math():
    """TF32 would make a GPU's results differ from the CPU twin's by more than float rounding."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_the_device_setting_follows_triton_unless_set():
    assert parse_config({}).device == "auto"
    assert resolve_device("auto", "CPU", 0) == "cpu"
    assert resolve_device("auto", "GPU", "1") == "cuda:1"  # Triton passes the device id as text
    assert resolve_device("cpu", "GPU", 0) == "cpu" and resolve_device("cuda:2", "CPU", 0) == "cuda:2"
    assert parse_config({"device": "cuda:3"}).device == "cuda:3"
    for bad in ("gpu", "cuda:", "cuda:x", "tpu"):
        with pytest.raises(ValueError, match="'device' must be auto, cpu, cuda or cuda:<k>"):
            parse_config({"device": bad})


def _resnet(seed: int = 0):
    torch.manual_seed(seed)
    net = ElasticResNet(MNIST_RESNET).eval()
    rng = random.Random(seed)
    subnets = [MNIST_RESNET.smallest(), MNIST_RESNET.largest()] + [MNIST_RESNET.sample(rng) for _ in range(4)]
    net.set_subnet_norm({s.id: net.calibrate(s, [torch.rand(32, 1, 28, 28)]) for s in subnets})
    return net, subnets


def _vit(seed: int = 0):
    torch.manual_seed(seed)
    net = ElasticTransformer(MNIST_VIT).eval()
    rng = random.Random(seed)
    return net, [MNIST_VIT.smallest(), MNIST_VIT.largest()] + [MNIST_VIT.sample(rng) for _ in range(4)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make", [_resnet, _vit], ids=["resnet", "transformer"])
def test_serving_plans_on_a_device_equal_the_extracted_twins_on_the_cpu(make, device):
    net, subnets = make()
    family = family_of(net.space)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        expected = [family.extract(net, s)(x) for s in subnets]  # on the CPU, before the move
        net.to(device)
        weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
        for subnet, want in zip(subnets, expected):
            plan = net.servable_plan(subnet)  # views bound on the device the weights now live on
            bound = [t for view in plan.views if view is not None
                     for t in (view if isinstance(view, tuple) else (view,))]
            assert bound and all(t.device.type == device for t in bound)
            assert any(t.untyped_storage().data_ptr() in weights for t in bound)
            net.actuate(plan)
            torch.testing.assert_close(net(x.to(device)).cpu(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_profiling_measures_where_the_weights_are(device):
    net, subnets = _resnet()
    images, labels = torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,))
    on_cpu = [accuracy(net, net.plan_for(s), images, labels, batch=16) for s in subnets]
    net.to(device)
    assert [accuracy(net, net.plan_for(s), images, labels, batch=16) for s in subnets] == on_cpu
    assert 0 < latency_ms(net, images[:4], repeats=3, plan=net.inference_plan(subnets[1])) < 10_000


def test_profiling_takes_the_batch_sizes_in_turn_in_every_repeat():
    # one size after another, a slow spell of the machine made some sizes look slower than larger ones
    seen = []

    class Recorder(torch.nn.Linear):
        def forward(self, x):
            seen.append(x.shape[0])
            return super().forward(x)

    curve = latency_curve_ms(Recorder(2, 2), [torch.zeros(b, 2) for b in (1, 2, 3)], repeats=3, warmup=1)
    assert seen == [1, 2, 3] * 4
    assert len(curve) == 3 and all(0 < ms < 10_000 for ms in curve)


class _Transport:
    def images(self, request):
        return request

    def parameters(self, request):
        return json.dumps({"subnet": 1, "slo_ms": 60_000})

    def result(self, request, logits, subnet, accuracy):
        return logits.copy()

    def error(self, code, message):
        return (code, message)

    def send(self, request, response):
        raise AssertionError("nothing goes out early in this round")

    def is_cancelled(self, request):
        return False


@pytest.mark.parametrize("device", DEVICES)
def test_the_serving_core_serves_on_its_device(device):
    net, subnets = _resnet()
    served = subnets[:2]
    profile = {"space": MNIST_RESNET.name, "input_shape": [1, 28, 28], "max_batch_size": 4, "threads": 1,
               "device": "cpu", "subnets": [{"id": s.id, "config": s.to_dict(), "accuracy": a,
                                             "latency_ms": {str(b): b * 1.0 for b in range(1, 5)}}
                                            for s, a in zip(served, (0.9, 0.99))]}
    twin = family_of(net.space).extract(net, served[1])
    images = [np.random.default_rng(i).random((1 + i % 3, 1, 28, 28), dtype=np.float32) for i in range(6)]
    core = SuperServeCore(net, profile, ServingConfig(device=device), _Transport())
    assert core.device.type == device and next(core.net.parameters()).device.type == device
    responses = core.serve(images)  # 12 samples: batches of at most 4 through the (pinned, on a GPU) buffer
    with torch.no_grad():
        for x, logits in zip(images, responses):
            assert isinstance(logits, np.ndarray)
            np.testing.assert_allclose(logits, twin(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_a_gpu_device_without_a_gpu_fails_the_load_with_what_to_do():
    net, subnets = _resnet()
    profile = {"space": MNIST_RESNET.name, "input_shape": [1, 28, 28], "max_batch_size": 4, "subnets": [
        {"id": subnets[0].id, "config": subnets[0].to_dict(), "accuracy": 0.9, "latency_ms": {"1": 1, "2": 2,
                                                                                              "3": 3, "4": 4}}]}
    with pytest.raises(ValueError, match="torch finds no CUDA GPU here: set device cpu, or instance_group KIND_CPU"):
        SuperServeCore(net, profile, ServingConfig(device="cuda:0"), _Transport())
