"""Requests for any served SuperNet, in the shape and preprocessing its ``profile.json`` records, so that every tool
(perf_analyzer, the replayer, the benchmarks) measures a user's own model with inputs it accepts.

- The shipped digit models: held-out MNIST digits.
- An image model (3xRxR, ImageNet-normalised, e.g. an imported OFA ResNet-50) given a folder of images: those
  images, preprocessed exactly as the build preprocessed its own (``superserve.build.imagefolder.preprocess``).
- Otherwise: seeded synthetic inputs in the model's shape, drawn from the normalised range (no NaN; perf_analyzer's
  own random FP32 data holds NaN bit patterns, which the server rightly refuses). Latency does not depend on the
  values; the accuracy a benchmark reports is the profile's, not measured on these.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

__all__ = ["model_inputs", "write_input_data", "describe_inputs"]

DIGITS_SHAPE = [1, 28, 28]


def _profile(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / "1" / "profile.json").read_text())


def _digits(profile: dict) -> bool:
    """A model built on the digits (the shipped ones)."""
    return list(profile["input_shape"]) == DIGITS_SHAPE and "mnist" in profile.get("dataset", "")


def model_inputs(model_dir: Path, count: int = 64, images: Path | None = None, seed: int = 0) -> np.ndarray:
    """``count`` inputs [count, *input_shape] FP32 for the model in ``model_dir`` (fewer when ``images`` holds
    fewer image files)."""
    profile = _profile(model_dir)
    shape = list(profile["input_shape"])
    if images is not None:
        from superserve.build.imagefolder import IMAGE_SUFFIXES, preprocess

        if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2]:
            raise ValueError(f"--images needs a model of 3xRxR images; {Path(model_dir).name} takes {shape}")
        files = sorted(p for p in Path(images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
        if not files:
            raise ValueError(f"no image files under {images} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        return np.stack([preprocess(p, shape[1]) for p in files])
    if _digits(profile):
        from superserve.build.data import load_digits

        return load_digits().test_x[:count].numpy()
    return np.random.default_rng(seed).standard_normal((count, *shape)).clip(-2.0, 2.0).astype(np.float32)


def describe_inputs(model_dir: Path, images: Path | None = None) -> str:
    """One line for a report: what the requests carried."""
    profile = _profile(model_dir)
    if images is not None:
        return f"images from {images}, preprocessed as profile.json says"
    if _digits(profile):
        return "held-out MNIST digits"
    return f"synthetic inputs of shape {profile['input_shape']} (seeded, normalised range)"


def write_input_data(path: Path, inputs: np.ndarray) -> Path:
    """``inputs`` as perf_analyzer ``--input-data`` JSON, one request per input, the bytes base64-encoded (exact,
    and compact at image sizes)."""
    data = [{"INPUT": {"b64": base64.b64encode(np.ascontiguousarray(x, np.float32).tobytes()).decode(),
                       "shape": list(x.shape)}} for x in inputs]
    Path(path).write_text(json.dumps({"data": data}))
    return Path(path)
