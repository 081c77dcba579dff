"""The contract between a served SuperNet and Triton: what its ``config.pbtxt`` must declare for its artefacts.

Checked when a model loads, so that a mismatch is one clear error at start-up, not a wrong answer per request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn

from ..supernet.artefacts import load_supernet

__all__ = ["OPTIONAL_OUTPUTS", "check_model_config", "load_served_supernet"]

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
