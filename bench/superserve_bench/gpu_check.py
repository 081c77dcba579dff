"""Serving on a GPU, end to end (``make gpu-check``, on a machine with a CUDA GPU and a CUDA build of torch).

One tritonserver serves the built ``superserve`` model twice: on GPU ``--gpu`` (instance_group KIND_GPU, so the
model's ``device`` setting resolves to ``cuda:<k>``) and on the CPU. For every served SubNet, pinned per request
over gRPC, the GPU's logits must match the CPU model's (the GPU may compute convolutions in TF32, hence the
tolerance) and agree on the predicted class; then perf_analyzer measures both at saturation. Exits non-zero on
any mismatch, and at once, saying why, where torch finds no GPU.

    .venv/bin/python -m superserve_bench.gpu_check --out results/gpu_check
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import tritonclient.grpc as grpcclient

from superserve.build.data import load_digits
from superserve.runtime.tritonenv import REPO_ROOT, start_server

from .bench_peer import PEER_SLO_MS, perf_analyzer
from .inputs import model_inputs, write_input_data
from .repository import SuperServeModel, make_repository, model_dir

__all__ = ["main"]

TOLERANCE = 2e-2  # of the largest logit: TF32 convolutions on the GPU round to 10-bit mantissas


def check(out: Path, gpu: int, seconds: float) -> dict:
    source = model_dir("superserve")
    profile = json.loads((source / "1" / "profile.json").read_text())
    repo = make_repository(out, [SuperServeModel("superserve_gpu", gpu=gpu), SuperServeModel("superserve_cpu")],
                           profile, source)
    server = start_server(repo, out / "server.log")
    images = load_digits().test_x[:16].numpy()
    report = {"gpu": torch.cuda.get_device_name(gpu), "subnets": [], "saturation": {}}
    try:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("INPUT", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        for index in range(len(profile["subnets"])):
            parameters = {"subnet": index, "slo_ms": PEER_SLO_MS}
            on_gpu = client.infer("superserve_gpu", [tensor], parameters=parameters)
            on_cpu = client.infer("superserve_cpu", [tensor], parameters=parameters).as_numpy("LOGITS")
            logits = on_gpu.as_numpy("LOGITS")
            error = float(np.abs(logits - on_cpu).max() / np.abs(on_cpu).max())
            report["subnets"].append({"subnet": index, "served_by": int(on_gpu.as_numpy("SUBNET")[0, 0]),
                                      "relative_error": error,
                                      "same_class": bool((logits.argmax(1) == on_cpu.argmax(1)).all())})
        data = write_input_data(out / "perf_input.json", model_inputs(model_dir(), 32))
        for model in ("superserve_gpu", "superserve_cpu"):
            report["saturation"][model] = perf_analyzer(server, model, data, out, 64, seconds,
                                                        {"slo_ms": PEER_SLO_MS})
    finally:
        server.stop()
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "gpu_check")
    p.add_argument("--gpu", type=int, default=0, help="the GPU to serve on")
    p.add_argument("--seconds", type=float, default=3.0, help="perf_analyzer window at saturation")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU: torch finds none on this machine (or is a CPU build); run this where one is")
    args.out.mkdir(parents=True, exist_ok=True)
    report = check(args.out, args.gpu, args.seconds)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    bad = [s for s in report["subnets"] if s["served_by"] != s["subnet"] or not s["same_class"]
           or s["relative_error"] > TOLERANCE]
    for s in report["subnets"]:
        print(f"SubNet {s['subnet']:2d}: relative error {s['relative_error']:.2e}, same classes {s['same_class']}")
    for model, figures in report["saturation"].items():
        print(f"{model}: {figures['throughput_rps']:.0f} req/s at concurrency 64, "
              f"{figures['requests_per_execution']:.1f} requests per execute()")
    if bad:
        sys.exit(f"{len(bad)} SubNets differ on {report['gpu']}: {bad}")
    print(f"serving on {report['gpu']}: every SubNet matches the CPU")


if __name__ == "__main__":
    main()
