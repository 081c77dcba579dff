"""Capacity planning (``make plan``): how many workers hold a load at 0.999 SLO attainment, and at what served
accuracy, by the SIMULATOR over the model's own profile (``simulate_router``: the live router, profiled
latencies plus the configured serving overheads). The question to answer before buying GPUs: profile the model
on the device it will serve on (``python -m superserve.build --device cuda:0``), then plan.

    .venv/bin/python -m superserve_bench.plan --rate 3500 --cv2 2 --slo-ms 50
    .venv/bin/python -m superserve_bench.plan --trace results/traces/azure.json --slo-ms 50
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


from .bench import load_setup
from .bench_faults import _simulated
from .repository import SERVED_MODELS
from .traces import Trace, bursty

__all__ = ["main", "plan"]


def plan(arrivals_s, profile: dict, config, slo_ms: float, target: float = 0.999,
         max_workers: int = 256) -> list[dict]:
    """Attainment and served accuracy for 1, 2, 4, ... workers until one holds ``target`` serving the most
    accurate SubNet (more workers buy nothing more), and the fewest that hold ``target`` (bisected): one row per
    count tried, in order of the count."""
    rows, tried = [], {}

    def run(workers: int) -> dict:
        if workers not in tried:
            records = _simulated(arrivals_s, profile, config, slo_ms, workers)
            served = [r.accuracy for r in records if r.outcome == "on_time"]
            tried[workers] = {"workers": workers,
                              "attainment": float(np.mean([r.outcome == "on_time" for r in records])),
                              "accuracy": float(np.mean(served)) if served else float("nan")}
            rows.append(tried[workers])
        return tried[workers]

    top = profile["subnets"][-1]["accuracy"]
    workers = 1
    while workers < max_workers and (run(workers)["attainment"] < target or run(workers)["accuracy"] < top - 1e-6):
        workers *= 2
    holding = [w for w, row in tried.items() if row["attainment"] >= target]
    if not holding:
        return sorted(rows, key=lambda r: r["workers"])
    hi = min(holding)
    lo = max([w for w in tried if w < hi], default=0)  # fails (or is none)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if run(mid)["attainment"] >= target else (mid, hi)
    return sorted(rows, key=lambda r: r["workers"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", type=Path, help="a trace file (superserve_bench.traces JSON); else --rate and --cv2")
    p.add_argument("--rate", type=float, default=1000.0, help="mean arrival rate, req/s")
    p.add_argument("--cv2", type=float, default=1.0, help="burstiness: squared coefficient of variation (1: Poisson)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the generated trace")
    p.add_argument("--slo-ms", type=float, default=None, help="default: the benchmarks' SLO for this model")
    p.add_argument("--target", type=float, default=0.999, help="SLO attainment to hold")
    p.add_argument("--model", default="superserve", choices=SERVED_MODELS, help="whose profile and config")
    p.add_argument("--out", type=Path, default=None, help="also write the plan here (Markdown)")
    args = p.parse_args(argv)
    profile_dict, config, slo_ms = load_setup(args.slo_ms, args.model)
    if args.trace:
        trace = Trace.load(args.trace)
    else:
        if not args.rate > 0 or not args.cv2 > 0:
            p.error("--rate and --cv2 must be > 0")
        trace = bursty(0.0, args.rate, args.cv2, args.seconds, seed=0)
    rows = plan(trace.arrivals_s, profile_dict, config, slo_ms, args.target)
    lines = [f"SIMULATED plan for {args.model} ({profile_dict.get('device', 'cpu')} profile): {trace.name}, "
             f"{trace.mean_rate:.0f} req/s mean over {trace.duration_s:.0f} s, SLO {slo_ms} ms, target {args.target}",
             "", "| workers | attainment | served accuracy |", "|---|---|---|"]
    lines += [f"| {row['workers']} | {row['attainment']:.4f} | {row['accuracy']:.4f} |" for row in rows]
    holding = [r for r in rows if r["attainment"] >= args.target]
    if holding:
        best = min(holding, key=lambda r: r["workers"])
        lines += ["", f"{best['workers']} worker(s) hold {args.target} attainment, serving {best['accuracy']:.2%} "
                      "mean accuracy (simulated)"]
    else:
        lines += ["", f"no worker count up to {rows[-1]['workers']} holds {args.target}: the SLO is too tight for "
                      "this model's fastest SubNet at this burstiness"]
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
