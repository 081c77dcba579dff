"""Run perf_analyzer (from the pinned tritonclient wheel) against a running SuperServe server.

Over gRPC with ``--request-parameter slo_ms:...``; a Poisson rate, or a saved trace replayed through
``--request-intervals`` as a second, independent client.

    .venv/bin/python -m superserve_bench.perf --rate 200 --slo-ms 30
    .venv/bin/python -m superserve_bench.perf --trace results/bench/traces/<name>.json --slo-ms 30
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from superserve.runtime.tritonenv import ensure_triton_home, perf_analyzer_env

from .inputs import describe_inputs, model_inputs, write_input_data
from .repository import model_dir
from .traces import Trace

__all__ = ["perf_command", "main"]


def perf_command(url: str, slo_ms: float, input_data: Path, rate: float | None = None,
                 intervals: Path | None = None, interval_ms: int = 5000, export: Path | None = None,
                 model: str = "superserve", max_trials: int = 3) -> list[str]:
    """perf_analyzer over gRPC with an SLO parameter: at a Poisson ``rate``, on ``intervals``, or (neither)
    at concurrency 1."""
    binary = Path(sys.executable).parent / "perf_analyzer"
    cmd = [str(binary), "-m", model, "-u", url, "-i", "grpc", "--input-data", str(input_data),
           "--request-parameter", f"slo_ms:{int(round(slo_ms))}:int", "--measurement-interval", str(interval_ms),
           "--stability-percentage", "50", "--max-trials", str(max_trials)]
    if intervals is not None:
        cmd += ["--request-intervals", str(intervals)]
    elif rate is not None:
        cmd += ["--request-rate-range", f"{rate:g}", "--request-distribution", "poisson"]
    if export is not None:
        cmd += ["--profile-export-file", str(export)]
    return cmd


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="127.0.0.1:8001", help="gRPC address of the server")
    p.add_argument("--slo-ms", type=float, default=50.0, help="integer milliseconds on the wire")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, default=100.0, help="Poisson request rate (req/s)")
    load.add_argument("--trace", type=Path, help="replay a saved trace (superserve_bench.traces JSON)")
    p.add_argument("--measurement-ms", type=int, default=5000)
    p.add_argument("--export", type=Path, default=None, help="perf_analyzer per-request timestamps (JSON)")
    p.add_argument("--model", default="superserve", help="the served model, e.g. superserve_vit or ofa_resnet50")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="the model's folder, for its input shape (default: model_repository/<model>)")
    p.add_argument("--images", type=Path, default=None,
                   help="a folder of images to send to an image model (preprocessed as its profile.json says); "
                        "default: the digits for the shipped models, synthetic inputs of the model's shape otherwise")
    args = p.parse_args(argv)
    try:
        folder = args.model_dir or model_dir(args.model)
        inputs = model_inputs(folder, 32, args.images)
    except (ValueError, FileNotFoundError) as exc:
        p.error(str(exc))
    print(f"perf_analyzer -> {args.model}: {describe_inputs(folder, args.images)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        intervals = None
        if args.trace:
            intervals = Path(tmp) / "intervals.txt"
            Trace.load(args.trace).write_request_intervals(intervals)
        data = write_input_data(Path(tmp) / "input.json", inputs)
        cmd = perf_command(args.url, args.slo_ms, data, None if args.trace else args.rate, intervals,
                           args.measurement_ms, args.export, args.model)
        sys.exit(subprocess.call(cmd, env=perf_analyzer_env(ensure_triton_home())))


if __name__ == "__main__":
    main()
