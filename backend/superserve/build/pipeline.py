"""Build a SuperNet's serving artefacts: calibrate SubnetNorm, pick the Pareto SubNets, profile.

``python -m superserve.build --out model_repository/superserve/1`` reads the trained ``supernet.pt`` (of any
family) and, on the digits (or, from ``superserve.build.ofa``, on the user's own images), writes beside it
``subnet_norm.pt`` (per-SubNet BatchNorm statistics of the served SubNets, for families with BatchNorm) and
``profile.json`` (the served SubNets with accuracy, parameters and latency per batch size, measured on
``--device``). SubNets are chosen on the validation split; the accuracy reported is measured on the test split,
which took no part in training, calibration or selection.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from .data import load_digits
from .profiling import accuracy, latency_curve_ms, latency_ms
from .selection import pareto_front
from ..supernet import family_of
from ..supernet.artefacts import load_weights

__all__ = ["build", "main", "suggested_slo_ms", "timed", "peak_memory_mb", "PROFILE_FORMAT"]

PROFILE_FORMAT = 1
MAX_BATCH = 16
SLO_ALLOWANCE_PER_SAMPLE_MS = 0.3  # serving path per sample, on top of the forward pass
PROFILING_MODES = ("full", "quick", "auto")
QUICK_REPEATS = 3
WARMUP_PASSES = 2  # latency_curve_ms' warm-ups
AUTO_FULL_BUDGET_S = 15 * 60  # auto: the full profile when its estimate is within this, else the quick one


def profiled_batches(max_batch: int, mode: str) -> list[int]:
    """Batch sizes timed: every one (full), or the powers of two and the largest (quick)."""
    if mode == "full":
        return list(range(1, max_batch + 1))
    return sorted({2 ** k for k in range(max_batch.bit_length()) if 2 ** k <= max_batch} | {max_batch})


def fill_batches(measured: dict[int, float], max_batch: int) -> dict[str, float]:
    """Latency at every batch size 1..max_batch from the measured ones: linear between the nearest measured
    sizes on either side (measured sizes keep their value)."""
    sizes = sorted(measured)
    filled = {}
    for b in range(1, max_batch + 1):
        upper = next(s for s in sizes if s >= b)
        lower = max((s for s in sizes if s <= b), default=upper)
        if upper == lower:  # b itself was timed
            filled[str(b)] = round(measured[b], 4)
        else:
            t = (b - lower) / (upper - lower)
            filled[str(b)] = round(measured[lower] + t * (measured[upper] - measured[lower]), 4)
    return filled


def profiling_estimate_s(middle_ms: dict[str, float], middle_batch: int, batches: list[int], repeats: int) -> float:
    """Seconds the latency profile will take: each SubNet's quick latency at ``middle_batch`` scaled linearly to
    the timed batch sizes, times the passes (warm-ups and repeats)."""
    per_sample_s = sum(middle_ms.values()) / middle_batch / 1e3
    return per_sample_s * sum(batches) * (repeats + WARMUP_PASSES)


def suggested_slo_ms(profile: dict, margin_ms: float) -> float:
    """An SLO the served range fits: twice the most accurate SubNet's latency at the largest batch, plus 0.3 ms of
    serving per sample and the model's margin. The benchmarks' SLO, and a built model's default when its user
    gives none."""
    b = profile["max_batch_size"]
    return round(2 * (profile["subnets"][-1]["latency_ms"][str(b)] + b * SLO_ALLOWANCE_PER_SAMPLE_MS + margin_ms), 1)


@contextmanager
def timed(seconds: dict, phase: str):
    """Add the wall time of the block to ``seconds[phase]``: what each phase of a build cost, kept in its profile."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[phase] = round(seconds.get(phase, 0.0) + time.perf_counter() - start, 2)


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def build(out: Path, candidates: int = 100, repeats: int = 7, threads: int = 1, seed: int = 0,
          min_front: int = 10, progress: bool = True, data=None, subnets: list | None = None,
          max_batch: int = MAX_BATCH, device: str = "cpu", profiling: str = "full",
          seconds: dict | None = None) -> dict:
    """``data``: splits with calibration, validation and test images (default: the digits); ``subnets``: the
    candidate SubNets (default: the largest, the smallest and ``candidates`` sampled ones); ``device``: where
    the SuperNet is calibrated, validated and profiled (serve it on the same). ``profiling``: full (every batch
    size, ``repeats`` passes), quick (powers of two and the largest, 3 passes, the rest interpolated) or auto (full
    when its estimate is within 15 minutes, else quick). ``seconds``: the wall time of phases the caller ran
    before (reading images), recorded beside the build's own in the profile's ``build``."""
    seconds = dict(seconds or {})
    if profiling not in PROFILING_MODES:
        raise ValueError(f"profiling must be one of {', '.join(PROFILING_MODES)}, not {profiling!r}")
    out = Path(out)
    device = torch.device(device)
    net = load_weights(out).to(device).eval()
    space, family = net.space, family_of(net.space)
    data = data if data is not None else load_digits(seed)
    rng = random.Random(seed)
    per_image = data.val_x[0].numel()
    chunk = max(1, min(500, 2 ** 22 // per_image))  # images per forward pass: bounded memory at any resolution
    batch_of = lambda b: data.val_x[torch.arange(b) % len(data.val_x)]  # noqa: E731 (any b, however few images)

    # 1. Validation accuracy of the candidates, with their own SubnetNorm statistics.
    if subnets is None:
        subnets = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(candidates)]
    subnets = list({s.id: s for s in subnets}.values())
    stats, acc = {}, {}
    if family.norm_statistics:
        with timed(seconds, "calibrating"):
            for subnet in tqdm(subnets, desc="calibrating SubNets", unit="subnet", disable=not progress):
                stats[subnet.id] = net.calibrate(subnet, (c.to(device) for c in data.calib_x.split(chunk)))
            net.set_subnet_norm(stats)
    with timed(seconds, "validating"):
        for subnet in tqdm(subnets, desc="validating SubNets", unit="subnet", disable=not progress):
            acc[subnet.id] = accuracy(net, net.plan_for(subnet), data.val_x, data.val_y, chunk)

    # 2. A quick latency at a middle batch size ranks the candidates; the Pareto front is kept.
    torch.set_num_threads(threads)
    middle = max(1, max_batch // 2)
    example = batch_of(middle)
    with timed(seconds, "ranking"):
        quick = {s.id: latency_ms(net, example, repeats=3, plan=net.inference_plan(s))
                 for s in tqdm(subnets, desc="ranking SubNet latency", unit="subnet", disable=not progress)}
    remaining = list(subnets)
    served = []
    while remaining and len(served) < min_front:  # peel fronts until enough SubNets are served
        front = pareto_front([(quick[s.id], acc[s.id]) for s in remaining])
        served += [remaining[i] for i in front]
        remaining = [s for i, s in enumerate(remaining) if i not in set(front)]
    smallest = space.smallest()
    if smallest.id in acc and smallest not in served:  # it runs the least compute of all: the overload fallback,
        served.append(smallest)  # whatever a noisy sub-ms timing said
    served.sort(key=lambda s: (acc[s.id], -quick[s.id]))

    # 3. Latency profile of the served SubNets at every batch size; their accuracy on the test split, and
    # with the full-width statistics sliced instead of their own (what SubnetNorm is for).
    served_middle = {s.id: quick[s.id] for s in served}
    full_s = profiling_estimate_s(served_middle, middle, profiled_batches(max_batch, "full"), repeats)
    mode = profiling if profiling != "auto" else ("full" if full_s <= AUTO_FULL_BUDGET_S else "quick")
    batches, passes = profiled_batches(max_batch, mode), repeats if mode == "full" else min(repeats, QUICK_REPEATS)
    if progress:
        estimate = profiling_estimate_s(served_middle, middle, batches, passes)
        tqdm.write(f"{mode} latency profile of {len(served)} SubNets at batch sizes {batches[0]}..{batches[-1]} "
                   f"({len(batches)} timed, {passes} passes each): about {estimate / 60:.1f} min"
                   + (f" (the full one: about {full_s / 60:.1f} min)" if mode != "full" else ""))
    latencies, test_acc, sliced_acc = {}, {}, {}
    for subnet in tqdm(served, desc=f"profiling {len(served)} SubNets", unit="subnet", disable=not progress):
        plan = net.inference_plan(subnet)
        with timed(seconds, "profiling latency"):
            curve = latency_curve_ms(net, [batch_of(b) for b in batches], passes, plan=plan)
        latencies[subnet.id] = fill_batches(dict(zip(batches, curve)), max_batch)
        with timed(seconds, "test accuracy"):
            test_acc[subnet.id] = accuracy(net, plan, data.test_x, data.test_y, chunk)
            if family.norm_statistics:
                sliced_acc[subnet.id] = accuracy(net, net.sliced_statistics_plan(subnet), data.test_x,
                                                 data.test_y, chunk)

    profile = {
        "format": PROFILE_FORMAT,
        "family": family.name,
        "space": space.name,
        "dataset": data.name,
        "splits": data.describe(),
        "accuracy_split": "test",
        "selection_split": "validation",
        "input_shape": list(data.val_x.shape[1:]),
        "input_spec": data.input_spec(),
        "num_classes": space.num_classes,
        "max_batch_size": max_batch,
        "device": str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})",
        "cpu": platform.processor() or platform.machine(),
        "threads": threads,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "latency_statistic": f"median of {passes} forward passes after {WARMUP_PASSES} warm-ups, the batch sizes "
                             "taken in turn",
        "latency_profiling": {"mode": mode, "timed_batches": batches,
                              "others": "linear between the nearest timed batch sizes" if mode == "quick" else None},
        "candidates_evaluated": len(subnets),
        "build": {"seconds": seconds, "peak_memory_mb": peak_memory_mb()},
        "weights_bytes": sum(t.numel() * t.element_size() for t in net.state_dict().values()),
        "subnets": [
            {"id": s.id, "config": s.to_dict(), "accuracy": test_acc[s.id], "validation_accuracy": acc[s.id],
             "params": family.count_params(space, s), "latency_ms": latencies[s.id]}
            for s in served
        ],
    }
    if family.norm_statistics:
        # 4. Only the served SubNets' statistics are kept.
        net.set_subnet_norm({s.id: stats[s.id] for s in served})
        torch.save(net.cpu().subnet_norm_state(), out / "subnet_norm.pt")
        stats_bytes = sum(t.numel() * t.element_size() for t in net.subnet_norm_state()["layers"].values())
        profile["subnet_norm"] = {
            "served_mean_accuracy": sum(test_acc[s.id] for s in served) / len(served),
            "served_mean_accuracy_sliced_stats": sum(sliced_acc[s.id] for s in served) / len(served),
            "weights_bytes": profile["weights_bytes"],
            "statistics_bytes_per_subnet": stats_bytes // max(1, len(served)),
        }
        for entry in profile["subnets"]:
            entry["accuracy_sliced_stats"] = sliced_acc[entry["id"]]
    (out / "profile.json").write_text(json.dumps(profile, indent=1))
    return profile


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m superserve.build", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="model version folder holding supernet.pt")
    p.add_argument("--candidates", type=int, default=100, help="random SubNets evaluated besides the extremes")
    p.add_argument("--repeats", type=int, default=7, help="timed forward passes per (SubNet, batch size)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while profiling; serve with the same")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, or cuda:<k>: where the model will be served")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    profile = build(args.out, args.candidates, args.repeats, args.threads, args.seed, device=args.device)
    subnets = profile["subnets"]
    accuracies = [s["accuracy"] for s in subnets]
    full = [s["latency_ms"][str(profile["max_batch_size"])] for s in subnets]
    print(f"{len(subnets)} SubNets served, test accuracy {min(accuracies):.3f}..{max(accuracies):.3f}, "
          f"batch-{profile['max_batch_size']} latency {min(full):.2f}..{max(full):.2f} ms "
          f"({max(full) / min(full):.1f}x) -> {args.out / 'profile.json'}")


if __name__ == "__main__":
    main()
