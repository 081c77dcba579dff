"""Soak benchmark: a long bursty trace at a fraction of measured capacity against a real tritonserver.

Replays the trace in back-to-back chunks (each open loop) and samples the resident memory of the
server and its Python stub after each chunk. Reports requests lost (must be 0), SLO attainment,
and memory growth after warm-up.

    .venv/bin/python -m superserve_bench.soak --minutes 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from superserve.runtime.tritonenv import REPO_ROOT, start_server

from .bench_peer import pinned_capacity
from .inputs import model_inputs, write_input_data
from .metrics import summarise
from .replay import replay_sync
from .repository import model_dir
from .traces import bursty

__all__ = ["main"]


def _rss_kb(root_pid: int) -> int:
    """Resident memory of the server process and its descendants (Python backend stubs, their worker processes)."""
    pids, parents = [str(root_pid)], [str(root_pid)]
    while parents:
        parents = subprocess.run(["pgrep", "-P", ",".join(parents)], capture_output=True, text=True).stdout.split()
        pids += parents
    total = 0
    for pid in pids:
        try:
            total += sum(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
        except OSError:  # it ended while we read
            pass
    return total


def main(argv: list[str] | None = None) -> None:
    from tqdm import tqdm

    from superserve.build.data import load_digits

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--load", type=float, default=0.7, help="fraction of the most accurate SubNet's measured capacity")
    p.add_argument("--cv2", type=float, default=2.0, help="burstiness of the variable half of the trace")
    p.add_argument("--slo-ms", type=float, default=None, help="default: the benchmark's SLO (cost model)")
    p.add_argument("--chunk-s", type=float, default=30.0)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "soak.json")
    args = p.parse_args(argv)
    from .bench import load_setup

    profile, _, slo_ms = load_setup(args.slo_ms)
    images = load_digits().test_x.numpy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server = start_server(REPO_ROOT / "model_repository", args.out.with_suffix(".server.log"))
    chunks = max(2, int(args.minutes * 60 / args.chunk_s))
    records, memory = [], []
    try:
        data = write_input_data(args.out.parent / "soak_input.json", model_inputs(model_dir(), 32))
        capacity = {"top_rps": pinned_capacity(server, data, args.out.parent, len(profile["subnets"]) - 1)}
        rate = args.load * capacity["top_rps"]
        for chunk in tqdm(range(chunks), desc=f"soak at {rate:.0f} req/s", unit="chunk"):
            trace = bursty(rate / 2, rate / 2, args.cv2, args.chunk_s, seed=chunk)
            records += replay_sync(trace, server.grpc_url, slo_ms, images)
            memory.append(_rss_kb(server.process.pid))
            time.sleep(0.2)
    finally:
        server.stop()
    summary = summarise(records, slo_ms)
    warm = memory[1] if len(memory) > 1 else memory[0]
    report = {"minutes": chunks * args.chunk_s / 60, "rate_rps": rate, "capacity": capacity, "slo_ms": slo_ms,
              "lost": summary["requests"] - sum(summary["outcomes"].values()),
              "rss_kb_after_warmup": warm, "rss_kb_end": memory[-1],
              "rss_growth_after_warmup": (memory[-1] - warm) / warm, "rss_kb_per_chunk": memory,
              "summary": summary}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{summary['requests']} requests over {report['minutes']:.1f} min at {rate:.0f} req/s: lost {report['lost']}, "
          f"SLO attainment {summary['slo_attainment']:.4f}, mean serving accuracy "
          f"{100 * summary['mean_serving_accuracy']:.2f}%, outcomes {summary['outcomes']}, RSS "
          f"{warm / 1024:.0f} -> {memory[-1] / 1024:.0f} MB ({100 * report['rss_growth_after_warmup']:+.1f}% after "
          f"warm-up), client send error p99 {summary['client_send_error_ms']['p99']:.1f} ms -> {args.out}")


if __name__ == "__main__":
    main()
