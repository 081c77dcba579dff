"""Micro-benchmarks: SubNetAct (actuation time, in-place vs extracted forward latency, memory) and the policies'
decision time on the real profile.

Reads the built model folder; writes a JSON file and prints a table. A benchmark, not a test: the
numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from superserve.scheduler import EDFQueue, Profile, QueuedRequest, make_policy
from superserve.serving.config import ServingConfig, configured_load
from superserve.supernet import family_of
from superserve.supernet.artefacts import load_supernet
from superserve.runtime.tritonenv import REPO_ROOT

__all__ = ["main"]


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _model_bytes(model: torch.nn.Module) -> int:
    return _tensor_bytes(model.state_dict().values())


def actuation_times_us(net, subnets, iterations: int) -> dict:
    """Time ``net.actuate`` on served SubNets given as descriptions (plan cached) and as compiled plans."""
    rng = random.Random(0)
    order = [rng.choice(subnets) for _ in range(iterations)]
    plans = [net.inference_plan(s) for s in order]
    result = {}
    for label, items in (("by_subnet", order), ("by_plan", plans)):
        times = []
        for item in items:
            start = time.perf_counter_ns()
            net.actuate(item)
            times.append(time.perf_counter_ns() - start)
        result[label] = {"p50_us": _percentile(times, 0.5) / 1e3, "p99_us": _percentile(times, 0.99) / 1e3,
                         "max_us": max(times) / 1e3}
    compile_times = []
    for s in subnets:
        net._plans.pop(s.id, None)
        start = time.perf_counter_ns()
        net.plan_for(s)
        compile_times.append(time.perf_counter_ns() - start)
    result["first_actuation_compile_us_p50"] = statistics.median(compile_times) / 1e3
    return result


@torch.inference_mode()
def forward_ratio(net, subnet, batch: int, rounds: int) -> dict:
    """Median latency of the actuated SuperNet and of the extracted twin, measured interleaved."""
    twin = family_of(net.space).extract(net, subnet)
    plan = net.inference_plan(subnet)
    x = torch.rand(batch, *net_input_shape(net))
    for _ in range(5):
        net.actuate(plan)
        net(x)
        twin(x)
    inplace, extracted = [], []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        net.actuate(plan)
        net(x)
        inplace.append(time.perf_counter_ns() - start)
        start = time.perf_counter_ns()
        twin(x)
        extracted.append(time.perf_counter_ns() - start)
    a, b = statistics.median(inplace) / 1e6, statistics.median(extracted) / 1e6
    return {"batch": batch, "inplace_ms": a, "extracted_ms": b, "ratio": a / b}


def net_input_shape(net) -> tuple[int, int, int]:
    s = net.space
    return s.in_channels, s.input_size, s.input_size


def memory(net, served, profile) -> dict:
    family = family_of(net.space)
    norm_bytes = _tensor_bytes(net.subnet_norm_state()["layers"].values()) if family.norm_statistics else 0
    supernet_bytes = _model_bytes(net) + norm_bytes
    extracted = [_model_bytes(family.extract(net, s)) for s in served]
    n = len(served)
    six = sorted({round(i * (n - 1) / 5) for i in range(6)})
    six_bytes = sum(extracted[i] for i in six)
    return {
        "supernet_with_subnet_norm_bytes": supernet_bytes,
        "subnet_norm_bytes": norm_bytes,
        "served_subnets": n,
        "all_served_extracted_bytes": sum(extracted),
        "ratio_all_extracted_over_supernet": sum(extracted) / supernet_bytes,
        "six_extracted_indices": six,
        "six_extracted_bytes": six_bytes,
        "ratio_six_extracted_over_supernet": six_bytes / supernet_bytes,
    }


def decision_times(profile: dict, queue_lengths=(1, 16, 256), decisions: int = 20_000) -> dict:
    """Policy decision time on queues of random deadlines, with the shipped serving settings."""
    config = ServingConfig()
    p = Profile.from_dict(profile)
    rng = random.Random(0)
    out = {}
    top = p.latency_ns(p.size - 1, p.max_batch)
    for policy_name in ("slackfit", "slackfit-la", "maxacc", "maxbatch"):
        policy = make_policy(policy_name, p, latency_safety=config.latency_safety,
                             max_utilization=config.max_utilization)
        for n in queue_lengths:
            queue = EDFQueue()
            load = configured_load(config, p.max_batch)
            for _ in range(n):
                queue.push(QueuedRequest(rng.randrange(0, 2 * top), 0, 0, p.size - 1))
                load.arrived(0)
            times = []
            for i in range(decisions):
                now = -(i % 1000) * 10_000
                start = time.perf_counter_ns()
                load.remember_burst(now)  # as the serving loop does before each decision
                policy.decide(queue, now, load)
                times.append(time.perf_counter_ns() - start)
            out[f"{policy_name}@{n}"] = {"p50_us": _percentile(times, 0.5) / 1e3, "p99_us": _percentile(times, 0.99) / 1e3}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model_repository" / "superserve" / "1")
    p.add_argument("--out", type=Path, default=Path("results/bench_micro.json"))
    p.add_argument("--iterations", type=int, default=100_000, help="actuations timed")
    p.add_argument("--rounds", type=int, default=200, help="forward passes timed per (SubNet, batch)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the profile's)")
    args = p.parse_args(argv)
    net, profile = load_supernet(args.model_dir)
    torch.set_num_threads(args.threads or profile.get("threads", 1))
    served = [net.space.parse(entry["config"]) for entry in profile["subnets"]]
    report = {"model_dir": str(args.model_dir), "threads": torch.get_num_threads(),
              "actuation": actuation_times_us(net, served, args.iterations), "forward": []}
    for label, subnet in tqdm([("smallest", served[0]), ("largest", served[-1])], desc="in-place vs extracted"):
        for batch in (1, profile["max_batch_size"]):
            report["forward"].append({"subnet": label, **forward_ratio(net, subnet, batch, args.rounds)})
    report["memory"] = memory(net, served, profile)
    report["decision"] = decision_times(profile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    act = report["actuation"]
    print(f"\nactuation (pointer swap, {args.iterations} times): by SubNet p50 {act['by_subnet']['p50_us']:.2f} us, "
          f"p99 {act['by_subnet']['p99_us']:.2f} us; by plan p50 {act['by_plan']['p50_us']:.2f} us, "
          f"p99 {act['by_plan']['p99_us']:.2f} us; first actuation (compile) {act['first_actuation_compile_us_p50']:.1f} us")
    print("\n| SubNet | batch | in place (ms) | extracted (ms) | ratio |\n|---|---|---|---|---|")
    for row in report["forward"]:
        print(f"| {row['subnet']} | {row['batch']} | {row['inplace_ms']:.3f} | {row['extracted_ms']:.3f} | "
              f"{row['ratio']:.3f} |")
    mem = report["memory"]
    print(f"\nmemory: SuperNet + SubnetNorm {mem['supernet_with_subnet_norm_bytes'] / 1e6:.2f} MB "
          f"(SubnetNorm {mem['subnet_norm_bytes'] / 1e3:.1f} kB for {mem['served_subnets']} SubNets); "
          f"all {mem['served_subnets']} extracted {mem['all_served_extracted_bytes'] / 1e6:.2f} MB "
          f"({mem['ratio_all_extracted_over_supernet']:.2f}x); six extracted "
          f"{mem['six_extracted_bytes'] / 1e6:.2f} MB ({mem['ratio_six_extracted_over_supernet']:.2f}x)")
    print("\n| policy @ queue length | decision p50 (us) | p99 (us) |\n|---|---|---|")
    for key, v in report["decision"].items():
        print(f"| {key} | {v['p50_us']:.2f} | {v['p99_us']:.2f} |")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
