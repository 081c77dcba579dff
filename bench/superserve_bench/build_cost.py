"""What building your own OFA ResNet-50 costs on this machine (``make build-cost``): wall time per phase and peak
memory of ``superserve.build.ofa``, for a few image counts and profiling modes.

The inputs are made here, so that anyone can run it without downloads: a checkpoint in OFA's format with seeded
random weights (so every accuracy is 0 and the build warns, rightly), 8 given SubNets (the smallest, the largest
and 6 sampled: all 8 are served) and 10 synset folders of seeded 400x300 JPEGs. Each build runs in its own
process; its phases and peak memory are the ones it records in its ``profile.json``.

    .venv/bin/python -m superserve_bench.build_cost --images 100 --profiling quick --out results/build_cost
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from superserve.runtime.tritonenv import REPO_ROOT
from superserve.serving.config import read_model_config

__all__ = ["main", "random_checkpoint"]

CLASSES = 10
SUBNETS = 8
PHASES = ("reading", "calibrating", "validating", "ranking", "profiling latency", "test accuracy")


def random_checkpoint(path: Path) -> Path:
    """An OFA ResNet-50 checkpoint in OFA's format (OFA's key names) with seeded random weights and non-trivial
    BatchNorm statistics, as a trained checkpoint has."""
    import torch

    from superserve.supernet import OFA_RESNET50, ElasticResNet
    from superserve.supernet.checkpoint import save_ofa_checkpoint

    torch.manual_seed(0)
    net = ElasticResNet(OFA_RESNET50)
    for m in net.norm_layers().values():
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
    save_ofa_checkpoint(net, path)
    return path


def make_inputs(work: Path, images_per_class: int) -> tuple[Path, Path, Path]:
    """The random checkpoint, the SubNet list and the image folder (reused when already made)."""
    from PIL import Image

    from superserve.build.imagefolder import ilsvrc2012_wnids
    from superserve.supernet import OFA_RESNET50

    work.mkdir(parents=True, exist_ok=True)
    checkpoint, subnets, images = work / "ofa_resnet50_random.pth", work / "subnets.json", work / "images"
    if not checkpoint.is_file():
        random_checkpoint(checkpoint)
    rng = random.Random(0)
    space = OFA_RESNET50
    chosen = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(SUBNETS - 2)]
    subnets.write_text(json.dumps([s.to_ofa() for s in chosen]))
    pixels = np.random.default_rng(0)
    for name in ilsvrc2012_wnids()[:CLASSES]:
        folder = images / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            path = folder / f"{i}.jpg"
            if not path.is_file():
                Image.fromarray(pixels.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path, quality=90)
    return checkpoint, subnets, images


def measure(work: Path, checkpoint: Path, subnets: Path, images: Path, count: int, profiling: str,
            resolution: int) -> dict:
    """One build of ``count`` images in its own process: its wall time, and the phases and peak memory it
    recorded."""
    out = work / f"built_{count}_{profiling}" / "ofa_random"
    command = [sys.executable, "-m", "superserve.build.ofa", "--checkpoint", str(checkpoint), "--images",
               str(images), "--out", str(out), "--resolution", str(resolution), "--subnets", str(subnets),
               "--per-class", str(count // CLASSES), "--profiling", profiling]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall_s = time.perf_counter() - start
    profile = json.loads((out / "1" / "profile.json").read_text())
    config = read_model_config(out / "config.pbtxt")
    return {"images": count, "profiling": profiling, "resolution": resolution, "wall_s": round(wall_s, 1),
            "latency_ms": {sub["id"]: sub["latency_ms"] for sub in profile["subnets"]},
            "seconds": profile["build"]["seconds"], "peak_memory_mb": profile["build"]["peak_memory_mb"],
            "served": len(profile["subnets"]),
            "default_slo_ms": float(config.parameters["default_slo_ms"].string_value),
            "largest_batch_ms": profile["subnets"][-1]["latency_ms"][str(profile["max_batch_size"])]}


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def markdown(rows: list[dict]) -> str:
    lines = ["`make build-cost`: `superserve.build.ofa` on a random OFA ResNet-50 checkpoint, 8 given SubNets, "
             "10 synset folders of 400x300 JPEGs; wall time of each phase and peak resident memory as the build "
             "records them in its profile.json; total: the build process's wall time (Python and torch start-up, weights "
             "written, included).", "",
             "| images | profiling | resolution | " + " | ".join(PHASES) + " | total | peak memory |",
             "|---|---|---|" + "---|" * len(PHASES) + "---|---|"]
    for row in rows:
        phases = " | ".join(_duration(row["seconds"].get(p, 0.0)) for p in PHASES)
        lines.append(f"| {row['images']:,} | {row['profiling']} | {row['resolution']} | {phases} | "
                     f"{_duration(row['wall_s'])} | {row['peak_memory_mb'] / 1024:.2f} GB |")
    lines.append("")
    for row in rows:
        lines.append(f"- {row['images']:,} images, {row['profiling']}: the most accurate SubNet takes "
                     f"{row['largest_batch_ms']:.0f} ms at the largest batch, so the SLO derived for the model is "
                     f"{row['default_slo_ms']:,.0f} ms")
    for quick in (r for r in rows if r["profiling"] == "quick"):
        for full in (r for r in rows if r["profiling"] == "full" and r["images"] == quick["images"]):
            lines.append(f"- {quick['images']:,} images, quick against full profile: " + _agreement(quick, full))
    return "\n".join(lines) + "\n"


def _agreement(quick: dict, full: dict) -> str:
    """How far the quick profile's latencies are from the full one's, at the batch sizes both timed and at the
    ones the quick profile interpolated."""
    from superserve.build.pipeline import profiled_batches

    largest = max(int(b) for curve in quick["latency_ms"].values() for b in curve)
    timed = {str(b) for b in profiled_batches(largest, "quick")}
    gaps: dict[bool, list[float]] = {True: [], False: []}
    for subnet, curve in quick["latency_ms"].items():
        for batch, ms in curve.items():
            reference = full["latency_ms"].get(subnet, {}).get(batch)
            if reference:
                gaps[batch in timed].append(abs(ms - reference) / reference * 100)
    return "; ".join(f"at the {len(g)} (SubNet, batch) {'timed by both' if both else 'it interpolated'}: median "
                     f"{np.median(g):.1f}%, largest {max(g):.1f}% apart" for both, g in gaps.items() if g)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "build_cost")
    p.add_argument("--images", type=int, nargs="+", default=[100], help="image counts, each a multiple of 10")
    p.add_argument("--profiling", nargs="+", default=["quick"], choices=["full", "quick"],
                   help="latency profiling modes (full: every batch size, 7 passes; quick: 5 sizes, 3 passes)")
    p.add_argument("--resolution", type=int, default=224)
    args = p.parse_args(argv)
    if any(n < 3 * CLASSES or n % CLASSES for n in args.images):
        p.error(f"--images: multiples of {CLASSES}, at least {3 * CLASSES} (each class needs calibration, "
                "validation and test images)")
    work = args.out / "work"
    checkpoint, subnets, images = make_inputs(work, max(args.images) // CLASSES)
    rows = []
    for count in args.images:
        for profiling in args.profiling:
            print(f"building on {count} images, {profiling} profile ...", flush=True)
            rows.append(measure(work, checkpoint, subnets, images, count, profiling, args.resolution))
            print(f"  {_duration(rows[-1]['wall_s'])}, peak {rows[-1]['peak_memory_mb']:.0f} MB", flush=True)
            (args.out / "build_cost.json").write_text(json.dumps(rows, indent=1))  # kept if a later build fails
    (args.out / "build_cost.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
