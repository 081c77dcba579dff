"""Send a few held-out digits with a latency target; print the prediction, the SubNet and its accuracy."""

from __future__ import annotations

import argparse

import numpy as np

from superserve.data import load_digits

DEFAULT_URLS = {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001"}


def run(protocol: str, argv: list[str] | None = None) -> None:
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    p = argparse.ArgumentParser(description=f"{__doc__} Protocol: {protocol}.")
    p.add_argument("--url", default=DEFAULT_URLS[protocol])
    p.add_argument("--slo-ms", type=float, default=50.0, help="latency target counted from arrival at the server")
    p.add_argument("--count", type=int, default=5, help="how many digits to send")
    args = p.parse_args(argv)
    data = load_digits()
    client = module.InferenceServerClient(args.url)
    for n in range(args.count):
        i = n * 101 % len(data.held_out_x)  # held-out digits are grouped by class: spread the picks
        image = data.held_out_x[i:i + 1].numpy()
        tensor = module.InferInput("INPUT", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        result = client.infer("superserve", [tensor], parameters={"slo_ms": args.slo_ms})
        predicted = int(np.argmax(result.as_numpy("LOGITS")[0]))
        print(f"digit {int(data.held_out_y[i])}: predicted {predicted} by SubNet "
              f"{int(result.as_numpy('SUBNET')[0, 0])} (held-out accuracy {float(result.as_numpy('ACCURACY')[0, 0]):.3f})")
