"""SuperServe against plain Triton on the same SubNet, side by side in one tritonserver (``make bench-peer``).

For the fastest and the most accurate SubNet, three systems measured with perf_analyzer in interleaved rounds, so
a slow spell of the machine hits all alike:

- plain Triton: a model serving only that SubNet behind Triton's dynamic batcher (``native_model.py``);
- SuperServe, pinned per request: the shipped model, each request carrying ``subnet`` and ``slo_ms``;
- SuperServe, pinned by config: a SuperServe model whose policy is ``fixed:<i>`` (requests carry no parameters,
  exactly what plain Triton gets; Triton's request parameters have a cost of their own).

- saturation: gRPC async at a high concurrency; throughput per round, and Triton's own execute() count per
  request (``nv_inference_exec_count`` against ``nv_inference_request_success``);
- low load: one request at a time; client latency p50 and p99.

    .venv/bin/python -m superserve_bench.bench_peer --rounds 3 --out results/bench_peer
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

from superserve.tritonenv import REPO_ROOT, ensure_triton_home, perf_analyzer_env, start_server

from .perf import write_input_data
from .prometheus import scrape, total
from .repository import SERVED_MODELS, NativeModel, SuperServeModel, make_repository, model_dir

__all__ = ["main", "perf_analyzer", "pinned_capacity", "PEER_SLO_MS"]

PEER_SLO_MS = 10_000  # saturation and low load compare serving cost, so no deadline may bind


def perf_analyzer(server, model: str, input_data: Path, work: Path, concurrency: int, seconds: float,
                  parameters: dict | None = None) -> dict:
    """One perf_analyzer measurement (gRPC, async): throughput and client latency percentiles, and Triton's
    execute() calls and successful requests for ``model`` over the run (from its metrics)."""
    csv_path = work / f"perf_{model}_{concurrency}.csv"
    cmd = [str(Path(sys.executable).parent / "perf_analyzer"), "-m", model, "-u", server.grpc_url, "-i", "grpc",
           "--async", "--input-data", str(input_data), "--concurrency-range", str(concurrency),
           "--measurement-interval", str(int(seconds * 1000)), "--stability-percentage", "50", "--max-trials", "10",
           "-f", str(csv_path)]
    for key, value in (parameters or {}).items():
        cmd += ["--request-parameter", f"{key}:{value}:int"]
    label = f'model="{model}"'
    before = scrape(server.metrics_url)
    out = subprocess.run(cmd, env=perf_analyzer_env(ensure_triton_home()), capture_output=True, text=True,
                         timeout=600)
    after = scrape(server.metrics_url)
    if out.returncode != 0 or not csv_path.is_file():
        raise RuntimeError(f"perf_analyzer failed on {model}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    with open(csv_path) as f:
        row = next(csv.DictReader(f))
    executions = total(after, "nv_inference_exec_count", label) - total(before, "nv_inference_exec_count", label)
    requests = total(after, "nv_inference_request_success", label) - total(before, "nv_inference_request_success",
                                                                          label)
    return {"throughput_rps": float(row["Inferences/Second"]), "p50_ms": float(row["p50 latency"]) / 1e3,
            "p99_ms": float(row["p99 latency"]) / 1e3, "requests": requests, "executions": executions,
            "requests_per_execution": requests / executions if executions else float("nan")}


def pinned_capacity(server, input_data: Path, work: Path, subnet: int, seconds: float = 4.0,
                    model: str = "superserve") -> float:
    """Saturation throughput (req/s) of SuperServe pinned to one SubNet, at concurrency 32."""
    return perf_analyzer(server, model, input_data, work, 32, seconds, {"subnet": subnet, "slo_ms": PEER_SLO_MS})[
        "throughput_rps"]


PER_REQUEST, BY_CONFIG, PLAIN = "SuperServe (pinned per request)", "SuperServe (pinned by config)", "plain Triton"


def _indices(profile: dict) -> tuple[tuple[str, int], ...]:
    return ("fastest", 0), ("most accurate", len(profile["subnets"]) - 1)


def systems(profile: dict) -> list[tuple[str, str, str, dict]]:
    """(SubNet label, system, Triton model, request parameters) for the fastest and the most accurate SubNet."""
    out = []
    for label, index in _indices(profile):
        out.append((label, PER_REQUEST, "superserve", {"subnet": index, "slo_ms": PEER_SLO_MS}))
        out.append((label, BY_CONFIG, f"superserve_fixed_{index}", {}))
        out.append((label, PLAIN, f"native_{index}", {}))
    return out


def models(profile: dict) -> list:
    out = [SuperServeModel("superserve")]
    for _, index in _indices(profile):
        out.append(SuperServeModel(f"superserve_fixed_{index}", {"policy": f"fixed:{index}",
                                                                  "default_slo_ms": PEER_SLO_MS}))
        out.append(NativeModel(f"native_{index}", index))
    return out


def run(out: Path, rounds: int, concurrency: int, seconds: float, low_load_seconds: float,
        model: str = "superserve") -> dict:
    source = model_dir(model)
    profile = json.loads((source / "1" / "profile.json").read_text())
    top = len(profile["subnets"]) - 1
    repo = make_repository(out, models(profile), profile, source)
    data = write_input_data(out / "perf_input.json")
    server = start_server(repo, out / "server.log")
    report = {"concurrency": concurrency, "seconds": seconds, "rounds": [], "subnets": {
        "fastest": profile["subnets"][0]["id"], "most accurate": profile["subnets"][top]["id"]}}
    try:
        for subnet, system, model, params in systems(profile):  # warm-up, unmeasured
            perf_analyzer(server, model, data, out, concurrency, 2.0, params)
        for r in range(rounds):
            order = systems(profile) if r % 2 == 0 else systems(profile)[::-1]
            for subnet, system, model, params in order:
                saturated = perf_analyzer(server, model, data, out, concurrency, seconds, params)
                idle = perf_analyzer(server, model, data, out, 1, low_load_seconds, params)
                report["rounds"].append({"round": r, "subnet": subnet, "system": system, "saturation": saturated,
                                         "low_load": idle})
                print(f"round {r + 1}: {subnet:13s} {system:31s} {saturated['throughput_rps']:8.0f} req/s "
                      f"({saturated['requests_per_execution']:.1f} req/execute), one at a time p50 "
                      f"{idle['p50_ms']:.2f} ms p99 {idle['p99_ms']:.2f} ms", flush=True)
    finally:
        server.stop()
    return report


def markdown(report: dict) -> str:
    lines = [f"perf_analyzer, gRPC async; saturation at concurrency {report['concurrency']}, "
             f"{report['seconds']:.0f} s windows; low load one request at a time. Rounds interleaved in one "
             "tritonserver. Ratio: SuperServe's throughput over plain Triton's in the same round.", "",
             "| SubNet | round | system | req/s | ratio | req/execute | low-load p50 ms | low-load p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    rows = {(r["round"], r["subnet"], r["system"]): r for r in report["rounds"]}
    for subnet in ("fastest", "most accurate"):
        for rnd in sorted({r["round"] for r in report["rounds"]}):
            plain = rows[(rnd, subnet, PLAIN)]["saturation"]["throughput_rps"]
            for system in (PER_REQUEST, BY_CONFIG, PLAIN):
                row = rows[(rnd, subnet, system)]
                s, low = row["saturation"], row["low_load"]
                ratio = f"**{s['throughput_rps'] / plain:.2f}x**" if system != PLAIN else ""
                lines.append(f"| {subnet} | {rnd + 1} | {system} | {s['throughput_rps']:.0f} | {ratio} | "
                             f"{s['requests_per_execution']:.1f} | {low['p50_ms']:.2f} | {low['p99_ms']:.2f} |")
    lines.append("")
    for subnet in ("fastest", "most accurate"):
        for system in (PER_REQUEST, BY_CONFIG):
            ratios = sorted(rows[(rnd, subnet, system)]["saturation"]["throughput_rps"] /
                            rows[(rnd, subnet, PLAIN)]["saturation"]["throughput_rps"]
                            for rnd in sorted({r["round"] for r in report["rounds"]}))
            lines.append(f"- {subnet}, {system}: throughput ratio per round " +
                         ", ".join(f"{x:.2f}x" for x in ratios) + f" (median {statistics.median(ratios):.2f}x)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bench_peer")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0, help="perf_analyzer window at saturation")
    p.add_argument("--low-load-seconds", type=float, default=3.0, help="perf_analyzer window at concurrency 1")
    p.add_argument("--model", default="superserve", choices=SERVED_MODELS, help="the SuperNet to compare on")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = run(args.out, args.rounds, args.concurrency, args.seconds, args.low_load_seconds, args.model)
    (args.out / "bench_peer.json").write_text(json.dumps(report, indent=1))
    table = markdown(report)
    (args.out / "bench_peer.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
