"""The elastic transformer family (DynaBERT-style): a vision transformer whose SubNets differ in depth and width.

Elastic depth is LayerSelect over the encoder layers (a SubNet runs the first ``depth`` of them); elastic width is
WeightSlice over each layer's attention heads (the first ``heads`` query/key/value heads and the matching columns
of the output projection) and its FFN neurons (the first ``ffn`` rows of the first projection, columns of the
second). The embedding width stays whole, so LayerNorm needs no per-SubNet statistics: this family has no
SubnetNorm, as the paper says of transformers.

Images become tokens through ViT's linear patch embedding (one patch-size convolution), which is not elastic.
Nothing but the encoder looks across patches, so depth and width decide accuracy: a convolutional stem in front
made a one-layer SubNet nearly as accurate as six layers and flattened the trade-off. The default space reads the
28x28 digits as 16 tokens of 7x7 patches.

Everything a family provides lives here: the search space and its SubNets, the SuperNet with its operators, the
plan compiler, parameter count and extraction to a standalone twin; ``families.FAMILIES`` registers them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .ops import ActuationCell, LayerSelect
from .space import read_spec

__all__ = ["TransformerSpace", "TransformerSubNet", "TransformerPlan", "ElasticTransformer", "StaticTransformer",
           "compile_transformer_plan", "count_transformer_params", "extract_transformer", "MNIST_VIT"]


@dataclass(frozen=True)
class TransformerSpace:
    """Shape of one elastic transformer SuperNet; choices are ascending tuples."""

    family: ClassVar[str] = "transformer"
    name: str
    in_channels: int
    input_size: int
    num_classes: int
    patch_size: int
    dim: int
    head_dim: int
    depth_choices: tuple[int, ...]  # encoder layers run; the largest is the SuperNet's depth
    head_choices: tuple[int, ...]  # attention heads per layer; the largest times head_dim is dim
    ffn_choices: tuple[int, ...]  # FFN neurons per layer

    def __post_init__(self) -> None:
        for name in ("depth_choices", "head_choices", "ffn_choices"):
            values = getattr(self, name)
            if not values or list(values) != sorted(set(values)) or values[0] < 1:
                raise ValueError(f"{self.name}: {name} must be a non-empty ascending tuple of positive ints")
        if max(self.head_choices) * self.head_dim != self.dim:
            raise ValueError(f"{self.name}: the largest head count times head_dim must equal dim {self.dim}")
        if self.input_size % self.patch_size:
            raise ValueError(f"{self.name}: input_size {self.input_size} is not a multiple of {self.patch_size}")

    @property
    def num_layers(self) -> int:
        return max(self.depth_choices)

    @property
    def num_tokens(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    def largest(self) -> "TransformerSubNet":
        n = self.num_layers
        return TransformerSubNet.from_lists(self, n, [max(self.head_choices)] * n, [max(self.ffn_choices)] * n)

    def smallest(self) -> "TransformerSubNet":
        n = self.num_layers
        return TransformerSubNet.from_lists(self, min(self.depth_choices), [min(self.head_choices)] * n,
                                            [min(self.ffn_choices)] * n)

    def sample(self, rng) -> "TransformerSubNet":
        """A uniformly random SubNet (``rng`` is a ``random.Random``)."""
        n = self.num_layers
        return TransformerSubNet.from_lists(self, rng.choice(self.depth_choices),
                                            [rng.choice(self.head_choices) for _ in range(n)],
                                            [rng.choice(self.ffn_choices) for _ in range(n)])

    def parse(self, spec: "TransformerSubNet | Mapping[str, Any] | str") -> "TransformerSubNet":
        """Accept a SubNet, its dict form ``{"depth": d, "heads": [...], "ffn": [...]}``, or JSON text of it."""
        spec = read_spec(self.name, spec, TransformerSubNet)
        if isinstance(spec, TransformerSubNet):
            return spec
        if not isinstance(spec, Mapping) or not {"depth", "heads", "ffn"} <= spec.keys():
            raise ValueError(f"a {self.name} SubNet is a dict with keys depth, heads, ffn; got {spec!r:.80}")
        return TransformerSubNet.from_lists(self, spec["depth"], spec["heads"], spec["ffn"])


@dataclass(frozen=True)
class TransformerSubNet:
    """One SubNet, canonical: layers beyond ``depth`` take the smallest choices, so equal SubNets share an id."""

    space_name: str
    depth: int
    heads: tuple[int, ...]
    ffn: tuple[int, ...]
    id: str = field(default="", compare=False)

    @staticmethod
    def from_lists(space: TransformerSpace, depth, heads, ffn) -> "TransformerSubNet":
        if isinstance(depth, bool) or not isinstance(depth, int) or depth not in space.depth_choices:
            raise ValueError(f"depth {depth!r} is not one of {space.depth_choices}")
        n = space.num_layers
        for name, values, choices in (("heads", heads, space.head_choices), ("ffn", ffn, space.ffn_choices)):
            if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != n:
                raise ValueError(f"{name} must be a list of {n} entries, got {values!r:.80}")
            for v in values:
                if isinstance(v, bool) or v not in choices:
                    raise ValueError(f"{name} entry {v!r} is not one of {choices}")
        heads = tuple(int(h) if i < depth else min(space.head_choices) for i, h in enumerate(heads))
        ffn = tuple(int(f) if i < depth else min(space.ffn_choices) for i, f in enumerate(ffn))
        digest = hashlib.sha1(json.dumps([space.name, depth, heads, ffn]).encode()).hexdigest()[:12]
        return TransformerSubNet(space.name, depth, heads, ffn, id=f"tn-{digest}")

    def to_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "heads": list(self.heads), "ffn": list(self.ffn)}


@dataclass(frozen=True, slots=True)
class TransformerPlan:
    """What the operators read: ``stage_depths`` (one stage: the layers LayerSelect runs), heads and FFN neurons
    per layer, and, for serving, each operator's pre-sliced weight views (None: slice at run time)."""

    stage_depths: tuple[int]
    heads: tuple[int, ...]
    ffn: tuple[int, ...]
    views: tuple | None = None


