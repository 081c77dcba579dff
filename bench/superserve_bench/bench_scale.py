"""What more workers buy, side by side in one tritonserver (``make bench-scale``).

Four ways to serve the same SuperNet, side by side in one server so a slow spell hits all alike, each round in a
fresh server (a process's speed is a draw for its life):

- 1 worker: the SuperNet in the model's own process, one torch thread (``workers: 1``, the single-worker path);
- 1 worker, 2 torch threads: what a user could do instead of a second worker;
- 2 workers: the router over two local worker processes, one torch thread each (what ``make serve`` ships);
- 1 local + 1 remote: the router over one local worker and a second tritonserver on loopback serving
  ``worker_repository`` (``make worker-host``): the cross-machine path, here on the same two cores.

Each is driven at saturation by perf_analyzer (gRPC async) pinned to the most accurate SubNet, and unpinned
(SlackFit-LA at the benchmarks' SLO) by our open-loop replayer at one load for all: ``--load`` times what one
worker served pinned in the first round (perf_analyzer stops at its first error, and unpinned the policy refuses
what it cannot serve in time). Meanwhile the CPU time of every role is measured (Triton's frontend, each stub or
router, the workers, the remote host, the load generator). On a 2-core machine the cores, not the design, bound a
second worker: the report gives each system's requests per second per core its compute used, against the single
worker's.

    .venv/bin/python -m superserve_bench.bench_scale --rounds 2 --out results/bench_scale
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from superserve.runtime.tritonenv import REPO_ROOT, start_server

from .bench_peer import perf_analyzer
from .cpu import CpuMeter
from .inputs import model_inputs, write_input_data
from .prometheus import scrape, total
from .repository import SuperServeModel, make_repository, model_dir
from .traces import bursty

__all__ = ["main", "run", "markdown"]

PINNED_SLO_MS = 10_000  # pinned: throughput alone, no deadline may bind
SYSTEMS = {  # label -> (model name, workers, extra parameters); the remote one gets its address at run time
    "1 worker": ("scale_w1", 1, {}),
    "1 worker, 2 torch threads": ("scale_w1_t2", 1, {"num_threads": 2}),
    "2 workers": ("scale_w2", 2, {}),
    "1 local + 1 remote": ("scale_w1_r1", 1, {}),
}


def _models(remote_url: str | None) -> list[SuperServeModel]:
    out = []
    for label, (name, workers, params) in SYSTEMS.items():
        if label == "1 local + 1 remote":
            if remote_url is None:
                continue
            params = {"remote_workers": remote_url}
        out.append(SuperServeModel(name, params, workers=workers))
    return out


def _served(before: dict, after: dict, model: str, profile: dict) -> dict:
    """The model's own books over a run: attainment and mean served accuracy."""
    label = f'model="{model}"'
    outcome = {o: total(after, "superserve_requests_total", f'{label},outcome="{o}"') -
               total(before, "superserve_requests_total", f'{label},outcome="{o}"')
               for o in ("on_time", "late", "shed")}
    samples = [total(after, "superserve_subnet_samples_total", f'{label},subnet="{i}"') -
               total(before, "superserve_subnet_samples_total", f'{label},subnet="{i}"')
               for i in range(len(profile["subnets"]))]
    answered = sum(outcome.values())
    return {"attainment": outcome["on_time"] / answered if answered else float("nan"),
            "accuracy": sum(n * s["accuracy"] for n, s in zip(samples, profile["subnets"])) / max(1, sum(samples))}


def _replayed(server, model: str, rate: float, seconds: float, slo_ms: float, seed: int) -> dict:
    """Open-loop Poisson load on ``model``: (req/s answered on time or late, the clients' attainment)."""
    from superserve.build.data import load_digits

    from .replay import replay_sync

    records = replay_sync(bursty(0.0, rate, 1.0, seconds, seed=seed), server.grpc_url, slo_ms,
                          load_digits().test_x[:64].numpy(), model=model)
    served = sum(r.outcome in ("on_time", "late") for r in records)
    return {"throughput_rps": served / seconds, "requests": len(records),
            "client_attainment": sum(r.outcome == "on_time" for r in records) / len(records)}


