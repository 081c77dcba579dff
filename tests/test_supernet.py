"""SubNetAct: operators, SubNet descriptions, actuation in place vs extracted twins, calibration."""

import random

import pytest
import torch

from superserve.supernet import MNIST_RESNET, OFA_RESNET50, ElasticResNet, SubNet, compile_plan, count_params
from superserve.supernet.extract import extract_subnet
from superserve.supernet.ops import ActuationCell, Plan, SubnetNorm, WeightSliceConv2d
from superserve.supernet.space import make_divisible


def _randomise_norms(net: ElasticResNet, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in net.norm_layers().values():
        m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.weight.data.copy_(1 + torch.randn(m.num_features, generator=g) * 0.1)
        m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def mnist_net():
    torch.manual_seed(0)
    net = ElasticResNet(MNIST_RESNET).eval()
    _randomise_norms(net)
    return net


# Operators ------------------------------------------------------------------------------------
def test_weight_slice_conv_uses_a_view_of_the_first_filters():
    cell = ActuationCell()
    conv = WeightSliceConv2d(8, 16, 3, cell=cell, slot=0)
    cell.plan = Plan(conv_out=(5,), stage_depths=(), run_stem_residual=False, norm_row=-1)
    x = torch.randn(2, 6, 9, 9)
    expected = torch.nn.functional.conv2d(x, conv.weight[:5, :6].clone(), None, 1, 1)
    out = conv(x)
    assert out.shape == (2, 5, 9, 9)
    torch.testing.assert_close(out, expected)
    assert conv.weight[:5, :6].data_ptr() == conv.weight.data_ptr()  # a view: no weight copy


def test_subnet_norm_reads_the_active_row_and_falls_back_to_sliced_statistics():
    cell = ActuationCell()
    norm = SubnetNorm(4, cell=cell).eval()
    norm.subnet_mean = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    norm.subnet_var = torch.ones(2, 4)
    x = torch.zeros(1, 3, 1, 1)
    cell.plan = Plan((), (), False, norm_row=1)
    assert torch.allclose(norm(x).flatten(), -torch.tensor([10.0, 20.0, 30.0]), atol=1e-3)
    cell.plan = Plan((), (), False, norm_row=-1)
    assert torch.allclose(norm(x).flatten(), torch.zeros(3), atol=1e-6)  # running stats: mean 0, var 1


def test_layer_select_runs_only_the_first_blocks(mnist_net):
    net = mnist_net
    calls = []
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, b in enumerate(net.blocks)]
    try:
        subnet = SubNet.from_lists(MNIST_RESNET, [0, 0, 2, 1], [0.1] * MNIST_RESNET.num_blocks, [0] * 5)
        net.actuate(subnet)
        with torch.no_grad():
            net(torch.zeros(1, 1, 28, 28))
    finally:
        for h in hooks:
            h.remove()
    # stages have 3 blocks each: stage 0 runs 1, stage 1 runs 3, stage 2 runs 2
    assert calls == [0, 3, 4, 5, 6, 7]


def test_make_divisible_matches_ofa_rounding():
    assert [make_divisible(v, 8) for v in (64 * 0.65, 64 * 0.8, 256 * 0.65, 3.2, 100)] == [40, 48, 168, 8, 104]


# SubNet descriptions ----------------------------------------------------------------------------
def test_subnet_accepts_ofa_and_own_forms_with_one_stable_id():
    ofa = {"d": [2, 1, 0, 2, 1], "e": [0.25] * 18, "w": [2, 1, 0, 1, 2, 2]}
    a = OFA_RESNET50.parse(ofa)
    b = OFA_RESNET50.parse({"depth": ofa["d"], "expand": ofa["e"], "width": ofa["w"]})
    c = OFA_RESNET50.parse(a.to_ofa())
    assert a == b == c and a.id == b.id == c.id and a.id.startswith("sn-")
    assert OFA_RESNET50.parse('{"d": [2, 1, 0, 2, 1], "e": %s, "w": [2, 1, 0, 1, 2, 2]}' % ([0.25] * 18)).id == a.id


