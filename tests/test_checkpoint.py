"""OFA checkpoints: key mapping, loading from a local file, and the errors a user can meet."""

import random

import pytest
import torch

from superserve.supernet import OFA_RESNET50, ElasticResNet
from superserve.supernet.checkpoint import (load_ofa_checkpoint, load_ofa_state_dict, map_ofa_key, ofa_key,
                                             save_ofa_checkpoint)


@pytest.mark.parametrize("ofa_key, ours", [
    ("input_stem.0.conv.conv.weight", "input_stem.0.conv.weight"),
    ("input_stem.0.bn.bn.running_var", "input_stem.0.bn.running_var"),
    ("input_stem.1.conv.conv.conv.weight", "input_stem.1.conv.conv.weight"),  # ResidualBlock > ConvLayer > conv
    ("input_stem.1.conv.bn.bn.weight", "input_stem.1.conv.bn.weight"),
    ("blocks.0.conv3.bn.bn.running_mean", "blocks.0.conv3.bn.running_mean"),
    ("blocks.0.downsample.conv.conv.weight", "blocks.0.downsample.conv.weight"),
    ("blocks.17.conv2.bn.bn.num_batches_tracked", "blocks.17.conv2.bn.num_batches_tracked"),
    ("classifier.linear.linear.bias", "classifier.linear.bias"),
    ("module.classifier.linear.linear.weight", "classifier.linear.weight"),  # saved from DataParallel
    ("blocks.3.conv1.conv.weight", "blocks.3.conv1.conv.weight"),  # extracted (non-dynamic) names pass through
])
def test_ofa_keys_map_to_ours(ofa_key, ours):
    assert map_ofa_key(ofa_key) == ours


@pytest.fixture(scope="module")
def ofa_net():
    torch.manual_seed(0)
    net = ElasticResNet(OFA_RESNET50).eval()
    for m in net.norm_layers().values():  # non-trivial statistics, as a trained checkpoint has
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
    return net


def test_an_ofa_checkpoint_file_loads_and_computes_the_same(ofa_net, tmp_path):
    save_ofa_checkpoint(ofa_net, tmp_path / "ofa_resnet50.pth")
    state = torch.load(tmp_path / "ofa_resnet50.pth", weights_only=True)["state_dict"]
    assert "input_stem.1.conv.conv.conv.weight" in state and "classifier.linear.linear.weight" in state
    assert all(map_ofa_key(ofa_key(k)) == k for k in ofa_net.state_dict())
    fresh = ElasticResNet(OFA_RESNET50).eval()
    load_ofa_checkpoint(fresh, tmp_path / "ofa_resnet50.pth")
    x = torch.rand(1, 3, 64, 64)
    rng = random.Random(0)
    with torch.no_grad():
        for subnet in (OFA_RESNET50.largest(), OFA_RESNET50.sample(rng)):
            ofa_net.actuate(subnet)
            fresh.actuate(subnet)
            torch.testing.assert_close(fresh(x), ofa_net(x), atol=0, rtol=0)


def test_loader_errors_name_the_key(ofa_net, tmp_path):
    state = {ofa_key(k): v for k, v in ofa_net.state_dict().items()}
    bad_shape = dict(state)
    bad_shape["blocks.0.conv1.conv.conv.weight"] = torch.zeros(3, 3, 1, 1)
    with pytest.raises(ValueError, match="blocks.0.conv1.conv.conv.weight.*shape"):
        load_ofa_state_dict(ElasticResNet(OFA_RESNET50), bad_shape)
    unknown = dict(state, **{"head.fc.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="do not belong.*head.fc.weight"):
        load_ofa_state_dict(ElasticResNet(OFA_RESNET50), unknown)
    missing = {k: v for k, v in state.items() if not k.startswith("classifier")}
    with pytest.raises(ValueError, match="lacks 2 keys"):
        load_ofa_state_dict(ElasticResNet(OFA_RESNET50), missing)
    with pytest.raises(FileNotFoundError, match="download it yourself"):
        load_ofa_checkpoint(ElasticResNet(OFA_RESNET50), tmp_path / "nope.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds no state dict"):
        load_ofa_checkpoint(ElasticResNet(OFA_RESNET50), tmp_path / "list.pth")
