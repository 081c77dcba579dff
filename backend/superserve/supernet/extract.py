"""Extract one SubNet into a standalone network of plain torch modules holding copied weights.

This is what serving systems without SubNetAct do (one model per accuracy point). We use it as the
reference the in-place SuperNet is checked against, and as the baseline of the memory benchmark.
"""

from __future__ import annotations

import torch
from torch import nn

from .network import ElasticResNet, compile_plan
from .ops import SubnetNorm
from .space import SubNet

__all__ = ["extract_subnet", "StaticResNet"]


def _conv(src: nn.Conv2d, out_ch: int, in_ch: int) -> nn.Conv2d:
    k = src.kernel_size[0]
    conv = nn.Conv2d(in_ch, out_ch, k, src.stride, padding=k // 2, bias=False)
    conv.weight.data.copy_(src.weight.data[:out_ch, :in_ch])
    return conv


def _bn(src: SubnetNorm, channels: int, row: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=src.eps)
    bn.weight.data.copy_(src.weight.data[:channels])
    bn.bias.data.copy_(src.bias.data[:channels])
    mean, var = (src.subnet_mean[row], src.subnet_var[row]) if row >= 0 else (src.running_mean, src.running_var)
    bn.running_mean.copy_(mean[:channels])
    bn.running_var.copy_(var[:channels])
    return bn


class _ConvBN(nn.Sequential):
    def __init__(self, src: nn.Sequential, out_ch: int, in_ch: int, row: int, act: bool = True):
        layers = [_conv(src.conv, out_ch, in_ch), _bn(src.bn, out_ch, row)]
        if act:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class _StaticBottleneck(nn.Module):
    def __init__(self, src, in_ch: int, mid: int, out: int, row: int):
        super().__init__()
        self.body = nn.Sequential(_ConvBN(src.conv1, mid, in_ch, row), _ConvBN(src.conv2, mid, mid, row),
                                  _ConvBN(src.conv3, out, mid, row, act=False))
        self.downsample = None
        if src.downsample is not None:
            pool = src.downsample.avg_pool
            self.downsample = nn.Sequential(
                nn.AvgPool2d(pool.kernel_size, pool.stride, padding=0, ceil_mode=True),
                _conv(src.downsample.conv, out, in_ch), _bn(src.downsample.bn, out, row))

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.body(x) + residual)


class _StaticResidual(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return x + self.conv(x)


class StaticResNet(nn.Sequential):
    """A plain ResNet with exactly the layers and weights of one SubNet."""


@torch.no_grad()
def extract_subnet(supernet: ElasticResNet, subnet: SubNet, use_subnet_norm: bool = True) -> StaticResNet:
    """Copy ``subnet``'s sliced weights (and its SubnetNorm statistics, if calibrated) into a new network."""
    space = supernet.space
    row = supernet.subnet_rows.get(subnet.id, -1) if use_subnet_norm else -1
    plan = compile_plan(space, subnet, row)
    mid, out = plan.conv_out[0], plan.conv_out[1]
    stem0, stem_residual, stem2 = supernet.input_stem
    layers: list[nn.Module] = [_ConvBN(stem0, mid, space.in_channels, row)]
    if plan.run_stem_residual:
        layers.append(_StaticResidual(_ConvBN(stem_residual.conv, mid, mid, row)))
    layers.append(_ConvBN(stem2, out, mid, row))
    if space.use_maxpool:
        layers.append(nn.MaxPool2d(3, 2, padding=1))
    channels, block = out, 0
    for stage, n in enumerate(space.blocks_per_stage):
        for i in range(n):
            if i < plan.stage_depths[stage]:
                m, o = plan.conv_out[2 + 2 * block], plan.conv_out[3 + 2 * block]
                layers.append(_StaticBottleneck(supernet.blocks[block], channels, m, o, row))
                channels = o
            block += 1
    layers.append(nn.AdaptiveAvgPool2d(1))
    layers.append(nn.Flatten())
    src = supernet.classifier.linear
    linear = nn.Linear(channels, space.num_classes)
    linear.weight.data.copy_(src.weight.data[:, :channels])
    linear.bias.data.copy_(src.bias.data)
    layers.append(linear)
    return StaticResNet(*layers).eval()
