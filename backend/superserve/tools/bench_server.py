"""Server benchmark: policy decision time, server overhead at low load, saturation throughput.

Everything is measured in one run on this machine: the decision time in-process on the real profile,
the overhead and saturation against a real tritonserver (gRPC), and the raw PyTorch throughput of the
fastest SubNet at the largest batch as the reference for saturation.
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
import torch

from ..build import load_supernet
from ..profiling import latency_ms
from ..scheduler import EDFQueue, Profile, QueuedRequest, make_policy
from ..tritonenv import REPO_ROOT, ensure_triton_home, perf_analyzer_env, start_server

__all__ = ["main"]

MODEL_DIR = REPO_ROOT / "model_repository" / "superserve" / "1"


def decision_times(profile: dict, queue_lengths=(1, 16, 256), decisions: int = 20_000) -> dict:
    from ..serving.config import config_from_pbtxt

    # the served configuration's SlackFit-LA settings, so its arrival-rate lookup is timed too
    config = config_from_pbtxt(MODEL_DIR.parent / "config.pbtxt")
    p = Profile.from_dict(profile)
    rng = random.Random(0)
    out = {}
    top = p.latency_ns(p.size - 1, p.max_batch)
    for policy_name in ("slackfit", "slackfit-la", "maxacc", "maxbatch"):
        policy = make_policy(policy_name, p, latency_safety=config.latency_safety,
                             max_utilization=config.max_utilization)
        for n in queue_lengths:
            queue = EDFQueue()
            for _ in range(n):
                queue.push(QueuedRequest(rng.randrange(0, 2 * top), 0, 0, p.size - 1))
            times = []
            for i in range(decisions):
                start = time.perf_counter_ns()
                policy.decide(queue, -(i % 1000) * 10_000)
                times.append(time.perf_counter_ns() - start)
            times.sort()
            out[f"{policy_name}@{n}"] = {"p50_us": times[len(times) // 2] / 1e3,
                                         "p99_us": times[int(0.99 * len(times))] / 1e3}
    return out


def low_load_overhead(server, profile: dict, images: np.ndarray, requests: int = 300) -> dict:
    """Sequential requests (one at a time) with a loose SLO: client latency minus the SubNet's compute."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    overheads, by_subnet = [], {}
    for i in range(requests + 20):
        tensor = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
        tensor.set_data_from_numpy(images[i % len(images)][None])
        start = time.perf_counter()
        result = client.infer("superserve", [tensor], parameters={"slo_ms": 1000})
        elapsed = (time.perf_counter() - start) * 1e3
        subnet = int(result.as_numpy("SUBNET")[0, 0])
        if i >= 20:  # warm-up
            overheads.append(elapsed - profile["subnets"][subnet]["latency_ms"]["1"])
            by_subnet[subnet] = by_subnet.get(subnet, 0) + 1
        time.sleep(0.002)
    overheads.sort()
    return {"requests": requests, "subnets": by_subnet, "overhead_p50_ms": overheads[len(overheads) // 2],
            "overhead_p99_ms": overheads[int(0.99 * len(overheads))]}


def saturation(server, input_data: Path, concurrency: int, seconds: float, subnet: int = 0) -> dict:
    """perf_analyzer, async gRPC at high concurrency, every request pinned to one SubNet (the fastest)."""
    cmd = [str(Path(sys.executable).parent / "perf_analyzer"), "-m", "superserve", "-u", server.grpc_url,
           "-i", "grpc", "--async", "--input-data", str(input_data), "--concurrency-range", str(concurrency),
           "--request-parameter", "slo_ms:5000:int", "--request-parameter", f"subnet:{subnet}:int",
           "--measurement-interval", str(int(seconds * 1000)), "--stability-percentage", "50", "--max-trials", "3"]
    out = subprocess.run(cmd, env=perf_analyzer_env(ensure_triton_home()), capture_output=True, text=True,
                         timeout=600)
    throughput = [float(line.split(":")[1].split()[0]) for line in out.stdout.splitlines() if "Throughput:" in line]
    if out.returncode != 0 or not throughput:
        raise RuntimeError(f"perf_analyzer failed:\n{out.stdout}\n{out.stderr}")
    return {"concurrency": concurrency, "throughput_rps": throughput[-1]}


def main(argv: list[str] | None = None) -> None:
    from superserve.data import load_digits
    from superserve_client.perf import write_input_data

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/bench_server.json"))
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0, help="perf_analyzer measurement window")
    args = p.parse_args(argv)
    net, profile = load_supernet(MODEL_DIR)
    torch.set_num_threads(profile.get("threads", 1))
    images = load_digits().held_out_x.numpy()
    report = {"decision": decision_times(profile)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server = start_server(REPO_ROOT / "model_repository", args.out.parent / "bench_server.log")
    try:
        report["low_load"] = low_load_overhead(server, profile, images)
        data = write_input_data(args.out.parent / "perf_input.json")
        report["saturation"] = saturation(server, data, args.concurrency, args.seconds)
    finally:
        server.stop()
    # Raw PyTorch throughput of the fastest SubNet at the largest batch, same threads, measured now.
    b = profile["max_batch_size"]
    plan = net.inference_plan(net.space.parse(profile["subnets"][0]["config"]))
    raw_ms = latency_ms(net, torch.from_numpy(images[:b]), repeats=50, plan=plan)
    report["raw_fastest_rps"] = b / raw_ms * 1e3
    report["saturation_ratio"] = report["saturation"]["throughput_rps"] / report["raw_fastest_rps"]
    args.out.write_text(json.dumps(report, indent=2))

    d = report["decision"]
    print("\n| policy @ queue length | decision p50 (us) | p99 (us) |\n|---|---|---|")
    for key, v in d.items():
        print(f"| {key} | {v['p50_us']:.2f} | {v['p99_us']:.2f} |")
    ll = report["low_load"]
    print(f"\nserver overhead at low load (client latency - SubNet compute): p50 {ll['overhead_p50_ms']:.3f} ms, "
          f"p99 {ll['overhead_p99_ms']:.3f} ms over {ll['requests']} sequential gRPC requests")
    print(f"saturation: {report['saturation']['throughput_rps']:.0f} req/s vs raw fastest SubNet "
          f"{report['raw_fastest_rps']:.0f} samples/s at batch {b} -> ratio {report['saturation_ratio']:.3f}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
