"""The registry of SuperNet families: what the build, the training loop, the artefacts and the server need of one.

A family is its search spaces (each names its SubNets and parses their descriptions), its SuperNet network, parameter
count, extraction to a standalone twin, and whether its SubNets need per-SubNet normalisation statistics
(SubnetNorm: BatchNorm families do, LayerNorm families do not). Everything outside ``supernet/`` reaches a
SuperNet through this registry and the network's own methods (``actuate``, ``plan_for``, ``inference_plan``,
``servable_plan``), so adding a family is one new module and one line in ``FAMILIES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from .extract import extract_subnet
from .network import ElasticResNet, count_params
from .space import MNIST_RESNET, OFA_RESNET50
from .transformer import MNIST_VIT, ElasticTransformer, count_transformer_params, extract_transformer

__all__ = ["Family", "FAMILIES", "SPACES", "family_of", "new_supernet"]


@dataclass(frozen=True)
class Family:
    name: str
    spaces: tuple[Any, ...]
    network: Callable[[Any], nn.Module]  # space -> SuperNet holding every SubNet
    count_params: Callable[[Any, Any], int]  # (space, SubNet) -> parameters it uses
    extract: Callable[[nn.Module, Any], nn.Module]  # (SuperNet, SubNet) -> standalone twin with copied weights
    norm_statistics: bool  # SubNets need calibrated SubnetNorm statistics before they are served


FAMILIES = {family.name: family for family in (
    Family("resnet", (OFA_RESNET50, MNIST_RESNET), ElasticResNet, count_params, extract_subnet, True),
    Family("transformer", (MNIST_VIT,), ElasticTransformer, count_transformer_params, extract_transformer, False),
)}

SPACES = {space.name: space for family in FAMILIES.values() for space in family.spaces}


def family_of(space: Any) -> Family:
    return FAMILIES[space.family]


def new_supernet(space_name: str) -> nn.Module:
    """A freshly initialised SuperNet of a registered space."""
    if space_name not in SPACES:
        raise ValueError(f"unknown SuperNet space {space_name!r}; known: {', '.join(sorted(SPACES))}")
    space = SPACES[space_name]
    return family_of(space).network(space)
