"""The elastic ResNet SuperNet (OFA ResNet family) with SubNetAct operators inserted.

Module names follow OFA's ``OFAResNets`` (``input_stem``, ``blocks``, ``classifier``, ``conv1.conv``,
``conv3.bn`` ...) minus OFA's doubled wrapper names, so OFA checkpoints map onto it key by key.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import torch
from torch import nn

from .ops import ActuationCell, LayerSelect, NormCalibration, Plan, SubnetNorm, WeightSliceConv2d, WeightSliceLinear
from .space import SearchSpace, SubNet

__all__ = ["ElasticResNet", "compile_plan", "count_params"]

STEM_MID_SLOT, STEM_OUT_SLOT = 0, 1


def _block_slots(block: int) -> tuple[int, int]:
    """WeightSlice slots of a block: (middle channels, output channels)."""
    return 2 + 2 * block, 3 + 2 * block


def compile_plan(space: SearchSpace, subnet: SubNet, norm_row: int = -1) -> Plan:
    """Turn a SubNet description into the per-slot settings the operators read."""
    widths = [space.stem_mid_channels[subnet.width[0]], space.stem_out_channels[subnet.width[1]]]
    for block, stage in enumerate(space.block_stage()):
        out = space.stage_out_channels(stage)[subnet.width[stage + 2]]
        widths += [space.middle_channels(out, subnet.expand[block]), out]
    depths = tuple(base + d for base, d in zip(space.base_depths, subnet.depth[1:]))
    return Plan(tuple(widths), depths, subnet.depth[0] == max(space.depth_choices), norm_row)


def count_params(space: SearchSpace, subnet: SubNet) -> int:
    """Parameters a SubNet uses (conv weights, BatchNorm affine, classifier), computed from its shapes."""
    plan = compile_plan(space, subnet)
    mid, stem_out = plan.conv_out[STEM_MID_SLOT], plan.conv_out[STEM_OUT_SLOT]
    total = space.in_channels * mid * 9 + 2 * mid
    if plan.run_stem_residual:
        total += mid * mid * 9 + 2 * mid
    total += mid * stem_out * 9 + 2 * stem_out
    channels = stem_out
    block = 0
    for stage, n in enumerate(space.blocks_per_stage):
        for i in range(n):
            if i < plan.stage_depths[stage]:
                m, o = (plan.conv_out[s] for s in _block_slots(block))
                total += channels * m + 2 * m + m * m * 9 + 2 * m + m * o + 2 * o
                if i == 0:
                    total += channels * o + 2 * o
                channels = o
            block += 1
    return total + channels * space.num_classes + space.num_classes


def _conv_bn(cell, in_ch, out_ch, kernel, stride, slot, act=True) -> nn.Sequential:
    layers = [("conv", WeightSliceConv2d(in_ch, out_ch, kernel, stride, cell=cell, slot=slot)),
              ("bn", SubnetNorm(out_ch, cell=cell))]
    if act:
        layers.append(("act", nn.ReLU(inplace=True)))
    return nn.Sequential(OrderedDict(layers))


class StemResidual(nn.Module):
    """The stem's optional residual conv (OFA: ``ResidualBlock`` with an identity shortcut)."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3, 1x1) with elastic middle and output width.

    The first block of a stage has a downsample path (avg-pool then 1x1 conv, OFA's ``avgpool_conv``).
    """

    def __init__(self, cell, in_ch: int, out_ch: int, mid_ch: int, stride: int, block: int, downsample: bool):
        super().__init__()
        mid_slot, out_slot = _block_slots(block)
        self.conv1 = _conv_bn(cell, in_ch, mid_ch, 1, 1, mid_slot)
        self.conv2 = _conv_bn(cell, mid_ch, mid_ch, 3, stride, mid_slot)
        self.conv3 = _conv_bn(cell, mid_ch, out_ch, 1, 1, out_slot, act=False)
        self.downsample = None
        if downsample:
            self.downsample = nn.Sequential(OrderedDict([
                ("avg_pool", nn.AvgPool2d(stride, stride, padding=0, ceil_mode=True)),
                ("conv", WeightSliceConv2d(in_ch, out_ch, 1, 1, cell=cell, slot=out_slot)),
                ("bn", SubnetNorm(out_ch, cell=cell)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        return torch.relu_(out + residual)


class ElasticResNet(nn.Module):
    """A SuperNet holding every SubNet of ``space``; ``actuate`` picks the one the next forward runs."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        self.cell = ActuationCell()
        cell = self.cell
        mid, out = max(space.stem_mid_channels), max(space.stem_out_channels)
        self.input_stem = nn.ModuleList([
            _conv_bn(cell, space.in_channels, mid, 3, space.stem_stride, STEM_MID_SLOT),
            StemResidual(_conv_bn(cell, mid, mid, 3, 1, STEM_MID_SLOT)),
            _conv_bn(cell, mid, out, 3, 1, STEM_OUT_SLOT),
        ])
        self.max_pooling = nn.MaxPool2d(3, 2, padding=1) if space.use_maxpool else nn.Identity()
        blocks, stages, in_ch, block = [], [], out, 0
        for stage, n in enumerate(space.blocks_per_stage):
            out_ch = max(space.stage_out_channels(stage))
            mid_ch = space.middle_channels(out_ch, max(space.expand_choices))
            stage_blocks = []
            for i in range(n):
                stride = space.stage_strides[stage] if i == 0 else 1
                b = Bottleneck(cell, in_ch, out_ch, mid_ch, stride, block, downsample=(i == 0))
                stage_blocks.append(b)
                in_ch, block = out_ch, block + 1
            blocks += stage_blocks
            stages.append(LayerSelect(stage_blocks, stage, cell))
        self.blocks = nn.ModuleList(blocks)
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Sequential(OrderedDict([("linear", WeightSliceLinear(in_ch, space.num_classes,
                                                                                     cell=cell))]))
        ops = [m for m in self.modules() if isinstance(m, (WeightSliceConv2d, SubnetNorm, WeightSliceLinear))]
        for index, op in enumerate(ops):
            op.op = index
        self._num_ops = len(ops)
        self._plans: dict[str, Plan] = {}
        self._inference_plans: dict[str, Plan] = {}
        self.subnet_rows: dict[str, int] = {}
        self.actuate(space.largest())

    # Actuation ------------------------------------------------------------------------------
    def plan_for(self, subnet: SubNet) -> Plan:
        """The compiled plan of a SubNet, with its SubnetNorm row if it has calibrated statistics."""
        plan = self._plans.get(subnet.id)
        if plan is None:
            plan = compile_plan(self.space, subnet, self.subnet_rows.get(subnet.id, -1))
            self._plans[subnet.id] = plan
        return plan

    @torch.no_grad()
    def inference_plan(self, subnet: SubNet) -> Plan:
        """The plan with every operator's sliced views bound (one dry-run forward, once per SubNet).

        For serving: views share the SuperNet's storage, so later in-place weight updates show through,
        but they carry no autograd history; train with ``plan_for`` plans.
        """
        plan = self._inference_plans.get(subnet.id)
        if plan is None:
            plan = self.plan_for(subnet)
            was_training = self.training
            self.eval()
            self.cell.recording = {}
            try:
                self.actuate(plan)
                size = self.space.input_size
                self(torch.zeros(1, self.space.in_channels, size, size, device=self.classifier.linear.weight.device))
                recorded = self.cell.recording
            finally:
                self.cell.recording = None
                self.train(was_training)
            plan = dataclasses.replace(plan, views=tuple(recorded.get(i) for i in range(self._num_ops)))
            self._inference_plans[subnet.id] = plan
        return plan

    def sliced_statistics_plan(self, subnet: SubNet) -> Plan:
        """The plan that slices the full-width running statistics instead of reading the SubNet's own (what
        serving would be without SubnetNorm)."""
        return compile_plan(self.space, subnet)

    def servable_plan(self, subnet: SubNet) -> Plan:
        """What the server runs for ``subnet``: its inference plan, which must have SubnetNorm statistics."""
        plan = self.inference_plan(subnet)
        if plan.norm_row < 0:
            raise ValueError(f"SubNet {subnet.id} has no SubnetNorm statistics in subnet_norm.pt: rebuild the model "
                             "(`make model`)")
        return plan

    def actuate(self, subnet: SubNet | Plan) -> None:
        """Make the next forward run ``subnet``: one pointer swap once its plan is compiled."""
        self.cell.plan = subnet if isinstance(subnet, Plan) else self.plan_for(subnet)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem0, stem_residual, stem2 = self.input_stem
        x = stem0(x)
        if self.cell.plan.run_stem_residual:
            x = stem_residual(x)
        x = self.max_pooling(stem2(x))
        for stage in self.stages:
            x = stage(x)
        return self.classifier(x.mean((2, 3)))

    # SubnetNorm statistics ------------------------------------------------------------------
    def norm_layers(self) -> dict[str, SubnetNorm]:
        return {name: m for name, m in self.named_modules() if isinstance(m, SubnetNorm)}

    @torch.no_grad()
    @torch.no_grad()  # statistics only: no autograd graph holding a chunk's activations
    def calibrate(self, subnet: SubNet, batches) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Forward calibration batches through ``subnet`` and return each SubnetNorm's exact statistics."""
        was_training = self.training
        self.eval()
        self.cell.calibration = NormCalibration()
        try:
            self.actuate(compile_plan(self.space, subnet))
            for images in batches:
                self(images)
            calibration = self.cell.calibration
            return {name: calibration.result(m) for name, m in self.norm_layers().items()
                    if id(m) in calibration.sums}
        finally:
            self.cell.calibration = None
            self.train(was_training)

    def set_subnet_norm(self, stats: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]) -> None:
        """Install per-SubNet statistics ``{subnet_id: {layer: (mean, var)}}`` as the SubnetNorm tables.

        Layers a SubNet does not run keep zero/one rows; they are never read for that SubNet.
        """
        ids = list(stats)
        for name, layer in self.norm_layers().items():
            mean = torch.zeros(len(ids), layer.num_features, device=layer.weight.device)
            var = torch.ones(len(ids), layer.num_features, device=layer.weight.device)
            for row, subnet_id in enumerate(ids):
                if name in stats[subnet_id]:
                    m, v = stats[subnet_id][name]
                    mean[row, : m.numel()] = m
                    var[row, : v.numel()] = v
            layer.subnet_mean, layer.subnet_var = mean, var
        self.subnet_rows = {subnet_id: row for row, subnet_id in enumerate(ids)}
        self._plans.clear()
        self._inference_plans.clear()
        self.actuate(self.space.largest())

    def subnet_norm_state(self) -> dict:
        """SubnetNorm tables in a ``torch.load(weights_only=True)``-safe form."""
        return {"subnet_ids": list(self.subnet_rows),
                "layers": {name: torch.stack([m.subnet_mean, m.subnet_var]) for name, m in self.norm_layers().items()}}

    def load_subnet_norm_state(self, state: dict) -> None:
        layers = self.norm_layers()
        missing = set(layers) - set(state["layers"])
        if missing:
            raise ValueError(f"SubnetNorm statistics lack {len(missing)} layers, e.g. {sorted(missing)[:3]}")
        for name, layer in layers.items():
            table = state["layers"][name]
            if table.shape != (2, len(state["subnet_ids"]), layer.num_features):
                raise ValueError(f"SubnetNorm statistics of {name} have shape {tuple(table.shape)}, expected "
                                 f"(2, {len(state['subnet_ids'])}, {layer.num_features})")
            layer.subnet_mean, layer.subnet_var = (t.to(layer.weight.device, copy=True) for t in table)
        self.subnet_rows = {subnet_id: row for row, subnet_id in enumerate(state["subnet_ids"])}
        self._plans.clear()
        self._inference_plans.clear()
        self.actuate(self.space.largest())
