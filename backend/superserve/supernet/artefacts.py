"""Load a served SuperNet from a model version folder (its weights, SubnetNorm statistics and profile).

A version folder holds ``supernet.pt`` (shared weights and the name of their space, hence their family),
``subnet_norm.pt`` (per-SubNet BatchNorm statistics, for families that need them) and ``profile.json`` (the served
SubNets: accuracy, latency per batch size). ``make model`` writes them; the serving
model and the tools only read them (``torch.load(weights_only=True)``: tensors and plain containers, never code).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from torch import nn

from .families import family_of, new_supernet

__all__ = ["save_weights", "load_weights", "load_supernet"]


def save_weights(net: nn.Module, folder: Path) -> Path:
    """Write ``folder/supernet.pt``: the SuperNet's weights and the name of its space (``load_weights`` reads it).
    Written beside it and renamed over it, so a server that maps the old file keeps reading the old weights."""
    path = Path(folder) / "supernet.pt"
    partial = path.with_name(f".{path.name}.partial")
    torch.save({"space": net.space.name, "state_dict": net.state_dict()}, partial)
    os.replace(partial, path)
    return path


def load_weights(folder: Path, mapped: bool = False) -> nn.Module:
    """The SuperNet of ``supernet.pt``, built from the family its space names, with the stored weights.
    ``mapped``: the weights stay in the file's pages, mapped copy-on-write, so every process serving the same
    file shares one copy in memory (the workers of a router); the module's own tensors are replaced, not copied
    into."""
    path = Path(folder) / "supernet.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: build the model first (`make model`)")
    blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    try:
        net = new_supernet(blob.get("space"))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    net.load_state_dict(blob["state_dict"], assign=mapped)
    return net


def load_supernet(folder: Path, mapped: bool = False) -> tuple[nn.Module, dict]:
    """``supernet.pt``, ``subnet_norm.pt`` (if the family needs it) and ``profile.json`` of a model version folder
    (``mapped``: as ``load_weights``)."""
    folder = Path(folder)
    net = load_weights(folder, mapped)
    norm_statistics = family_of(net.space).norm_statistics
    for name in ["profile.json"] + (["subnet_norm.pt"] if norm_statistics else []):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: build the model first (`make model`)")
    if norm_statistics:
        net.load_subnet_norm_state(torch.load(folder / "subnet_norm.pt", map_location="cpu", weights_only=True))
    profile = json.loads((folder / "profile.json").read_text())
    return net.eval(), profile
