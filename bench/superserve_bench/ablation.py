"""SlackFit-LA's rules, each switched off in turn, on the held-out traces, by the SIMULATOR (``make ablation``).

Every rule of SlackFit-LA is a setting (docs/configuration.md): ``rules_off`` switches off the ones that have no
value, and the utilization cap, the burst memory and the latency safety have values that turn them off. This replays
each held-out trace (``bench.held_out_traces``: no default was chosen on them) through the simulator, with the
model's shipped settings on one worker (as the single-worker benchmarks run it; ``--workers`` for more) and the
configured serving overheads over its profile, loads set against the most accurate SubNet's capacity there, with the
shipped settings
and with each rule off, several seeds a trace, and reports what switching each rule off costs in attainment and in
served accuracy, pooled over the seeds. Simulated: the learned overheads and slowdown and Triton's own costs are not
in it, so a rule whose worth is there (the latency safety against slow spells) shows less than it buys live; the
live counterpart is ``make bench BENCH_ARGS="--held-out --variant 'no-guard:rules_off=burst_guard'"``.

    .venv/bin/python -m superserve_bench.ablation --model superserve --seeds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from superserve.build.pipeline import suggested_slo_ms
from superserve.scheduler import Profile
from superserve.scheduler.policies import LA_RULES
from superserve.serving.config import ServingConfig, read_model_config
from superserve.serving.simulator import simulate_model

from .bench import HELD_OUT_SEED, LEAD_IN_S, held_out_traces, load_setup
from .repository import model_dir

__all__ = ["main", "ablation"]

# label -> the settings that switch a rule off, over the shipped ones
VARIANTS = {"shipped": {}, **{f"{rule} off": {"rules_off": rule} for rule in LA_RULES},
            "utilization cap off": {"max_utilization": 1.0}, "burst memory off": {"burst_memory_ms": 0.0},
            "latency safety off": {"latency_safety": 0.0}}


def _run(trace, profile_dict: dict, config: ServingConfig, slo_ms: float, handover: int) -> tuple[int, int, float]:
    """(on time, requests, summed accuracy of the on-time answers) of one simulated run, each batch its profiled
    latency plus the configured overheads."""
    records = simulate_model(trace.arrivals_s, profile_dict, config, slo_ms, handover,
                             (config.overhead_per_batch_ms, config.overhead_per_sample_ms), LEAD_IN_S, trace.duration_s)
    on_time = [r for r in records if r.outcome == "on_time"]
    return len(on_time), len(records), float(sum(r.accuracy for r in on_time))


def ablation(model: str, seeds: int, duration_s: float, workers: int = 1, progress=None) -> dict:
    profile_dict, shipped, _ = load_setup(model=model)
    shipped = dataclasses.replace(shipped, workers=workers)
    profile = Profile.from_dict(profile_dict)
    handover = read_model_config(model_dir(model) / "config.pbtxt").max_batch_size
    slo_ms = suggested_slo_ms(profile_dict, shipped.margin_ms)
    planned = profile.with_overhead(int(shipped.overhead_per_batch_ms * 1e6), int(shipped.overhead_per_sample_ms * 1e6))
    top = profile.max_batch / (planned.latency_ns(profile.size - 1, profile.max_batch) / 1e9) * workers
    pooled: dict[str, dict[str, list[float]]] = {}
    for seed in range(seeds):
        for trace in held_out_traces(top, duration_s, HELD_OUT_SEED + 100 * seed):
            for label, settings in VARIANTS.items():
                config = dataclasses.replace(shipped, **settings)
                counts = pooled.setdefault(trace.name, {}).setdefault(label, [0, 0, 0.0])
                for i, value in enumerate(_run(trace, profile_dict, config, slo_ms, handover)):
                    counts[i] += value
                if progress:
                    progress()
    return {"model": model, "seeds": seeds, "duration_s": duration_s, "slo_ms": slo_ms, "top_rps": top,
            "workers": shipped.workers, "traces": {
                name: {label: {"attainment": c[0] / c[1], "accuracy": c[2] / c[0] if c[0] else float("nan"),
                               "requests": c[1]} for label, c in rows.items()} for name, rows in pooled.items()}}


def report(result: dict) -> str:
    names = list(result["traces"])
    lines = [f"SIMULATED ablation of SlackFit-LA on `{result['model']}` ({result['workers']} worker(s), "
             f"SLO {result['slo_ms']} ms, most accurate SubNet's capacity {result['top_rps']:.0f} req/s): the held-out "
             f"traces, {result['seeds']} seeds each, {result['duration_s']:g} s, pooled. Each cell: attainment and served "
             "accuracy with the rule off, minus the shipped settings' (points); the first row is the shipped settings' "
             "own.", "", "| variant | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    base = {n: result["traces"][n]["shipped"] for n in names}
    lines.append("| shipped | " + " | ".join(f"{100 * base[n]['attainment']:.2f}% / {100 * base[n]['accuracy']:.2f}%"
                                            for n in names) + " |")
    for label in VARIANTS:
        if label == "shipped":
            continue
        cells = []
        for n in names:
            row = result["traces"][n][label]
            cells.append(f"{100 * (row['attainment'] - base[n]['attainment']):+.2f} / "
                         f"{100 * (row['accuracy'] - base[n]['accuracy']):+.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from tqdm import tqdm

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="superserve", help="a served model of model_repository/")
    p.add_argument("--seeds", type=int, default=3, help="runs of each held-out trace, each with its own seed")
    p.add_argument("--duration-s", type=float, default=12.0, help="seconds per trace (the benchmark's)")
    p.add_argument("--workers", type=int, default=1, help="simulated workers (1: the single-worker rounds)")
    p.add_argument("--out", type=Path, default=Path("results/ablation"))
    args = p.parse_args(argv)
    bar = tqdm(total=args.seeds * 7 * len(VARIANTS), desc=f"simulated runs ({args.model})", unit="run")
    result = ablation(args.model, args.seeds, args.duration_s, args.workers, progress=bar.update)
    bar.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.model}.json").write_text(json.dumps(result, indent=1))
    text = report(result)
    (args.out / f"{args.model}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
