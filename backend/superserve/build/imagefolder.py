"""A user's own labelled images, from a local folder in the class-per-folder layout (``ROOT/<class>/<image>``).

What ``superserve.build.ofa`` builds a served ImageNet-style model from. Each image is decoded with Pillow, its
shorter side resized to ``resolution / 0.875`` and centre-cropped to ``resolution`` (ImageNet evaluation's
transform), scaled to [0, 1] and normalised with the ImageNet mean and std, channels first: exactly the tensor a
client sends the served model. A class's label is the checkpoint's output index for it: a folder named by an
ILSVRC-2012 synset (WordNet ID, e.g. ``n01440764``) gets that synset's position in the sorted list of the 1,000
ILSVRC-2012 synsets (OFA's and torchvision's convention, shipped in ``ilsvrc2012_wnids.txt``), so any subset of
ImageNet's classes is scored against the right outputs; folders with other names need a class list, whose line
numbers are the output indices.

Each class is split, seeded, into three parts with one job each: calibration (SubnetNorm statistics; labels
unused), validation (picks the served SubNets) and test (the accuracy reported; used for nothing else).

Images are decoded once and kept on disk, not in memory: each split is an ``ImageStore``, a file of the cropped
8-bit pixels (lossless: the crop is 8-bit before it is scaled; 150 kB per 224x224 image) in a temporary folder,
read and normalised a chunk at a time. The build's memory does not grow with the number of images.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

__all__ = ["ImageSplits", "ImageStore", "load_image_folder", "class_labels", "ilsvrc2012_wnids", "preprocess",
           "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_SUFFIXES"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
CROP_FRACTION = 0.875  # 224 of 256


class ImageStore:
    """Preprocessed images [N, 3, R, R] on disk: indexing reads those rows and returns them normalised as a float
    tensor, so the splits can be used where the build expects tensors (``len``, ``shape``, slices, index tensors,
    ``split``) while memory holds one chunk."""

    def __init__(self, path: Path, count: int, resolution: int, folder: object = None) -> None:
        """``folder``: what holds ``path`` (a TemporaryDirectory), kept alive as long as this store is."""
        self.path, self._count, self._resolution, self._folder = Path(path), count, resolution, folder
        self._row = 3 * resolution * resolution  # bytes per image (H x W x RGB, 8 bits)
        with open(self.path, "wb") as f:
            f.truncate(count * self._row)

    def __len__(self) -> int:
        return self._count

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self._count, 3, self._resolution, self._resolution))

    def write(self, index: int, pixels: np.ndarray) -> None:
        with open(self.path, "r+b") as f:
            f.seek(index * self._row)
            f.write(np.ascontiguousarray(pixels, np.uint8).tobytes())

    def _rows(self, start: int, stop: int) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(start * self._row)
            raw = f.read((stop - start) * self._row)
        return np.frombuffer(raw, np.uint8).reshape(stop - start, self._resolution, self._resolution, 3)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self[slice(index, index + 1)][0] if index >= 0 else self[self._count + index]
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            pixels = self._rows(start, max(start, stop))[::step]
        else:  # an index tensor or list: rows one at a time (a batch's worth)
            pixels = np.stack([self._rows(i, i + 1)[0] for i in np.asarray(index).tolist()])
        return torch.from_numpy(_normalise(pixels))

    def split(self, size: int):
        return (self[i:i + size] for i in range(0, self._count, size))


@dataclass(frozen=True)
class ImageSplits:
    """Preprocessed images [N, 3, R, R] (on disk) and labels per split (the fields ``superserve.build`` reads)."""

    calib_x: ImageStore
    val_x: ImageStore
    val_y: torch.Tensor
    test_x: ImageStore
    test_y: torch.Tensor
    files: dict[str, list[str]]  # split -> image paths relative to the root, in tensor order
    name: str  # what profile.json records as the data set
    classes: dict[str, int]  # class folder -> its label (the checkpoint's output index)

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


def _crop(path: Path, resolution: int) -> np.ndarray:
    """One image file -> uint8 [resolution, resolution, RGB]: ImageNet evaluation's resize and centre crop."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = resolution / CROP_FRACTION / min(image.size)
        size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
        image = image.resize(size, Image.BILINEAR)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        return np.asarray(image.crop((left, top, left + resolution, top + resolution)), np.uint8)


def _normalise(pixels: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W, RGB] -> float32 [..., 3, H, W], scaled to [0, 1] and normalised with ImageNet's mean and
    std."""
    x = (pixels.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(np.moveaxis(x.astype(np.float32), -1, -3))


def preprocess(path: Path, resolution: int) -> np.ndarray:
    """One image file -> float32 [3, resolution, resolution], normalised as ImageNet models expect."""
    return _normalise(_crop(path, resolution))


@functools.cache
def ilsvrc2012_wnids() -> tuple[str, ...]:
    """The 1,000 ILSVRC-2012 synsets, sorted: a synset's position is its class index in ImageNet checkpoints."""
    return tuple(Path(__file__).with_name("ilsvrc2012_wnids.txt").read_text().split())


def class_labels(names: list[str], classes: list[str] | None = None) -> dict[str, int]:
    """Folder name -> output index: the position in ``classes`` when given, else the ILSVRC-2012 index of a synset
    folder. Raises ValueError, saying what to do, for a folder that has neither."""
    if classes is not None:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise ValueError(f"class folders not in the class list: {unknown[:5]}")
        return {name: classes.index(name) for name in names}
    index = {wnid: i for i, wnid in enumerate(ilsvrc2012_wnids())}
    unknown = sorted(name for name in names if name not in index)
    if unknown:
        raise ValueError(f"class folders {unknown[:5]} are not ILSVRC-2012 synsets (WordNet IDs such as n01440764), "
                         "so their output indices are unknown: name the folders by synset, or give a class list "
                         "(--classes FILE: one folder name per line, line k for the checkpoint's output k)")
    return {name: index[name] for name in names}


def _class_folders(root: Path, classes: list[str] | None) -> list[tuple[int, Path]]:
    found = {p.name: p for p in root.iterdir() if p.is_dir()}
    if not found:
        raise ValueError(f"{root} has no class folders: expected {root}/<class>/<image> (one folder per class)")
    labels = class_labels(sorted(found), classes)
    return [(labels[name], found[name]) for name in sorted(found)]


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
    folders = _class_folders(root, classes)
    for label, folder in folders:
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
    workdir = tempfile.TemporaryDirectory(prefix="superserve-images-")  # removed with the last store
    tensors = {}
    for split, items in chosen.items():
        store = ImageStore(Path(workdir.name) / f"{split}.u8", len(items), resolution, workdir)
        for i, (path, _) in enumerate(items):
            store.write(i, _crop(path, resolution))
            bar.update(1)
        tensors[split] = (store, torch.tensor([label for _, label in items], dtype=torch.int64))
    bar.close()
    return ImageSplits(tensors["calibration"][0], *tensors["validation"], *tensors["test"],
                       {split: [str(p.relative_to(root)) for p, _ in items] for split, items in chosen.items()},
                       f"image folder {root.name} ({total} images, {resolution}x{resolution})",
                       {folder.name: label for label, folder in folders})