def test_settings_of_blocks_that_do_not_run_do_not_change_the_id():
    e = [0.2] * 18
    a = OFA_RESNET50.parse({"d": [0, 0, 0, 0, 0], "e": e, "w": [0] * 6})
    e2 = list(e)
    e2[3] = 0.35  # stage 0 has 4 blocks, depth 0 runs 2: block 3 is skipped
    b = OFA_RESNET50.parse({"d": [1, 0, 0, 0, 0], "e": e2, "w": [0] * 6})  # stem depth 1 == 0 (binary)
    assert a.id == b.id


@pytest.mark.parametrize("spec, message", [
    ({"d": [2, 2, 2, 2], "e": [0.25] * 18, "w": [0] * 6}, "depth must have 5 entries"),
    ({"d": [2, 2, 2, 2, 3], "e": [0.25] * 18, "w": [0] * 6}, "depth 3 is not one of"),
    ({"d": [2] * 5, "e": [0.3] * 18, "w": [0] * 6}, "expand ratio 0.3 is not one of"),
    ({"d": [2] * 5, "e": [0.25] * 18, "w": [0, 0, 0, 0, 0, 3]}, "width index 3 is outside"),
    ({"d": [2] * 5, "e": [0.25] * 18, "w": [0, 0, 0, 0, 0, 1.5]}, "must be integers"),
    ({"d": [2] * 5, "e": "wide", "w": [0] * 6}, "expand must be a list"),
    ({"d": [2] * 5, "e": [True] * 18, "w": [0] * 6}, "must be numbers"),
    ({"depth": [2] * 5}, "needs keys"),
    ("not json", "not JSON"),
    ([1, 2, 3], "a SubNet is a dict"),
])
def test_subnet_parsing_errors_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        OFA_RESNET50.parse(spec)


def test_ofa_resnet50_matches_ofa_published_parameter_counts():
    net = ElasticResNet(OFA_RESNET50)
    assert sum(p.numel() for p in net.parameters()) == 48_105_992  # OFA: 48.1 M
    assert count_params(OFA_RESNET50, OFA_RESNET50.largest()) == 48_105_992
    assert count_params(OFA_RESNET50, OFA_RESNET50.smallest()) == 6_539_280  # OFA: 6.5 M


# Actuation in place vs extracted twins ----------------------------------------------------------
def test_fifty_random_subnets_match_their_extracted_twins(mnist_net):
    net = mnist_net
    rng = random.Random(1)
    subnets = [MNIST_RESNET.largest(), MNIST_RESNET.smallest()] + [MNIST_RESNET.sample(rng) for _ in range(50)]
    calib = torch.rand(64, 1, 28, 28)
    # half of them with their own SubnetNorm statistics, half with the sliced full-width statistics
    net.set_subnet_norm({s.id: net.calibrate(s, [calib]) for s in subnets[::2]})
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        for subnet in subnets:
            net.actuate(subnet)
            twin = extract_subnet(net, subnet)
            assert sum(p.numel() for p in twin.parameters()) == count_params(MNIST_RESNET, subnet)
            torch.testing.assert_close(net(x), twin(x), atol=1e-5, rtol=0)
    net.set_subnet_norm({})


def test_ofa_resnet50_subnets_match_extracted_twins():
    torch.manual_seed(0)
    net = ElasticResNet(OFA_RESNET50).eval()
    _randomise_norms(net)
    rng = random.Random(2)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for subnet in [OFA_RESNET50.smallest(), OFA_RESNET50.sample(rng), OFA_RESNET50.sample(rng)]:
            net.actuate(subnet)
            torch.testing.assert_close(net(x), extract_subnet(net, subnet)(x), atol=1e-5, rtol=1e-4)


