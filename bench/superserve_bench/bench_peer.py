"""SuperServe against plain Triton on the same SubNet, side by side in one tritonserver (``make bench-peer``).

For the fastest and the most accurate SubNet, three systems measured side by side in one server, so a slow
spell of the machine hits all alike; each round in a fresh server, because a model process's speed is a draw that
lasts its life (the same code in two processes can differ by 10% and more):

- plain Triton: a model serving only that SubNet behind Triton's dynamic batcher (``native_model.py``);
- SuperServe, pinned by config: a SuperServe model whose policy is ``fixed:<i>`` and whose config declares LOGITS
  alone: requests carry no parameters and answers one output, exactly what plain Triton gets and makes;
- SuperServe, pinned per request: the shipped model, each request carrying ``subnet`` and ``slo_ms`` and each
  answer also ``SUBNET`` and ``ACCURACY`` (perf_analyzer asks for every declared output): the whole API's cost.

- saturation: perf_analyzer, gRPC async at a high concurrency; throughput per round, and Triton's own execute()
  count per request (``nv_inference_exec_count`` against ``nv_inference_request_success``);
- low load: one gRPC request at a time, the systems taking turns request by request; client latency p50 and p99,
  per round and over all rounds' requests.

    .venv/bin/python -m superserve_bench.bench_peer --rounds 3 --out results/bench_peer
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from superserve.runtime.tritonenv import REPO_ROOT, ensure_triton_home, perf_analyzer_env, start_server

from .inputs import describe_inputs, model_inputs, write_input_data
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


PER_REQUEST, BY_CONFIG, PLAIN = ("SuperServe (pinned per request, 3 outputs)", "SuperServe (pinned by config)",
                                 "plain Triton")


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
                                                                  "default_slo_ms": PEER_SLO_MS}, ("LOGITS",)))
        out.append(NativeModel(f"native_{index}", index))
    return out


def low_load(server, order: list[tuple[str, str, str, dict]], images, requests: int) -> dict:
    """Client latency one request at a time, the systems taking turns request by request (so a slow spell of the
    machine hits all alike): {(SubNet label, system): latencies in ms}. gRPC, each request naming no outputs
    (all declared ones), as perf_analyzer does."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = []
    for image in images[:16]:
        tensor = grpcclient.InferInput("INPUT", [1, *image.shape], "FP32")
        tensor.set_data_from_numpy(image[None])
        inputs.append(tensor)
    times = {(subnet, system): [] for subnet, system, _, _ in order}
    for i in range(requests):
        for subnet, system, model, params in order:
            start = time.perf_counter_ns()
            client.infer(model, [inputs[i % len(inputs)]], parameters=params or None)
            times[(subnet, system)].append((time.perf_counter_ns() - start) / 1e6)
    return times


def percentiles(latencies_ms: list[float]) -> dict:
    return {"p50_ms": float(np.percentile(latencies_ms, 50)), "p99_ms": float(np.percentile(latencies_ms, 99)),
            "requests": len(latencies_ms)}


def run(out: Path, rounds: int, concurrency: int, seconds: float, low_load_requests: int, model: str,
        images: np.ndarray, described: str) -> dict:
    """``images``: the requests' inputs (``inputs.model_inputs``), ``described`` says what they are in the report."""
    source = model_dir(model)
    profile = json.loads((source / "1" / "profile.json").read_text())
    top = len(profile["subnets"]) - 1
    repo = make_repository(out, models(profile), profile, source)
    data = write_input_data(out / "perf_input.json", images)
    report = {"model": model, "inputs": described, "concurrency": concurrency, "seconds": seconds,
              "low_load_requests": low_load_requests, "rounds": [],
              "subnets": {"fastest": profile["subnets"][0]["id"], "most accurate": profile["subnets"][top]["id"]}}
    pooled: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        # each round in a server of its own: a model process's speed is a draw (the same code in two processes of
        # one server can differ by 10% and more for the process's life), so rounds must draw again
        server = start_server(repo, out / f"server_round{r + 1}.log")
        try:
            for subnet, system, model, params in systems(profile):  # warm-up, unmeasured
                perf_analyzer(server, model, data, out, concurrency, 2.0, params)
            order = systems(profile) if r % 2 == 0 else systems(profile)[::-1]
            idle = low_load(server, order, images, low_load_requests)
            for subnet, system, model, params in order:
                saturated = perf_analyzer(server, model, data, out, concurrency, seconds, params)
                quiet = percentiles(idle[(subnet, system)])
                pooled.setdefault((subnet, system), []).extend(idle[(subnet, system)])
                report["rounds"].append({"round": r, "subnet": subnet, "system": system, "saturation": saturated,
                                         "low_load": quiet})
                print(f"round {r + 1}: {subnet:13s} {system:43s} {saturated['throughput_rps']:8.0f} req/s "
                      f"({saturated['requests_per_execution']:.1f} req/execute), one at a time p50 "
                      f"{quiet['p50_ms']:.2f} ms p99 {quiet['p99_ms']:.2f} ms", flush=True)
        finally:
            server.stop()
    # one round's p99 is its 5th-slowest of 500 requests and moves by a millisecond between rounds; pooled over
    # the rounds it rests on a few times as many
    report["low_load_pooled"] = [{"subnet": subnet, "system": system, **percentiles(latencies)}
                                 for (subnet, system), latencies in pooled.items()]
    return report


