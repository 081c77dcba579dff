"""Train a SuperNet with the sandwich rule and in-place distillation (OFA / BigNAS style).

Every step trains the largest SubNet on the labels, then the smallest and ``--random-subnets``
random SubNets on the largest one's soft predictions, accumulating one gradient.

With ``--teacher`` (a built model folder), a trained SuperNet's most accurate served SubNet is the teacher, as in
DynaBERT: the largest SubNet learns from the labels and the teacher's soft predictions, every other SubNet from
the teacher's. Transformers, which learn slowly from 3,500 images, need it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import load_digits
from ..supernet import SPACES, new_supernet
from ..supernet.artefacts import load_supernet, save_weights

__all__ = ["train_supernet", "augment", "main"]


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random small rotation, scale and shift per image (digits stay digits)."""
    n = images.shape[0]
    angle = (torch.rand(n, generator=generator) - 0.5) * math.radians(20)
    scale = 1 + (torch.rand(n, generator=generator) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * (4 / 14)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


def train_supernet(space_name: str = "mnist_resnet", epochs: int = 6, batch_size: int = 64, lr: float = 3e-3,
                   random_subnets: int = 2, seed: int = 0, progress: bool = True,
                   teacher: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.nn.Module, dict]:
    space = SPACES[space_name]
    torch.manual_seed(seed)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    data = load_digits(seed)
    net = new_supernet(space_name)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(data.train_x) / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    largest, smallest = space.largest(), space.smallest()
    log = {"space": space_name, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
           "random_subnets": random_subnets, "teacher": teacher is not None, "loss": []}
    start = time.perf_counter()
    net.train()
    bar = tqdm(total=total, desc="training SuperNet (sandwich rule)", unit="step", disable=not progress)
    for epoch in range(epochs):
        order = torch.randperm(len(data.train_x), generator=gen)
        running = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            x, y = augment(data.train_x[idx], gen), data.train_y[idx]
            opt.zero_grad(set_to_none=True)
            net.actuate(largest)
            logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=0.1)
            if teacher is None:
                loss.backward()
                soft = F.softmax(logits.detach(), dim=1)
            else:
                with torch.no_grad():
                    soft = F.softmax(teacher(x), dim=1)
                (0.5 * loss + 0.5 * F.cross_entropy(logits, soft)).backward()
            for subnet in [smallest] + [space.sample(rng) for _ in range(random_subnets)]:
                net.actuate(subnet)
                kd = F.cross_entropy(net(x), soft)
                kd.backward()
            opt.step()
            sched.step()
            running += loss.item()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        log["loss"].append(running / steps_per_epoch)
    bar.close()
    log["train_seconds"] = time.perf_counter() - start
    net.eval()
    net.actuate(largest)
    return net, log


def load_teacher(folder: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The most accurate served SubNet of a built model folder, as a function from images to logits."""
    net, profile = load_supernet(folder)
    plan = net.servable_plan(net.space.parse(profile["subnets"][-1]["config"]))

    def logits(images: torch.Tensor) -> torch.Tensor:
        net.actuate(plan)
        return net(images)

    return logits


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for supernet.pt and train_log.json")
    p.add_argument("--space", default="mnist_resnet", choices=sorted(SPACES))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--random-subnets", type=int, default=2, help="random SubNets per step besides the two extremes")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", type=Path, default=None,
                   help="a built model folder (e.g. model_repository/superserve/1): distil from its best SubNet")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    net, log = train_supernet(args.space, args.epochs, args.batch_size, args.lr, args.random_subnets, args.seed,
                              teacher=load_teacher(args.teacher) if args.teacher else None)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = save_weights(net, args.out)
    (args.out / "train_log.json").write_text(json.dumps(log, indent=2))
    print(f"trained {args.space} in {log['train_seconds']:.0f} s -> {weights}")


if __name__ == "__main__":
    main()
