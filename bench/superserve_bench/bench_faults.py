"""Serving through worker losses (``make bench-faults``): the paper's Fig. 11a on this machine, and Figs. 11a and
11b at the paper's scale in the SIMULATOR.

- live: the shipped model (2 local workers behind the router) replays a bursty trace (CV² 2) at a load one
  worker alone holds only on less accurate SubNets than two; a worker process is SIGKILLed at each of
  ``--kill-at-s`` (and comes back by itself, restarted by the router). Attainment and served accuracy per second,
  with every loss and restart the router logged;
- simulated Fig. 11a: 8 workers, the paper's 3,500 q/s bursty trace (CV² 2), one worker killed every 12 s down to
  4, never restarted (``simulate_router``: the live router on simulated time, profiled latencies);
- simulated Fig. 11b: capacity at 0.999 attainment for 1 to 32 workers at a fixed SLO, and the accuracy served
  at that load.

Simulated results use this machine's profile (a CPU, not the paper's GPUs) and are labelled as simulated.

    .venv/bin/python -m superserve_bench.bench_faults --out results/bench_faults
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np

from superserve.scheduler import Profile
from superserve.serving.config import ServingConfig
from superserve.serving.simulator import simulate_router
from superserve.runtime.tritonenv import REPO_ROOT, start_server

from .faults import running_workers, worker_events
from .repository import SuperServeModel, make_repository, model_dir
from .traces import bursty

__all__ = ["main", "capacity", "over_time"]


def over_time(scheduled_s: list[float], outcomes: list[str], accuracy: list[float], bin_s: float = 1.0) -> dict:
    """Attainment and mean served accuracy per ``bin_s`` of arrival time."""
    t = np.asarray(scheduled_s)
    bins = np.floor(t / bin_s).astype(int)
    ok = np.asarray([o == "on_time" for o in outcomes])
    acc = np.asarray(accuracy, dtype=float)
    out = {"t_s": [], "attainment": [], "accuracy": [], "requests": []}
    for b in range(int(bins.max()) + 1 if len(bins) else 0):
        mask = bins == b
        if mask.any():
            served = acc[mask & ~np.isnan(acc)]
            out["t_s"].append(b * bin_s)
            out["attainment"].append(float(ok[mask].mean()))
            out["accuracy"].append(float(served.mean()) if len(served) else float("nan"))
            out["requests"].append(int(mask.sum()))
    return out


def _simulated(trace_s, profile: dict, config: ServingConfig, slo_ms: float, workers: int, **kwargs):
    """The simulated router under ``config`` (``profile``: profile.json's form), each batch its profiled latency
    plus the configured overheads."""
    return simulate_router(trace_s, profile, config, slo_ms, workers,
                           overhead_ms=(config.overhead_per_batch_ms, config.overhead_per_sample_ms), **kwargs)


def capacity(profile_dict: dict, config: ServingConfig, slo_ms: float, workers: int, target: float = 0.999,
             cv2: float = 2.0, seconds: float | None = None) -> dict:
    """The highest rate (req/s, bisected to 2%) whose bursty trace the simulated router serves at ``target``
    attainment, and the accuracy it served there. Traces of ``seconds`` (default: 20 s over the workers, at
    least 2 s: as many arrivals whatever the count)."""
    seconds = seconds or max(2.0, 20.0 / workers)
    profile = Profile.from_dict(profile_dict)
    full = min(s.latency_ns[-1] for s in profile.subnets) / 1e9
    lo, hi = 0.0, 1.2 * workers * profile.max_batch / full  # above what the fastest SubNet computes
    best = {"rate_rps": 0.0, "attainment": float("nan"), "accuracy": float("nan")}
    while hi - lo > 0.02 * hi:
        rate = (lo + hi) / 2
        records = _simulated(bursty(0.0, rate, cv2, seconds, seed=workers).arrivals_s, profile_dict, config, slo_ms,
                             workers)
        attainment = float(np.mean([r.outcome == "on_time" for r in records]))
        if attainment >= target:
            lo = rate
            best = {"rate_rps": rate, "attainment": attainment,
                    "accuracy": float(np.nanmean([r.accuracy for r in records]))}
        else:
            hi = rate
    return best


def live(out: Path, rate: float, seconds: float, kill_at_s: list[float], slo_ms: float, cv2: float,
         warm_up_s: float = 10.0) -> dict:
    """The shipped model under a bursty trace, a worker SIGKILLed at each of ``kill_at_s``, after ``warm_up_s`` of
    the same load, unmeasured (a fresh server's first seconds, not a fault, would show otherwise)."""
    from superserve.build.data import load_digits

    from .replay import replay_sync

    profile = json.loads((model_dir("superserve") / "1" / "profile.json").read_text())
    repo = make_repository(out, [SuperServeModel("superserve", workers=2)], profile, model_dir("superserve"))
    log = out / "server.log"
    server = start_server(repo, log)
    kills = []
    try:
        start = {}

        def killer():
            for i, at in enumerate(kill_at_s):
                time.sleep(max(0.0, start["at"] + at - time.time()))
                workers = running_workers(log)
                if workers:
                    worker = sorted(workers)[i % len(workers)]
                    os.kill(workers[worker], signal.SIGKILL)
                    kills.append({"t_s": time.time() - start["at"], "worker": worker, "pid": workers[worker]})

        images = load_digits().test_x.numpy()
        if warm_up_s:
            replay_sync(bursty(0.0, rate, cv2, warm_up_s, seed=10), server.grpc_url, slo_ms, images)
        trace = bursty(0.0, rate, cv2, seconds, seed=11)
        thread = threading.Thread(target=killer, daemon=True)
        start["at"] = time.time()
        thread.start()
        records = replay_sync(trace, server.grpc_url, slo_ms, images, progress=True)
        thread.join()
    finally:
        server.stop()
    events = [{"t_s": e.time_s - start["at"], "worker": e.worker, "kind": e.kind} for e in worker_events(log)
              if e.time_s >= start["at"]]
    series = over_time([r.scheduled_s for r in records], [r.outcome for r in records],
                       [r.accuracy for r in records])
    return {"rate_rps": rate, "seconds": seconds, "cv2": cv2, "slo_ms": slo_ms, "warm_up_s": warm_up_s,
            "kills": kills, "events": events,
            "attainment": float(np.mean([r.outcome == "on_time" for r in records])),
            "outcomes": {o: sum(r.outcome == o for r in records) for o in ("on_time", "late", "shed", "error")},
            "series": series}


def plot(report: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    panels = [(key, title) for key, title in (("live", "live, this machine: 2 workers, a worker SIGKILLed"),
                                              ("simulated_11a", "SIMULATED: 8 workers, one killed every 12 s"))
              if report.get(key)]
    if panels:
        fig, axes = plt.subplots(2, len(panels), figsize=(6.5 * len(panels), 5.5), squeeze=False, sharex="col")
        for col, (key, title) in enumerate(panels):
            run = report[key]
            s = run["series"]
            axes[0][col].plot(s["t_s"], s["attainment"], c="tab:blue")
            axes[0][col].set_ylim(min(0.9, min(s["attainment"], default=1.0)) - 0.01, 1.005)
            axes[0][col].set_ylabel("SLO attainment")
            axes[0][col].set_title(title, fontsize=9)
            axes[1][col].plot(s["t_s"], np.asarray(s["accuracy"]) * 100, c="tab:green")
            axes[1][col].set_ylabel("served accuracy (%)")
            axes[1][col].set_xlabel("time (s)")
            for kill in run["kills"]:
                for row in (0, 1):
                    axes[row][col].axvline(kill["t_s"], c="tab:red", ls="--", lw=0.8)
            for event in run.get("events", []):
                if event["kind"] == "up" and event["t_s"] > 0:
                    for row in (0, 1):
                        axes[row][col].axvline(event["t_s"], c="tab:gray", ls=":", lw=0.8)
        fig.tight_layout()
        paths.append(out / "fig11a_worker_losses.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    if report.get("simulated_11b"):
        rows = report["simulated_11b"]["rows"]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["workers"] for r in rows], [r["rate_rps"] for r in rows], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("workers")
        ax.set_ylabel("req/s at 0.999 attainment")
        ax.set_title(f"SIMULATED: capacity at 0.999 attainment, SLO {report['simulated_11b']['slo_ms']:g} ms "
                     "(this machine's profile)", fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(out / "fig11b_scaling.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> None:
    from .bench import load_setup

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bench_faults")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the live trace")
    p.add_argument("--rate", type=float, default=None,
                   help="the live trace's mean rate, req/s (default: 0.4x what two workers compute on the most "
                        "accurate SubNet by the profile: on 2 cores shared with Triton and the replayer, a load two "
                        "workers serve on SubNets near the top and one alone only on less accurate ones)")
    p.add_argument("--kill-at-s", type=float, nargs="*", default=[20.0, 40.0], help="when a worker is SIGKILLed")
    p.add_argument("--no-live", action="store_true", help="the simulated figures only")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    profile_dict, config, slo_ms = load_setup()
    profile = Profile.from_dict(profile_dict)
    report: dict = {"slo_ms": slo_ms}
    if not args.no_live:
        top = profile.subnets[-1].latency_ns[-1] / 1e9
        rate = args.rate or 0.4 * 2 * profile.max_batch / top
        print(f"live: {rate:.0f} req/s (CV² 2) for {args.seconds:.0f} s, SLO {slo_ms} ms, worker killed at "
              f"{args.kill_at_s} s", flush=True)
        report["live"] = live(args.out, rate, args.seconds, args.kill_at_s, slo_ms, 2.0)
        print(f"live: attainment {report['live']['attainment']:.4f}, {report['live']['outcomes']}", flush=True)
    # the paper's Fig. 11a: 8 workers at 3,500 q/s, CV² 2, one killed every 12 s down to 4
    trace = bursty(0.0, 3500.0, 2.0, 60.0, seed=1)
    kills = [(12.0 * (k + 1), k) for k in range(4)]
    records = _simulated(trace.arrivals_s, profile_dict, config, slo_ms, 8, kills=kills)
    report["simulated_11a"] = {
        "rate_rps": 3500.0, "workers": 8, "kills": [{"t_s": t, "worker": w} for t, w in kills],
        "attainment": float(np.mean([r.outcome == "on_time" for r in records])),
        "series": over_time([r.scheduled_s for r in records], [r.outcome for r in records],
                            [r.accuracy for r in records])}
    print(f"SIMULATED Fig. 11a: attainment {report['simulated_11a']['attainment']:.4f}", flush=True)
    rows = []
    for workers in (1, 2, 4, 8, 16, 32):
        row = {"workers": workers, **capacity(profile_dict, config, slo_ms, workers)}
        rows.append(row)
        print(f"SIMULATED Fig. 11b: {workers:2d} workers: {row['rate_rps']:8.0f} req/s at 0.999 attainment "
              f"(served accuracy {row['accuracy']:.3f})", flush=True)
    report["simulated_11b"] = {"slo_ms": slo_ms, "rows": rows}
    (args.out / "bench_faults.json").write_text(json.dumps(report, indent=1))
    for path in plot(report, args.out):
        print(f"plot: {path}")


if __name__ == "__main__":
    main()