def test_actuation_is_a_pointer_swap_and_never_copies_weights(mnist_net):
    net = mnist_net
    pointers = {name: p.data_ptr() for name, p in net.named_parameters()}
    rng = random.Random(3)
    for _ in range(20):
        net.actuate(MNIST_RESNET.sample(rng))
        with torch.no_grad():
            net(torch.rand(2, 1, 28, 28))
    assert pointers == {name: p.data_ptr() for name, p in net.named_parameters()}
    subnet = MNIST_RESNET.smallest()
    plan = net.plan_for(subnet)
    net.actuate(subnet)
    assert net.cell.plan is plan  # cached: the second actuation compiles nothing


# SubnetNorm calibration --------------------------------------------------------------------------
def test_calibration_yields_the_exact_batch_statistics_of_each_layer(mnist_net):
    net = mnist_net
    subnet = MNIST_RESNET.smallest()
    images = torch.rand(32, 1, 28, 28)
    one = net.calibrate(subnet, [images])
    two = net.calibrate(subnet, [images[:10], images[10:]])
    first = net.input_stem[0]
    with torch.no_grad():
        net.actuate(compile_plan(MNIST_RESNET, subnet))
        pre = first.conv(images)  # input of the first SubnetNorm
    torch.testing.assert_close(one["input_stem.0.bn"][0], pre.mean((0, 2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(one["input_stem.0.bn"][1], pre.var((0, 2, 3), unbiased=False), atol=1e-5, rtol=0)
    # split batches pool to the same statistics where the input does not depend on earlier normalisation
    for k in (0, 1):
        torch.testing.assert_close(one["input_stem.0.bn"][k], two["input_stem.0.bn"][k], atol=1e-5, rtol=1e-5)
    # only the layers the SubNet runs are calibrated (the stem residual is skipped by the smallest)
    assert "input_stem.1.conv.bn" not in one and "blocks.0.conv1.bn" in one and "blocks.1.conv1.bn" not in one


def test_subnet_norm_state_round_trips(mnist_net, tmp_path):
    net = mnist_net
    subnets = [MNIST_RESNET.smallest(), MNIST_RESNET.largest()]
    net.set_subnet_norm({s.id: net.calibrate(s, [torch.rand(16, 1, 28, 28)]) for s in subnets})
    torch.save(net.subnet_norm_state(), tmp_path / "stats.pt")
    other = ElasticResNet(MNIST_RESNET).eval()
    other.load_state_dict(net.state_dict())
    other.load_subnet_norm_state(torch.load(tmp_path / "stats.pt", weights_only=True))
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        for s in subnets:
            net.actuate(s)
            other.actuate(s)
            assert other.cell.plan.norm_row == net.cell.plan.norm_row >= 0
            torch.testing.assert_close(net(x), other(x))
    bad = net.subnet_norm_state()
    bad["layers"].pop("blocks.0.conv1.bn")
    with pytest.raises(ValueError, match="lack 1 layers"):
        other.load_subnet_norm_state(bad)
    net.set_subnet_norm({})


def test_inference_plans_compute_the_same_with_views_of_the_stored_weights(mnist_net):
    net = mnist_net
    rng = random.Random(4)
    subnets = [MNIST_RESNET.smallest(), MNIST_RESNET.largest()] + [MNIST_RESNET.sample(rng) for _ in range(8)]
    net.set_subnet_norm({s.id: net.calibrate(s, [torch.rand(32, 1, 28, 28)]) for s in subnets[::2]})
    storages = {p.untyped_storage().data_ptr() for p in net.parameters()} | {
        b.untyped_storage().data_ptr() for b in net.buffers()}
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        for subnet in subnets:
            plan = net.inference_plan(subnet)
            assert plan.views is not None and net.inference_plan(subnet) is plan
            for view in plan.views:  # every bound tensor shares the SuperNet's storage: no copies
                for t in (view if isinstance(view, tuple) else (view,) if view is not None else ()):
                    assert t.untyped_storage().data_ptr() in storages
            net.actuate(plan)
            fast = net(x)
            net.actuate(subnet)
            torch.testing.assert_close(fast, net(x), atol=0, rtol=0)
    net.set_subnet_norm({})