def run(out: Path, rounds: int, seconds: float, concurrency: int, slo_ms: float, remote: bool,
        load: float) -> dict:
    source = model_dir("superserve")
    profile = json.loads((source / "1" / "profile.json").read_text())
    top = len(profile["subnets"]) - 1
    host = server = None
    data = write_input_data(out / "perf_input.json", model_inputs(model_dir(), 32))
    pinned, unpinned = "pinned, most accurate", f"SlackFit-LA, SLO {slo_ms:g} ms"
    labels = [label for label in SYSTEMS if remote or "remote" not in label]
    report = {"rounds": [], "seconds": seconds, "concurrency": concurrency, "slo_ms": slo_ms, "load": load}
    try:
        for r in range(rounds):
            # each round in fresh servers: a process's speed is a draw for its life (docs/known-issues.md)
            if remote:
                host = start_server(REPO_ROOT / "worker_repository", out / f"worker_host_round{r + 1}.log")
            repo = make_repository(out, _models(host.grpc_url if host else None), profile, source)
            server = start_server(repo, out / f"server_round{r + 1}.log")
            roles = {"frontend": server.process.pid, **({"remote host": host.process.pid} if host else {})}
            for label in labels:  # warm-up, unmeasured
                perf_analyzer(server, SYSTEMS[label][0], data, out, concurrency, 1.0, {"subnet": top,
                                                                                      "slo_ms": PINNED_SLO_MS})
            cases = [(label, mode) for mode in (pinned, unpinned) for label in labels]
            for label, mode in (cases if r % 2 == 0 else cases[::-1]):
                model = SYSTEMS[label][0]
                meter, before, started = CpuMeter(roles), scrape(server.metrics_url), time.monotonic()
                meter.start()
                if mode == pinned:
                    result = perf_analyzer(server, model, data, out, concurrency, seconds,
                                           {"subnet": top, "slo_ms": PINNED_SLO_MS})
                else:
                    if "rate_rps" not in report:  # what one worker served pinned, in the first round
                        report["rate_rps"] = load * next(row["throughput_rps"] for row in report["rounds"]
                                                         if row["system"] == "1 worker" and row["mode"] == pinned)
                    result = _replayed(server, model, report["rate_rps"], seconds, slo_ms, seed=r)
                cpu = meter.stop()
                wall = time.monotonic() - started
                time.sleep(1.0)  # the model's books reach Prometheus twice a second
                books = _served(before, scrape(server.metrics_url), model, profile)
                row = {"round": r, "system": label, "mode": mode, "throughput_rps": result["throughput_rps"],
                       "requests": result["requests"], "client_attainment": result.get("client_attainment"),
                       "wall_s": wall, "cpu_s": cpu, **books}
                report["rounds"].append(row)
                clients = f", clients {row['client_attainment']:.4f}" if row["client_attainment"] is not None else ""
                print(f"round {r + 1}: {mode:24s} {label:26s} {result['throughput_rps']:7.0f} req/s, accuracy "
                      f"{books['accuracy']:.3f}, attainment {books['attainment']:.4f}{clients}; CPU cores: " +
                      ", ".join(f"{k} {v / wall:.2f}" for k, v in sorted(cpu.items()) if v), flush=True)
            server.stop()
            server = None
            if host is not None:
                host.stop()
                host = None
    finally:
        if server is not None:
            server.stop()
        if host is not None:
            host.stop()
    return report


def _compute_cores(row: dict) -> float:
    """Cores the system's compute used: its worker processes (and the remote host), or for one worker (the
    single-worker path) its own stub."""
    cpu, label = row["cpu_s"], row["system"]
    model, workers, _ = SYSTEMS[label]
    if workers == 1 and "remote" not in label:
        return cpu.get(f"stub of {model}", 0.0) / row["wall_s"]
    remote = cpu.get("remote host", 0.0) if "remote" in label else 0.0
    return (cpu.get(f"workers of {model}", 0.0) + remote) / row["wall_s"]


def markdown(report: dict) -> str:
    lines = [f"Pinned: perf_analyzer, gRPC async at concurrency {report['concurrency']}; SlackFit-LA: our open-loop "
             f"replayer, Poisson at {report.get('rate_rps', float('nan')):.0f} req/s ({report['load']:g}x what 1 "
             f"worker served pinned in round 1), SLO {report['slo_ms']:g} ms; {report['seconds']:.0f} s windows, "
             "the systems side by side in one tritonserver, each round in a fresh one (the remote worker: a second "
             "tritonserver on loopback, on the same 2 cores). Attainment: the model's books (clients' in brackets). "
             "CPU: cores used during the run "
             "by Triton's frontend, the model's stub (the router, or for one worker the SuperNet itself), its "
             "workers, the remote host and the load generator. Per compute core: requests per second over the "
             "cores the compute used, against 1 worker's in the same round.",
             "", "| mode | round | system | req/s | vs 1 worker | accuracy | attainment | frontend | stub | "
             "workers | remote host | load gen | req/s per compute core | vs 1 worker |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = {(r["round"], r["mode"], r["system"]): r for r in report["rounds"]}
    for (rnd, mode, label), row in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        base = rows[(rnd, mode, "1 worker")]
        cpu, wall, model = row["cpu_s"], row["wall_s"], SYSTEMS[label][0]
        per_core = row["throughput_rps"] / max(_compute_cores(row), 1e-9)
        base_per_core = base["throughput_rps"] / max(_compute_cores(base), 1e-9)
        lines.append(f"| {mode} | {rnd + 1} | {label} | {row['throughput_rps']:.0f} | "
                     f"{row['throughput_rps'] / base['throughput_rps']:.2f}x | {row['accuracy']:.3f} | "
                     f"{row['attainment']:.4f}" + (f" ({row['client_attainment']:.4f})"
                                                   if row.get("client_attainment") is not None else "") +
                     f" | {cpu.get('frontend', 0) / wall:.2f} | "
                     f"{cpu.get(f'stub of {model}', 0) / wall:.2f} | {cpu.get(f'workers of {model}', 0) / wall:.2f} | "
                     f"{cpu.get('remote host', 0) / wall:.2f} | {cpu.get('load generator', 0) / wall:.2f} | "
                     f"{per_core:.0f} | {per_core / base_per_core:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bench_scale")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0, help="perf_analyzer window")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--slo-ms", type=float, default=None, help="the unpinned runs' SLO (default: the benchmarks')")
    p.add_argument("--load", type=float, default=1.2,
                   help="the unpinned load, as a multiple of what 1 worker served pinned to the most accurate SubNet")
    p.add_argument("--no-remote", action="store_true", help="leave out the local + remote system")
    p.add_argument("--report", action="store_true", help="only write the table again from the folder's JSON")
    args = p.parse_args(argv)
    if args.report:
        table = markdown(json.loads((args.out / "bench_scale.json").read_text()))
        (args.out / "bench_scale.md").write_text(table + "\n")
        print(table)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    from .bench import load_setup

    report = run(args.out, args.rounds, args.seconds, args.concurrency, load_setup(args.slo_ms)[2],
                 not args.no_remote, args.load)
    (args.out / "bench_scale.json").write_text(json.dumps(report, indent=1))
    table = markdown(report)
    (args.out / "bench_scale.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
