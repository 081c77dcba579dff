"""Load and save SuperNet weights: our own files and OFA's published ``{"state_dict": ...}`` checkpoints.

Everything loads with ``torch.load(weights_only=True)``: a checkpoint file can hold tensors and
plain containers, never code.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .network import ElasticResNet

__all__ = ["map_ofa_key", "ofa_key", "load_ofa_state_dict", "load_ofa_checkpoint", "save_ofa_checkpoint"]

# OFA wraps each dynamic op around a plain layer, doubling names: ``conv.conv.weight``, ``bn.bn.running_mean``,
# ``linear.linear.bias``. Our operators *are* the layers, so one level goes.
_DOUBLED = re.compile(r"(^|\.)(conv|bn|linear)\.\2\.(\w+)$")
_SINGLE = re.compile(r"(^|\.)(conv|bn|linear)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def map_ofa_key(key: str) -> str:
    """Map an OFA ResNet state-dict key to ours (keys already in our form pass through)."""
    if key.startswith("module."):
        key = key[len("module."):]
    return _DOUBLED.sub(r"\1\2.\3", key)


def ofa_key(key: str) -> str:
    """Our state-dict key as OFA's dynamic layers name it (the inverse of ``map_ofa_key``)."""
    return _SINGLE.sub(r"\1\2.\2.\3", key)


def load_ofa_state_dict(net: ElasticResNet, state_dict: dict[str, torch.Tensor]) -> None:
    """Copy an OFA ResNet state dict into ``net``, checking that every key and shape matches."""
    own = net.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        new_key = map_ofa_key(key)
        if new_key not in own:
            unknown.append(key)
            continue
        if tuple(value.shape) != tuple(own[new_key].shape):
            raise ValueError(f"checkpoint key {key!r} has shape {tuple(value.shape)}, the SuperNet "
                             f"{net.space.name!r} expects {tuple(own[new_key].shape)} for {new_key!r}")
        mapped[new_key] = value
    if unknown:
        raise ValueError(f"{len(unknown)} checkpoint keys do not belong to an OFA ResNet of space "
                         f"{net.space.name!r}, e.g. {unknown[:3]}")
    missing = sorted(k for k in own if k not in mapped and not k.endswith("num_batches_tracked"))
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} keys of space {net.space.name!r}, e.g. {missing[:3]}")
    net.load_state_dict(mapped, strict=False)


def load_ofa_checkpoint(net: ElasticResNet, path: str | Path) -> None:
    """Load an OFA checkpoint file (``{"state_dict": ...}`` or a bare state dict) from a local path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no OFA checkpoint at {path}: download it yourself and pass its local path")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict (expected {{'state_dict': {{...}}}})")
    load_ofa_state_dict(net, state)


def save_ofa_checkpoint(net: ElasticResNet, path: str | Path) -> None:
    """Write ``net``'s weights as an OFA checkpoint file (``{"state_dict": ...}`` under OFA's key names)."""
    torch.save({"state_dict": {ofa_key(k): v for k, v in net.state_dict().items()}}, path)
