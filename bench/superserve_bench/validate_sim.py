"""Validate the SIMULATOR against the real server: replay each benchmark trace through the simulator
(one worker: the live model's serving loop; several: the live router; on simulated time, profiled latency +
the server's learned overheads per batch and per sample, each run after its lead-in, as the benchmark runs it)
and compare SLO attainment and accuracy with what the real server measured on the same trace, for SuperServe's
policies.

    .venv/bin/python -m superserve_bench.validate_sim --bench results/bench
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from superserve.serving.config import ServingConfig, parse_config, read_model_config
from superserve.serving.simulator import simulate_model

from .bench import LEAD_IN_S, load_setup
from .metrics import summarise
from .repository import SuperServeModel, model_dir
from .traces import Trace

__all__ = ["main"]


def _with_parameters(shipped: ServingConfig, parameters: dict) -> ServingConfig:
    """The shipped serving config with a benchmark row's parameters (its policy, a variant's settings) over it."""
    given = parse_config(parameters)
    return dataclasses.replace(shipped, **{key: getattr(given, key) for key in parameters})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", type=Path, default=Path("results/bench"))
    p.add_argument("--overhead-ms", type=float, nargs=2, default=None, metavar=("PER_BATCH", "PER_SAMPLE"),
                   help="serving overheads (default: what the benchmark's server learned, else the config's)")
    args = p.parse_args(argv)
    results = json.loads((args.bench / "results.json").read_text())
    model = results.get("model", "superserve")
    profile_dict, shipped, _ = load_setup(model=model)
    # the benchmark's SuperServe models run SuperServeModel's workers unless a variant sets ``workers``
    shipped = dataclasses.replace(shipped, workers=SuperServeModel(model).workers)
    handover = read_model_config(model_dir(model) / "config.pbtxt").max_batch_size  # the rounds' hand-over
    learned = results.get("learned_overhead_ms") or {}
    per_batch, per_sample = args.overhead_ms or (learned.get("batch") or shipped.overhead_per_batch_ms,
                                                 learned.get("sample") or shipped.overhead_per_sample_ms)
    rows = []
    for trace_result in results["traces"]:
        trace = Trace.load(args.bench / "traces" / f"{trace_result['name']}.json")
        for real in trace_result["rows"]:
            if "policy" not in real["parameters"]:
                continue  # plain Triton: not what the simulator models
            config = _with_parameters(shipped, real["parameters"])  # a --variant's serving parameters
            config = dataclasses.replace(config, overhead_per_batch_ms=per_batch, overhead_per_sample_ms=per_sample)
            records = simulate_model(trace.arrivals_s, profile_dict, config, results["slo_ms"], handover,
                                     (per_batch, per_sample), LEAD_IN_S, trace.duration_s)
            sim = summarise(records, results["slo_ms"])
            rows.append({"trace": trace.name, "system": real["system"], "real_attainment": real["slo_attainment"],
                         "simulated_attainment": sim["slo_attainment"],
                         "real_accuracy": real["mean_serving_accuracy"],
                         "simulated_accuracy": sim["mean_serving_accuracy"]})
    out = {"overhead_per_batch_ms": per_batch, "overhead_per_sample_ms": per_sample, "margin_ms": shipped.margin_ms,
           "rows": rows}
    (args.bench / "simulator_validation.json").write_text(json.dumps(out, indent=1))
    lines = [f"Simulator (SIMULATED: profiled latency + {per_batch:.3f} ms per batch + {per_sample:.3f} ms per "
             f"sample of overhead, margin {shipped.margin_ms} ms unless a variant sets it, the live server's rounds) "
             "vs the real server on the same traces:", "",
             "| trace | system | attainment real | simulated | diff (points) | accuracy real | simulated |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['trace']} | {r['system']} | {r['real_attainment']:.4f} | {r['simulated_attainment']:.4f} | "
                     f"{100 * (r['simulated_attainment'] - r['real_attainment']):+.2f} | "
                     f"{100 * r['real_accuracy']:.2f}% | {100 * r['simulated_accuracy']:.2f}% |")
    lines += ["", "Largest attainment difference per system (points; the target is within 2):", ""]
    for system in dict.fromkeys(r["system"] for r in rows):
        diffs = [100 * abs(r["simulated_attainment"] - r["real_attainment"]) for r in rows if r["system"] == system]
        lines.append(f"- {system}: {max(diffs):.2f}; {sum(d <= 2 for d in diffs)} of {len(diffs)} traces within 2")
    text = "\n".join(lines)
    (args.bench / "simulator_validation.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
