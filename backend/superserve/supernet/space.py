"""Search spaces of the OFA ResNet family and the SubNet descriptions they admit.

A SubNet is plain data (depths, expand ratios, width indices) with the same meaning as OFA's
``{'d': [...], 'e': [...], 'w': [...]}`` dicts, so that users can paste SubNets from OFA's NAS
output. Its ``id`` is a hash of its canonical form: two descriptions that run the same layers share it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

__all__ = ["SearchSpace", "SubNet", "make_divisible", "OFA_RESNET50", "MNIST_RESNET"]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` the way OFA (and TF MobileNet) does."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class SearchSpace:
    """Shape of one ResNet SuperNet: what can be elastic and how far."""

    family: ClassVar[str] = "resnet"
    name: str
    in_channels: int
    input_size: int
    num_classes: int
    base_depths: tuple[int, ...]
    stage_widths: tuple[int, ...]
    stage_strides: tuple[int, ...]
    depth_choices: tuple[int, ...] = (0, 1, 2)
    expand_choices: tuple[float, ...] = (0.2, 0.25, 0.35)
    width_mults: tuple[float, ...] = (0.65, 0.8, 1.0)
    stem_channels: int = 64
    stem_stride: int = 2
    use_maxpool: bool = True
    channel_divisor: int = 8

    def __post_init__(self) -> None:
        n = len(self.base_depths)
        if not (len(self.stage_widths) == len(self.stage_strides) == n):
            raise ValueError(f"{self.name}: base_depths, stage_widths and stage_strides need {n} entries each")
        for name in ("depth_choices", "expand_choices", "width_mults"):
            values = getattr(self, name)
            if not values or list(values) != sorted(values):
                raise ValueError(f"{self.name}: {name} must be a non-empty ascending tuple, got {values}")

    # Derived shapes -------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.base_depths)

    @property
    def blocks_per_stage(self) -> tuple[int, ...]:
        return tuple(d + max(self.depth_choices) for d in self.base_depths)

    @property
    def num_blocks(self) -> int:
        return sum(self.blocks_per_stage)

    @property
    def stem_out_channels(self) -> tuple[int, ...]:
        """Output channels of the stem's last conv, one per width index (OFA: ``input_channel``)."""
        return tuple(make_divisible(self.stem_channels * w, self.channel_divisor) for w in self.width_mults)

    @property
    def stem_mid_channels(self) -> tuple[int, ...]:
        """Channels of the stem's first two convs, one per width index (OFA: ``mid_input_channel``)."""
        return tuple(make_divisible(c // 2, self.channel_divisor) for c in self.stem_out_channels)

    def stage_out_channels(self, stage: int) -> tuple[int, ...]:
        return tuple(make_divisible(self.stage_widths[stage] * w, self.channel_divisor) for w in self.width_mults)

    def middle_channels(self, out_channels: int, expand_ratio: float) -> int:
        return make_divisible(round(out_channels * expand_ratio), self.channel_divisor)

    def block_stage(self) -> tuple[int, ...]:
        """Stage index of every block, in order."""
        return tuple(s for s, n in enumerate(self.blocks_per_stage) for _ in range(n))

    # SubNets --------------------------------------------------------------------------------
    def largest(self) -> "SubNet":
        return SubNet.from_lists(
            self,
            [max(self.depth_choices)] * (self.num_stages + 1),
            [max(self.expand_choices)] * self.num_blocks,
            [len(self.width_mults) - 1] * (self.num_stages + 2),
        )

    def smallest(self) -> "SubNet":
        return SubNet.from_lists(
            self,
            [min(self.depth_choices)] * (self.num_stages + 1),
            [min(self.expand_choices)] * self.num_blocks,
            [0] * (self.num_stages + 2),
        )

    def sample(self, rng) -> "SubNet":
        """A uniformly random SubNet (``rng`` is a ``random.Random``), as OFA samples them."""
        return SubNet.from_lists(
            self,
            [rng.choice([max(self.depth_choices), min(self.depth_choices)])]
            + [rng.choice(self.depth_choices) for _ in range(self.num_stages)],
            [rng.choice(self.expand_choices) for _ in range(self.num_blocks)],
            [rng.randrange(len(self.width_mults)) for _ in range(self.num_stages + 2)],
        )

    def parse(self, spec: "SubNet | Mapping[str, Any] | str") -> "SubNet":
        """Accept our dict form, OFA's ``{'d','e','w'}`` dict form, JSON text of either, or a SubNet."""
        spec = read_spec(self.name, spec, SubNet)
        if isinstance(spec, SubNet):
            return spec
        if not isinstance(spec, Mapping):
            raise ValueError(f"a SubNet is a dict with keys depth/expand/width (or OFA's d/e/w), got {type(spec).__name__}")
        if {"d", "e", "w"} <= spec.keys():
            keys = ("d", "e", "w")
        elif {"depth", "expand", "width"} <= spec.keys():
            keys = ("depth", "expand", "width")
        else:
            raise ValueError(f"a SubNet needs keys depth/expand/width (or OFA's d/e/w), got {sorted(spec.keys())}")
        return SubNet.from_lists(self, *(spec[k] for k in keys))


@dataclass(frozen=True)
class SubNet:
    """One SubNet of a SearchSpace, canonical: settings of blocks that do not run are normalised away.

    ``depth[0]`` says whether the stem's residual conv runs (it runs only at the largest depth choice,
    as in OFA), ``depth[1:]`` is added to each stage's base depth. ``expand`` has one ratio per block
    of the SuperNet; ``width`` holds width-multiplier indices for the two stem groups and each stage.
    """

    space_name: str
    depth: tuple[int, ...]
    expand: tuple[float, ...]
    width: tuple[int, ...]
    id: str = field(default="", compare=False)

    @staticmethod
    def from_lists(space: SearchSpace, depth, expand, width) -> "SubNet":
        depth = _as_tuple("depth", depth, space.num_stages + 1, int)
        expand = _as_tuple("expand", expand, space.num_blocks, float)
        width = _as_tuple("width", width, space.num_stages + 2, int)
        for d in depth:
            if d not in space.depth_choices:
                raise ValueError(f"depth {d} is not one of {space.depth_choices}")
        for e in expand:
            if e not in space.expand_choices:
                raise ValueError(f"expand ratio {e} is not one of {space.expand_choices}")
        for w in width:
            if not 0 <= w < len(space.width_mults):
                raise ValueError(f"width index {w} is outside 0..{len(space.width_mults) - 1}")
        # Canonical form: stem depth is binary; blocks beyond a stage's depth take the smallest ratio.
        stem = max(space.depth_choices) if depth[0] == max(space.depth_choices) else min(space.depth_choices)
        depth = (stem,) + depth[1:]
        canon_expand = []
        block = 0
        for stage, n in enumerate(space.blocks_per_stage):
            active = space.base_depths[stage] + depth[stage + 1]
            for i in range(n):
                canon_expand.append(expand[block] if i < active else min(space.expand_choices))
                block += 1
        expand = tuple(canon_expand)
        digest = hashlib.sha1(json.dumps([space.name, depth, expand, width]).encode()).hexdigest()[:12]
        return SubNet(space.name, depth, expand, width, id=f"sn-{digest}")

    def to_dict(self) -> dict[str, list]:
        return {"depth": list(self.depth), "expand": list(self.expand), "width": list(self.width)}

    def to_ofa(self) -> dict[str, list]:
        return {"d": list(self.depth), "e": list(self.expand), "w": list(self.width)}


def read_spec(space_name: str, spec: Any, subnet_type: type) -> Any:
    """A SubNet of space ``space_name`` as it is, JSON text decoded, anything else unchanged (for ``parse``)."""
    if isinstance(spec, subnet_type):
        if spec.space_name != space_name:
            raise ValueError(f"SubNet belongs to space {spec.space_name!r}, not {space_name!r}")
        return spec
    if isinstance(spec, str):
        try:
            return json.loads(spec)
        except json.JSONDecodeError as exc:
            raise ValueError(f"SubNet text is not JSON: {exc}") from None
    return spec


def _as_tuple(name: str, values, length: int, kind) -> tuple:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{name} must be a list of {length} numbers, got {values!r}")
    if len(values) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(values)}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{name} entries must be numbers, got {v!r}")
        if kind is int and float(v) != int(v):
            raise ValueError(f"{name} entries must be integers, got {v!r}")
        out.append(kind(v))
    return tuple(out)


OFA_RESNET50 = SearchSpace(
    name="ofa_resnet50",
    in_channels=3,
    input_size=224,
    num_classes=1000,
    base_depths=(2, 2, 4, 2),
    stage_widths=(256, 512, 1024, 2048),
    stage_strides=(1, 2, 2, 2),
)

# The default SuperNet: the same family, scaled for 28x28 digits so that it trains on 2 CPU cores.
# Width 0.125 and a channel divisor of 4 make the smallest SubNet narrow (4 to 8 channels), so the
# scheduler gets a wide range of speeds and accuracies to choose from.
MNIST_RESNET = SearchSpace(
    name="mnist_resnet",
    in_channels=1,
    input_size=28,
    num_classes=10,
    base_depths=(1, 1, 1),
    stage_widths=(64, 128, 256),
    stage_strides=(1, 2, 2),
    depth_choices=(0, 1, 2),
    expand_choices=(0.1, 0.2, 0.35),
    width_mults=(0.125, 0.25, 0.5, 1.0),
    stem_channels=32,
    stem_stride=1,
    use_maxpool=True,
    channel_divisor=4,
)
