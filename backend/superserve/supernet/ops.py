"""SubNetAct operators: small modules around full-size layers that run the active SubNet in place.

Every operator reads the active SubNet from one shared ``ActuationCell``. Actuating a SubNet is a
single pointer swap of the cell's ``plan`` (O(1)); each operator looks up its own setting by slot
when it runs. Weights are sliced as views of the stored tensors and are never copied.

A plan compiled for serving also carries ``views``: each operator's sliced weights and statistics,
recorded once by a dry-run forward, so that at serving time an operator does one tuple lookup instead
of slicing four tensors (the views share the SuperNet's storage; nothing is copied).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Plan",
    "ActuationCell",
    "WeightSliceConv2d",
    "WeightSliceLinear",
    "SubnetNorm",
    "LayerSelect",
    "NormCalibration",
]


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the operators need to run one SubNet, compiled once per SubNet.

    ``conv_out``: output channels per WeightSlice slot; ``stage_depths``: blocks run per stage;
    ``norm_row``: row of the SubnetNorm tables, or -1 to use the sliced full-width running statistics;
    ``views``: per operator, its pre-sliced tensors (inference only; None: slice at run time).
    """

    conv_out: tuple[int, ...]
    stage_depths: tuple[int, ...]
    run_stem_residual: bool
    norm_row: int
    views: tuple | None = None


class NormCalibration:
    """Accumulates exact per-channel mean/variance of each SubnetNorm's input over calibration batches."""

    def __init__(self) -> None:
        self.sums: dict[int, list] = {}

    def add(self, layer: "SubnetNorm", x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x64 = x.detach().double()
        count = x64.numel() // x64.shape[1]
        s1 = x64.sum((0, 2, 3))
        s2 = (x64 * x64).sum((0, 2, 3))
        acc = self.sums.get(id(layer))
        if acc is None:
            self.sums[id(layer)] = [s1, s2, count]
        else:
            acc[0] += s1
            acc[1] += s2
            acc[2] += count
        mean = s1 / count
        return mean.to(x.dtype), (s2 / count - mean * mean).clamp_min(0).to(x.dtype)

    def result(self, layer: "SubnetNorm") -> tuple[torch.Tensor, torch.Tensor]:
        s1, s2, count = self.sums[id(layer)]
        mean = s1 / count
        return mean.float(), (s2 / count - mean * mean).clamp_min(0).float()


class ActuationCell:
    """The one mutable place that says which SubNet runs next; shared by all operators of a SuperNet."""

    __slots__ = ("plan", "calibration", "recording")

    def __init__(self) -> None:
        self.plan: Plan | None = None
        self.calibration: NormCalibration | None = None
        self.recording: dict[int, object] | None = None  # op index -> views, during a dry run


class WeightSliceConv2d(nn.Conv2d):
    """A full-size conv that runs with its first ``out`` filters over the input's channels (WeightSlice)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, *,
                 cell: ActuationCell, slot: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)
        self.cell = cell
        self.slot = slot
        self.op = -1  # index into Plan.views, set by the SuperNet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.cell.plan
        if plan.views is not None:
            return F.conv2d(x, plan.views[self.op], None, self.stride, self.padding)
        weight = self.weight[: plan.conv_out[self.slot], : x.shape[1]]
        if self.cell.recording is not None:
            self.cell.recording[self.op] = weight
        return F.conv2d(x, weight, None, self.stride, self.padding)


class WeightSliceLinear(nn.Linear):
    """A full-size classifier that reads only as many input features as the active SubNet produces."""

    def __init__(self, in_features: int, out_features: int, *, cell: ActuationCell) -> None:
        super().__init__(in_features, out_features)
        self.cell = cell
        self.op = -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.cell.plan
        if plan.views is not None:
            return F.linear(x, plan.views[self.op], self.bias)
        weight = self.weight[:, : x.shape[1]]
        if self.cell.recording is not None:
            self.cell.recording[self.op] = weight
        return F.linear(x, weight, self.bias)


class SubnetNorm(nn.BatchNorm2d):
    """BatchNorm with one row of statistics per served SubNet, looked up by the active plan's row.

    The shared affine parameters and the full-width running statistics keep OFA's layout and names
    (so OFA checkpoints load); ``subnet_mean``/``subnet_var`` are the per-SubNet tables SubnetNorm adds.
    """

    def __init__(self, num_features: int, *, cell: ActuationCell, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.cell = cell
        self.op = -1
        self.register_buffer("subnet_mean", torch.zeros(0, num_features), persistent=False)
        self.register_buffer("subnet_var", torch.ones(0, num_features), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.cell.plan
        if plan.views is not None:
            mean, var, weight, bias = plan.views[self.op]
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        c = x.shape[1]
        weight, bias = self.weight[:c], self.bias[:c]
        calibration = self.cell.calibration
        if calibration is not None:
            mean, var = calibration.add(self, x)
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        if self.training:
            return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], weight, bias, True,
                                self.momentum, self.eps)
        row = plan.norm_row
        if row >= 0:
            mean, var = self.subnet_mean[row, :c], self.subnet_var[row, :c]
        else:
            mean, var = self.running_mean[:c], self.running_var[:c]
        if self.cell.recording is not None:
            self.cell.recording[self.op] = (mean, var, weight, bias)
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)


class LayerSelect(nn.Module):
    """Runs the first ``stage_depths[stage]`` blocks of one stage (LayerSelect); the rest are skipped.

    The blocks stay registered in the SuperNet's flat ``blocks`` list (OFA's layout); this module only
    holds references to them, so it adds no state-dict keys.
    """

    def __init__(self, blocks: list[nn.Module], stage: int, cell: ActuationCell) -> None:
        super().__init__()
        self._stage_blocks = tuple(blocks)
        self.stage = stage
        self.cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self._stage_blocks[: self.cell.plan.stage_depths[self.stage]]:
            x = block(x)
        return x