def compile_transformer_plan(space: TransformerSpace, subnet: TransformerSubNet) -> TransformerPlan:
    return TransformerPlan((subnet.depth,), subnet.heads, subnet.ffn)


# Operators -------------------------------------------------------------------------------------------------------
class WeightSliceAttention(nn.Module):
    """Multi-head self-attention at full width; runs the active SubNet's first heads (WeightSlice)."""

    def __init__(self, dim: int, head_dim: int, layer: int, cell: ActuationCell) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.head_dim = head_dim
        self.layer = layer
        self.cell = cell
        self.op = -1

    def slices(self, plan: TransformerPlan) -> tuple[torch.Tensor, ...]:
        """Views of the weights the plan runs: first heads' rows of q/k/v, their columns of the output."""
        w = plan.heads[self.layer] * self.head_dim
        return (self.query.weight[:w], self.query.bias[:w], self.key.weight[:w], self.key.bias[:w],
                self.value.weight[:w], self.value.bias[:w], self.out.weight[:, :w])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.cell.plan
        q_w, q_b, k_w, k_b, v_w, v_b, o_w = plan.views[self.op] if plan.views is not None else self.slices(plan)
        batch, tokens, _ = x.shape
        shape = (batch, tokens, q_w.shape[0] // self.head_dim, self.head_dim)
        q = F.linear(x, q_w, q_b).view(shape).transpose(1, 2)
        k = F.linear(x, k_w, k_b).view(shape).transpose(1, 2)
        v = F.linear(x, v_w, v_b).view(shape).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, q_w.shape[0])
        return F.linear(y, o_w, self.out.bias)


