"""Load a served SuperNet from a model version folder, and check it against the Triton model config.

A version folder holds ``supernet.pt`` (shared weights and the name of their space, hence their family),
``subnet_norm.pt`` (per-SubNet BatchNorm statistics, for families that need them) and ``profile.json`` (the served
SubNets: accuracy, latency per batch size). ``make model`` writes them; the serving
model and the tools only read them (``torch.load(weights_only=True)``: tensors and plain containers, never code).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from torch import nn

from .families import family_of, new_supernet

__all__ = ["save_weights", "load_weights", "load_supernet", "load_served_supernet", "check_model_config"]


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


# outputs a deployment may leave out of config.pbtxt (then they are never made): which SubNet served, its accuracy
OPTIONAL_OUTPUTS = {"SUBNET": ("TYPE_INT32", [1]), "ACCURACY": ("TYPE_FP32", [1])}


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
    if "LOGITS" not in outputs:
        raise ValueError("config.pbtxt needs an output named LOGITS")
    expected = {"LOGITS": ("TYPE_FP32", [int(profile["num_classes"])]), **OPTIONAL_OUTPUTS}
    for name, output in outputs.items():
        if name not in expected:
            raise ValueError(f"config.pbtxt output {name!r} is not one the model makes: LOGITS, and optionally "
                             f"{' and '.join(OPTIONAL_OUTPUTS)}")
        declared = (output.get("data_type"), [int(d) for d in output.get("dims", [])])
        if declared != expected[name]:
            raise ValueError(f"config.pbtxt output {name} is {declared[0]} {declared[1]}; the model makes "
                             f"{expected[name][0]} {expected[name][1]}")
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
