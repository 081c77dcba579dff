"""A user's own labelled images, from a local folder in the class-per-folder layout (``ROOT/<class>/<image>``).

What ``superserve.build_ofa`` builds a served ImageNet-style model from. Each image is decoded with Pillow, its
shorter side resized to ``resolution / 0.875`` and centre-cropped to ``resolution`` (ImageNet evaluation's
transform), scaled to [0, 1] and normalised with the ImageNet mean and std, channels first: exactly the tensor a
client sends the served model. Classes are numbered in sorted folder-name order (ImageNet's synset folders then
get OFA's class indices), or in the order of a class list the user gives.

Each class is split, seeded, into three parts with one job each: calibration (SubnetNorm statistics; labels
unused), validation (picks the served SubNets) and test (the accuracy reported; used for nothing else).
Everything is held in memory: 3x224x224 images take 600 kB each.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

__all__ = ["ImageSplits", "load_image_folder", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_SUFFIXES"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
CROP_FRACTION = 0.875  # 224 of 256


@dataclass(frozen=True)
class ImageSplits:
    """Preprocessed images [N, 3, R, R] and labels per split (the fields ``superserve.build`` reads)."""

    calib_x: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    files: dict[str, list[str]]  # split -> image paths relative to the root, in tensor order
    name: str  # what profile.json records as the data set

    def input_spec(self) -> dict:
        """What a client sends (``profile.json`` records it)."""
        resolution = int(self.test_x.shape[-1])
        return {"name": "INPUT", "dtype": "FP32", "shape": list(self.test_x.shape[1:]), "layout": "RGB, channels first",
                "preprocessing": f"shorter side resized to {round(resolution / CROP_FRACTION)}, centre crop "
                                 f"{resolution}x{resolution}, scaled to [0, 1], then (x - mean) / std",
                "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}

    def describe(self) -> dict:
        roles = {"calibration": "SubnetNorm statistics (labels unused)",
                 "validation": "picks the served SubNets (Pareto front)",
                 "test": "the reported accuracy; used for nothing else"}
        return {split: {"size": len(files), "role": roles[split],
                        "files_sha256": hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()[:16]}
                for split, files in self.files.items()}


def preprocess(path: Path, resolution: int) -> np.ndarray:
    """One image file -> float32 [3, resolution, resolution], normalised as ImageNet models expect."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = resolution / CROP_FRACTION / min(image.size)
        size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
        image = image.resize(size, Image.BILINEAR)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        pixels = np.asarray(image.crop((left, top, left + resolution, top + resolution)), np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32).transpose(2, 0, 1)


def _class_folders(root: Path, classes: list[str] | None) -> list[tuple[int, Path]]:
    found = {p.name: p for p in root.iterdir() if p.is_dir()}
    if not found:
        raise ValueError(f"{root} has no class folders: expected {root}/<class>/<image> (one folder per class)")
    if classes is None:
        return list(enumerate(found[name] for name in sorted(found)))
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{root} has folders not in the class list: {unknown[:5]}")
    return [(classes.index(name), folder) for name, folder in sorted(found.items())]


def load_image_folder(root: Path, resolution: int, calibration: float = 0.2, validation: float = 0.3,
                      per_class: int | None = None, classes: list[str] | None = None, seed: int = 0,
                      progress: bool = True) -> ImageSplits:
    """Split every class of ``root`` into calibration, validation and test (the rest) by the given fractions;
    ``per_class`` caps the images read per class."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}")
    if not (0 < calibration and 0 < validation and calibration + validation < 1):
        raise ValueError("calibration and validation are fractions of each class that leave some for test")
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[tuple[Path, int]]] = {"calibration": [], "validation": [], "test": []}
    for label, folder in _class_folders(root, classes):
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        images = [images[i] for i in rng.permutation(len(images))][:per_class]
        n_calib, n_val = round(calibration * len(images)), round(validation * len(images))
        if min(n_calib, n_val, len(images) - n_calib - n_val) < 1:
            raise ValueError(f"class folder {folder} has {len(images)} images: too few for calibration, "
                             "validation and test (each needs at least one)")
        chosen["calibration"] += [(p, label) for p in images[:n_calib]]
        chosen["validation"] += [(p, label) for p in images[n_calib:n_calib + n_val]]
        chosen["test"] += [(p, label) for p in images[n_calib + n_val:]]
    total = sum(len(v) for v in chosen.values())
    bar = tqdm(total=total, desc=f"reading images at {resolution}x{resolution}", unit="image", disable=not progress)
    tensors = {}
    for split, items in chosen.items():
        x = np.empty((len(items), 3, resolution, resolution), np.float32)
        for i, (path, _) in enumerate(items):
            x[i] = preprocess(path, resolution)
            bar.update(1)
        tensors[split] = (torch.from_numpy(x), torch.tensor([label for _, label in items], dtype=torch.int64))
    bar.close()
    return ImageSplits(tensors["calibration"][0], *tensors["validation"], *tensors["test"],
                       {split: [str(p.relative_to(root)) for p, _ in items] for split, items in chosen.items()},
                       f"image folder {root.name} ({total} images, {resolution}x{resolution})")