class WeightSliceFFN(nn.Module):
    """The feed-forward block at full width; runs the active SubNet's first neurons (WeightSlice)."""

    def __init__(self, dim: int, hidden: int, layer: int, cell: ActuationCell) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.layer = layer
        self.cell = cell
        self.op = -1

    def slices(self, plan: TransformerPlan) -> tuple[torch.Tensor, ...]:
        n = plan.ffn[self.layer]
        return self.fc1.weight[:n], self.fc1.bias[:n], self.fc2.weight[:, :n]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.cell.plan
        w1, b1, w2 = plan.views[self.op] if plan.views is not None else self.slices(plan)
        return F.linear(F.gelu(F.linear(x, w1, b1)), w2, self.fc2.bias)


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer; LayerNorm runs at the full embedding width, which every SubNet keeps."""

    def __init__(self, space: TransformerSpace, layer: int, cell: ActuationCell) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(space.dim), nn.LayerNorm(space.dim)
        self.attention = WeightSliceAttention(space.dim, space.head_dim, layer, cell)
        self.ffn = WeightSliceFFN(space.dim, max(space.ffn_choices), layer, cell)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class ElasticTransformer(nn.Module):
    """A SuperNet holding every SubNet of ``space``; ``actuate`` picks the one the next forward runs."""

    def __init__(self, space: TransformerSpace) -> None:
        super().__init__()
        self.space = space
        self.cell = ActuationCell()
        # patch embedding, not elastic: every SubNet runs all of it
        self.tokenizer = nn.Conv2d(space.in_channels, space.dim, space.patch_size, space.patch_size)
        self.position = nn.Parameter(torch.randn(1, space.num_tokens, space.dim) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(space, i, self.cell) for i in range(space.num_layers))
        self.encoder = LayerSelect(list(self.layers), 0, self.cell)
        self.norm = nn.LayerNorm(space.dim)
        self.head = nn.Linear(space.dim, space.num_classes)
        self._ops = [m for m in self.modules() if isinstance(m, (WeightSliceAttention, WeightSliceFFN))]
        for index, op in enumerate(self._ops):
            op.op = index
        self._plans: dict[str, TransformerPlan] = {}
        self._inference_plans: dict[str, TransformerPlan] = {}
        self.actuate(space.largest())

    def plan_for(self, subnet: TransformerSubNet) -> TransformerPlan:
        plan = self._plans.get(subnet.id)
        if plan is None:
            plan = self._plans[subnet.id] = compile_transformer_plan(self.space, subnet)
        return plan

    def inference_plan(self, subnet: TransformerSubNet) -> TransformerPlan:
        """The plan with every operator's weight views bound: views of the SuperNet's storage, never copies."""
        plan = self._inference_plans.get(subnet.id)
        if plan is None:
            plan = self.plan_for(subnet)
            with torch.no_grad():
                views = tuple(tuple(t.detach() for t in op.slices(plan)) for op in self._ops)
            plan = self._inference_plans[subnet.id] = replace(plan, views=views)
        return plan

    def servable_plan(self, subnet: TransformerSubNet) -> TransformerPlan:
        """What the server runs for ``subnet``: every SubNet is servable (LayerNorm needs no calibration)."""
        return self.inference_plan(subnet)

    def actuate(self, subnet: TransformerSubNet | TransformerPlan) -> None:
        """Make the next forward run ``subnet``: one pointer swap once its plan is compiled."""
        self.cell.plan = subnet if isinstance(subnet, TransformerPlan) else self.plan_for(subnet)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokenizer(x).flatten(2).transpose(1, 2) + self.position
        return self.head(self.norm(self.encoder(x).mean(1)))


# Standalone twin -------------------------------------------------------------------------------------------------
def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    linear.weight.data.copy_(weight)
    if bias is not None:
        linear.bias.data.copy_(bias)
    return linear


class _StaticLayer(nn.Module):
    def __init__(self, src: EncoderLayer, heads: int, ffn: int) -> None:
        super().__init__()
        a, f = src.attention, src.ffn
        w = heads * a.head_dim
        self.heads, self.head_dim = heads, a.head_dim
        self.norm1, self.norm2 = copy.deepcopy(src.norm1), copy.deepcopy(src.norm2)
        self.query = _linear(a.query.weight[:w], a.query.bias[:w])
        self.key = _linear(a.key.weight[:w], a.key.bias[:w])
        self.value = _linear(a.value.weight[:w], a.value.bias[:w])
        self.out = _linear(a.out.weight[:, :w], a.out.bias)
        self.fc1, self.fc2 = _linear(f.fc1.weight[:ffn], f.fc1.bias[:ffn]), _linear(f.fc2.weight[:, :ffn], f.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        h = self.norm1(x)
        shape = (batch, tokens, self.heads, self.head_dim)
        q, k, v = (proj(h).view(shape).transpose(1, 2) for proj in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, -1)
        x = x + self.out(y)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class StaticTransformer(nn.Module):
    """A plain transformer with exactly the layers and weights of one SubNet."""

    def __init__(self, supernet: ElasticTransformer, subnet: TransformerSubNet) -> None:
        super().__init__()
        self.tokenizer = copy.deepcopy(supernet.tokenizer)
        self.position = nn.Parameter(supernet.position.detach().clone())
        self.layers = nn.Sequential(*(_StaticLayer(supernet.layers[i], subnet.heads[i], subnet.ffn[i])
                                      for i in range(subnet.depth)))
        self.norm = copy.deepcopy(supernet.norm)
        self.head = _linear(supernet.head.weight, supernet.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokenizer(x).flatten(2).transpose(1, 2) + self.position
        return self.head(self.norm(self.layers(x).mean(1)))


@torch.no_grad()
def extract_transformer(supernet: ElasticTransformer, subnet: TransformerSubNet) -> StaticTransformer:
    """Copy ``subnet``'s sliced weights into a new network (the reference the in-place SuperNet is checked against)."""
    return StaticTransformer(supernet, subnet).eval()


def count_transformer_params(space: TransformerSpace, subnet: TransformerSubNet) -> int:
    """Parameters a SubNet uses, computed from its shapes."""
    d = space.dim
    total = space.in_channels * d * space.patch_size ** 2 + d + space.num_tokens * d
    for i in range(subnet.depth):
        w, n = subnet.heads[i] * space.head_dim, subnet.ffn[i]
        total += 4 * d + 3 * (d * w + w) + w * d + d + d * n + n + n * d + d
    return total + 2 * d + d * space.num_classes + space.num_classes


# The digits as 4x4 tokens of 7x7 patches: 1..6 layers, 1..8 heads of 12, 24..384 FFN neurons per layer.
MNIST_VIT = TransformerSpace(name="mnist_vit", in_channels=1, input_size=28, num_classes=10, patch_size=7, dim=96,
                             head_dim=12, depth_choices=(1, 2, 3, 4, 5, 6), head_choices=(1, 2, 4, 8),
                             ffn_choices=(24, 48, 96, 192, 384))
