"""Load a served SuperNet from a model version folder, and check it against the Triton model config.

A version folder holds ``supernet.pt`` (shared weights and the name of their space, hence their family),
``subnet_norm.pt`` (per-SubNet BatchNorm statistics, for families that need them) and ``profile.json`` (the served
SubNets: accuracy, latency per batch size). ``make model`` writes them; the serving
model and the tools only read them (``torch.load(weights_only=True)``: tensors and plain containers, never code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from torch import nn

from .families import family_of, new_supernet

__all__ = ["load_weights", "load_supernet", "load_served_supernet", "check_model_config"]


def load_weights(folder: Path) -> nn.Module:
    """The SuperNet of ``supernet.pt``, built from the family its space names, with the stored weights."""
    path = Path(folder) / "supernet.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: build the model first (`make model`)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    try:
        net = new_supernet(blob.get("space"))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    net.load_state_dict(blob["state_dict"])
    return net


def load_supernet(folder: Path) -> tuple[nn.Module, dict]:
    """``supernet.pt``, ``subnet_norm.pt`` (if the family needs it) and ``profile.json`` of a model version folder."""
    folder = Path(folder)
    net = load_weights(folder)
    norm_statistics = family_of(net.space).norm_statistics
    for name in ["profile.json"] + (["subnet_norm.pt"] if norm_statistics else []):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: build the model first (`make model`)")
    if norm_statistics:
        net.load_subnet_norm_state(torch.load(folder / "subnet_norm.pt", map_location="cpu", weights_only=True))
    profile = json.loads((folder / "profile.json").read_text())
    return net.eval(), profile


def check_model_config(model_config: Mapping[str, Any], profile: Mapping[str, Any]) -> None:
    """The Triton model config (JSON form, as ``execute`` sees it) must match the artefacts: input dims, outputs
    and a hand-over that holds at least one largest request. Raises ValueError naming the mismatch."""
    inputs = {i["name"]: i for i in model_config.get("input", [])}
    if "INPUT" not in inputs:
        raise ValueError("config.pbtxt needs an input named INPUT")
    dims = [int(d) for d in inputs["INPUT"].get("dims", [])]
    if dims != [int(d) for d in profile["input_shape"]]:
        raise ValueError(f"config.pbtxt input INPUT has dims {dims}, the SuperNet takes {profile['input_shape']}")
    outputs = {o["name"]: o for o in model_config.get("output", [])}
    logits = [int(d) for d in outputs.get("LOGITS", {}).get("dims", [])]
    if logits != [int(profile["num_classes"])]:
        raise ValueError(f"config.pbtxt output LOGITS has dims {logits}, the SuperNet has "
                         f"{profile['num_classes']} classes")
    handover, largest = int(model_config.get("max_batch_size", 0)), int(profile["max_batch_size"])
    if handover < largest:
        raise ValueError(f"config.pbtxt max_batch_size {handover} is below the SuperNet's largest batch "
                         f"{largest} (profile.json max_batch_size): Triton would refuse valid requests")


def load_served_supernet(folder: Path, model_config: Mapping[str, Any]) -> tuple[nn.Module, dict]:
    """``load_supernet``, checked against the model config that serves it."""
    net, profile = load_supernet(folder)
    if profile.get("space") != net.space.name:
        raise ValueError(f"profile.json is for SuperNet {profile.get('space')!r}, supernet.pt holds "
                         f"{net.space.name!r}: rebuild the model (`make model`)")
    check_model_config(model_config, profile)
    return net, profile
