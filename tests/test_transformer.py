"""The elastic transformer family: SubNet descriptions, in-place actuation vs extracted twins, the family registry."""

import random

import pytest
import torch

from superserve.supernet import FAMILIES, MNIST_VIT, SPACES, ElasticTransformer, family_of, new_supernet
from superserve.supernet.transformer import TransformerPlan, WeightSliceFFN


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    net = ElasticTransformer(MNIST_VIT).eval()
    with torch.no_grad():  # LayerNorm starts at (1, 0): make it matter, as trained weights do
        for name, p in net.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return net


def test_the_registry_knows_every_space_and_builds_its_family_network():
    assert set(FAMILIES) == {"resnet", "transformer"}
    assert family_of(MNIST_VIT) is FAMILIES["transformer"] and not FAMILIES["transformer"].norm_statistics
    assert family_of(SPACES["mnist_resnet"]).norm_statistics
    assert type(new_supernet("mnist_vit")) is ElasticTransformer
    with pytest.raises(ValueError, match="unknown SuperNet space 'nope'; known: mnist_resnet, mnist_vit"):
        new_supernet("nope")


def test_subnets_are_canonical_and_round_trip_through_their_dict_form():
    a = MNIST_VIT.parse({"depth": 2, "heads": [4, 1, 8, 2, 1, 4], "ffn": [384, 48, 96, 96, 96, 192]})
    b = MNIST_VIT.parse({"depth": 2, "heads": [4, 1, 1, 1, 1, 1], "ffn": [384, 48, 48, 48, 48, 48]})
    assert a == b and a.id == b.id  # layers beyond the depth do not run, so they do not count
    assert a.heads == (4, 1, 1, 1, 1, 1)
    assert MNIST_VIT.parse(str(a.to_dict()).replace("'", '"')) == a
    assert MNIST_VIT.largest().id != MNIST_VIT.smallest().id


@pytest.mark.parametrize("spec, message", [
    ({"depth": 7, "heads": [1] * 6, "ffn": [48] * 6}, "depth 7 is not one of"),
    ({"depth": True, "heads": [1] * 6, "ffn": [48] * 6}, "depth True is not one of"),
    ({"depth": 2, "heads": [1] * 5, "ffn": [48] * 6}, "heads must be a list of 6"),
    ({"depth": 2, "heads": [1] * 6, "ffn": [50] * 6}, "ffn entry 50 is not one of"),
    ({"depth": 2, "heads": [1] * 6}, "keys depth, heads, ffn"),
    ({"d": [2] * 5, "e": [0.25] * 18, "w": [0] * 6}, "keys depth, heads, ffn"),
    ("not json", "not JSON"),
])
def test_subnet_parsing_errors_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        MNIST_VIT.parse(spec)


def test_weight_slice_ffn_runs_the_first_neurons_as_views():
    from superserve.supernet.ops import ActuationCell
    cell = ActuationCell()
    ffn = WeightSliceFFN(8, 32, 0, cell)
    cell.plan = TransformerPlan((1,), (1,), (5,))
    x = torch.randn(2, 3, 8)
    expected = torch.nn.functional.linear(torch.nn.functional.gelu(x @ ffn.fc1.weight[:5].T + ffn.fc1.bias[:5]),
                                          ffn.fc2.weight[:, :5].clone(), ffn.fc2.bias)
    torch.testing.assert_close(ffn(x), expected)
    assert all(t.untyped_storage().data_ptr() == p.untyped_storage().data_ptr()
               for t, p in zip(ffn.slices(cell.plan), (ffn.fc1.weight, ffn.fc1.bias, ffn.fc2.weight)))


def test_forty_random_subnets_match_their_extracted_twins_in_place_and_with_bound_views(vit):
    family = family_of(MNIST_VIT)
    rng = random.Random(1)
    subnets = [MNIST_VIT.largest(), MNIST_VIT.smallest()] + [MNIST_VIT.sample(rng) for _ in range(40)]
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        for subnet in subnets:
            twin = family.extract(vit, subnet)
            assert sum(p.numel() for p in twin.parameters()) == family.count_params(MNIST_VIT, subnet)
            expected = twin(x)
            vit.actuate(subnet)  # sliced at run time (training path)
            torch.testing.assert_close(vit(x), expected, atol=1e-5, rtol=0)
            vit.actuate(vit.servable_plan(subnet))  # pre-bound views (serving path)
            torch.testing.assert_close(vit(x), expected, atol=1e-5, rtol=0)


def test_the_largest_subnet_uses_every_parameter_and_the_smallest_runs_one_layer(vit):
    family = family_of(MNIST_VIT)
    assert family.count_params(MNIST_VIT, MNIST_VIT.largest()) == sum(p.numel() for p in vit.parameters())
    calls = []
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, layer in enumerate(vit.layers)]
    try:
        vit.actuate(MNIST_VIT.smallest())
        with torch.no_grad():
            vit(torch.rand(1, 1, 28, 28))
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == [0]


def test_actuation_is_a_pointer_swap_and_serving_views_share_the_supernet_storage(vit):
    pointers = {name: p.data_ptr() for name, p in vit.named_parameters()}
    storages = {p.untyped_storage().data_ptr() for p in vit.parameters()}
    rng = random.Random(3)
    for _ in range(10):
        plan = vit.servable_plan(MNIST_VIT.sample(rng))
        vit.actuate(plan)
        assert vit.cell.plan is plan
        with torch.no_grad():
            vit(torch.rand(2, 1, 28, 28))
        assert {t.untyped_storage().data_ptr() for views in plan.views for t in views} <= storages  # no copies
    assert pointers == {name: p.data_ptr() for name, p in vit.named_parameters()}
    subnet = MNIST_VIT.smallest()
    assert vit.servable_plan(subnet) is vit.servable_plan(subnet)  # compiled once


def test_a_transformer_trains_through_the_sliced_weights():
    torch.manual_seed(0)
    net = ElasticTransformer(MNIST_VIT).train()
    subnet = MNIST_VIT.parse({"depth": 1, "heads": [2, 1, 1, 1, 1, 1], "ffn": [96, 48, 48, 48, 48, 48]})
    net.actuate(subnet)
    net(torch.rand(4, 1, 28, 28)).sum().backward()
    layer = net.layers[0]
    assert layer.attention.query.weight.grad[:24].abs().sum() > 0  # two heads of 12
    assert layer.attention.query.weight.grad[24:].abs().sum() == 0  # heads 3-8 did not run
    assert layer.ffn.fc1.weight.grad[96:].abs().sum() == 0
    assert net.layers[1].ffn.fc1.weight.grad is None  # layer 2 did not run
