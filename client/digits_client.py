"""Send a few digits to SuperServe with a latency target; print the prediction, the SubNet and its accuracy.

Needs only ``tritonclient`` and ``numpy``: copy this folder into your own project. The digits are ten
held-out MNIST images (one per class) stored beside this file in ``sample_digits.npz``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DEFAULT_URLS = {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001"}
SAMPLE = Path(__file__).with_name("sample_digits.npz")


def load_sample() -> tuple[np.ndarray, np.ndarray]:
    """Images as FP32 [10, 1, 28, 28] in [0, 1] (the wire format) and their labels."""
    with np.load(SAMPLE) as data:
        return (data["images"].astype(np.float32) / 255.0)[:, None], data["labels"]


def run(protocol: str, argv: list[str] | None = None) -> None:
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    p = argparse.ArgumentParser(description=f"{__doc__.splitlines()[0]} Protocol: {protocol}.")
    p.add_argument("--url", default=DEFAULT_URLS[protocol])
    p.add_argument("--model", default="superserve")
    p.add_argument("--slo-ms", type=float, default=50.0, help="latency target counted from arrival at the server")
    p.add_argument("--count", type=int, default=5, help="how many digits to send (at most 10)")
    args = p.parse_args(argv)
    images, labels = load_sample()
    client = module.InferenceServerClient(args.url)
    for i in range(min(args.count, len(images))):
        tensor = module.InferInput("INPUT", [1, *images.shape[1:]], "FP32")
        tensor.set_data_from_numpy(images[i:i + 1])
        result = client.infer(args.model, [tensor], parameters={"slo_ms": args.slo_ms})
        predicted = int(np.argmax(result.as_numpy("LOGITS")[0]))
        print(f"digit {int(labels[i])}: predicted {predicted} by SubNet {int(result.as_numpy('SUBNET')[0, 0])} "
              f"(accuracy {float(result.as_numpy('ACCURACY')[0, 0]):.3f})")