def markdown(report: dict) -> str:
    lines = [f"perf_analyzer, gRPC async; saturation at concurrency {report['concurrency']}, "
             f"{report['seconds']:.0f} s windows; low load: {report['low_load_requests']} gRPC requests per system "
             "one at a time, the systems taking turns request by request. The systems side by side in one "
             "tritonserver, each round in a fresh one. "
             "Ratio: SuperServe's throughput over plain Triton's in the same round.", "",
             "| SubNet | round | system | req/s | ratio | req/execute | low-load p50 ms | low-load p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    rows = {(r["round"], r["subnet"], r["system"]): r for r in report["rounds"]}
    rounds = sorted({r["round"] for r in report["rounds"]})
    for subnet in ("fastest", "most accurate"):
        for rnd in rounds:
            plain = rows[(rnd, subnet, PLAIN)]["saturation"]["throughput_rps"]
            for system in (BY_CONFIG, PER_REQUEST, PLAIN):
                row = rows[(rnd, subnet, system)]
                s, low = row["saturation"], row["low_load"]
                ratio = f"**{s['throughput_rps'] / plain:.2f}x**" if system != PLAIN else ""
                lines.append(f"| {subnet} | {rnd + 1} | {system} | {s['throughput_rps']:.0f} | {ratio} | "
                             f"{s['requests_per_execution']:.1f} | {low['p50_ms']:.2f} | {low['p99_ms']:.2f} |")
    lines.append("")
    for subnet in ("fastest", "most accurate"):
        for system in (BY_CONFIG, PER_REQUEST):
            pairs = [(rows[(rnd, subnet, system)], rows[(rnd, subnet, PLAIN)]) for rnd in rounds]
            ratios = [ours["saturation"]["throughput_rps"] / plain["saturation"]["throughput_rps"]
                      for ours, plain in pairs]
            p50 = [ours["low_load"]["p50_ms"] - plain["low_load"]["p50_ms"] for ours, plain in pairs]
            p99 = [ours["low_load"]["p99_ms"] - plain["low_load"]["p99_ms"] for ours, plain in pairs]
            lines.append(f"- {subnet}, {system}: throughput ratio per round " +
                         ", ".join(f"{x:.2f}x" for x in ratios) + f" (median {statistics.median(ratios):.2f}x); "
                         "low-load p50 minus plain Triton's " + ", ".join(f"{x:+.2f}" for x in p50) +
                         f" ms (median {statistics.median(p50):+.2f}), p99 " + ", ".join(f"{x:+.2f}" for x in p99) +
                         f" ms (median {statistics.median(p99):+.2f})")
    pooled = {(r["subnet"], r["system"]): r for r in report.get("low_load_pooled", [])}
    for subnet in ("fastest", "most accurate"):
        if (subnet, PLAIN) not in pooled:
            continue
        plain = pooled[(subnet, PLAIN)]
        for system in (BY_CONFIG, PER_REQUEST):
            ours = pooled[(subnet, system)]
            lines.append(f"- {subnet}, {system}, low load pooled over the rounds ({ours['requests']} requests): "
                         f"p50 {ours['p50_ms']:.2f} ms ({ours['p50_ms'] - plain['p50_ms']:+.2f} against plain "
                         f"Triton's), p99 {ours['p99_ms']:.2f} ms ({ours['p99_ms'] - plain['p99_ms']:+.2f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bench_peer")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0, help="perf_analyzer window at saturation")
    p.add_argument("--low-load-requests", type=int, default=500,
                   help="sequential requests per system and round at low load")
    p.add_argument("--model", default="superserve", choices=SERVED_MODELS, help="the SuperNet to compare on")
    p.add_argument("--images", type=Path, default=None,
                   help="a folder of images to send to an image model (default: the digits for the shipped models, "
                        "synthetic inputs of the model's shape otherwise)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:  # a bad folder fails here, before any server starts
        images = model_inputs(model_dir(args.model), 32, args.images)
    except (ValueError, FileNotFoundError) as exc:
        p.error(str(exc))
    report = run(args.out, args.rounds, args.concurrency, args.seconds, args.low_load_requests, args.model,
                 images, describe_inputs(model_dir(args.model), args.images))
    (args.out / "bench_peer.json").write_text(json.dumps(report, indent=1))
    table = markdown(report)
    (args.out / "bench_peer.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
