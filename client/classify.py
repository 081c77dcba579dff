"""Send a few inputs to a SuperServe model with a latency target; print the prediction, the SubNet that served it
and that SubNet's accuracy.

Needs only ``tritonclient`` and ``numpy`` (and Pillow for ``--image``): copy this folder into your own project.
The model's input shape comes from the server (its model metadata), and decides what is sent:
- a digit model (1x28x28, the shipped ``superserve`` and ``superserve_vit``): ten held-out MNIST images (one per
  class) stored beside this file in ``sample_digits.npz``;
- an image model (3xRxR, e.g. one built with ``make ofa-model``): the image files given with ``--image``, resized,
  centre-cropped and normalised as ImageNet models expect (what the build wrote in ``profile.json``'s input_spec).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DEFAULT_URLS = {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001"}
SAMPLE = Path(__file__).with_name("sample_digits.npz")
DIGITS_SHAPE = [1, 28, 28]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875  # the shorter side is resized to resolution / 0.875, then centre-cropped


def load_sample() -> tuple[np.ndarray, np.ndarray]:
    """Images as FP32 [10, 1, 28, 28] in [0, 1] (the wire format) and their labels."""
    with np.load(SAMPLE) as data:
        return (data["images"].astype(np.float32) / 255.0)[:, None], data["labels"]


def load_image(path: Path, resolution: int) -> np.ndarray:
    """One image file -> FP32 [3, resolution, resolution]: ImageNet evaluation's resize, centre crop and
    normalisation (the same tensor the build measured accuracy on)."""
    from PIL import Image  # only image models need Pillow

    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = resolution / CROP_FRACTION / min(image.size)
        size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
        image = image.resize(size, Image.BILINEAR)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        pixels = np.asarray(image.crop((left, top, left + resolution, top + resolution)), np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32).transpose(2, 0, 1)


def input_shape(client, protocol: str, model: str) -> list[int]:
    """The model's input shape without the batch dimension, from the server."""
    metadata = client.get_model_metadata(model, as_json=True) if protocol == "grpc" else \
        client.get_model_metadata(model)
    return [int(d) for d in metadata["inputs"][0]["shape"]][1:]


def run(protocol: str, argv: list[str] | None = None) -> None:
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    p = argparse.ArgumentParser(description=f"{__doc__.splitlines()[0]} Protocol: {protocol}.")
    p.add_argument("--url", default=DEFAULT_URLS[protocol])
    p.add_argument("--model", default="superserve", help="the served model, e.g. superserve_vit or ofa_resnet50")
    p.add_argument("--slo-ms", type=float, default=50.0, help="latency target counted from arrival at the server")
    p.add_argument("--count", type=int, default=5, help="how many digits to send to a digit model (at most 10)")
    p.add_argument("--image", type=Path, action="append", default=[],
                   help="an image file to send to an image model (3xRxR input; needs Pillow); repeatable")
    args = p.parse_args(argv)
    client = module.InferenceServerClient(args.url)
    shape = input_shape(client, protocol, args.model)
    if args.image:
        if len(shape) != 3 or shape[0] != 3:
            p.error(f"{args.model} takes inputs of shape {shape}, not images: leave out --image")
        inputs = [(str(path), load_image(path, shape[-1])) for path in args.image]
    elif shape == DIGITS_SHAPE:
        images, labels = load_sample()
        inputs = [(f"digit {int(labels[i])}", images[i]) for i in range(min(args.count, len(images)))]
    else:
        p.error(f"{args.model} takes inputs of shape {shape}: give image files with --image")
    for name, x in inputs:
        tensor = module.InferInput("INPUT", [1, *x.shape], "FP32")
        tensor.set_data_from_numpy(x[None])
        result = client.infer(args.model, [tensor], parameters={"slo_ms": args.slo_ms})
        predicted = int(np.argmax(result.as_numpy("LOGITS")[0]))
        print(f"{name}: predicted {predicted} by SubNet {int(result.as_numpy('SUBNET')[0, 0])} "
              f"(accuracy {float(result.as_numpy('ACCURACY')[0, 0]):.3f})")
