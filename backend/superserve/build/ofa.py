"""Turn your own OFA ResNet-50 checkpoint and images into a served SuperServe model. Nothing is downloaded.

    .venv/bin/python -m superserve.build.ofa --checkpoint ofa_resnet50.pth --images DIR \\
        --out model_repository/ofa_resnet50 [--resolution 224] [--subnets subnets.json | --candidates 40]

``--checkpoint``: a local file in OFA's format (``{"state_dict": ...}`` with OFA's key names, as OFA publishes
its ResNet-50 SuperNet). ``--images``: a local folder with one sub-folder of images per class, split per class
into calibration, validation and test images (``superserve.build.imagefolder``: a folder named by an ILSVRC-2012 synset
gets that synset's ImageNet class index, the checkpoint's output for it; other names need ``--classes``).
``--subnets``: a JSON list of SubNets in OFA's ``{"d", "e", "w"}`` form (or ours); without it, the largest, the
smallest and ``--candidates`` sampled SubNets compete. Images are kept on disk, not in memory; the latency profile
is full or quick (``--profiling``; auto picks by an estimate it prints).

Writes a Triton model folder: ``config.pbtxt`` (input ``INPUT`` FP32 [3, R, R], ImageNet-normalised, channels
first; outputs ``LOGITS``, ``SUBNET``, ``ACCURACY``) and version ``1/`` with ``supernet.pt``, ``subnet_norm.pt``,
``profile.json`` and the shared adapter ``model.py``. Inside the model repository, ``make serve`` then serves it
beside the default models.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ..serving.config import ServingConfig
from ..serving.contract import OPTIONAL_OUTPUTS
from ..supernet import OFA_RESNET50, ElasticResNet
from ..supernet.artefacts import save_weights
from ..supernet.checkpoint import load_ofa_checkpoint
from .imagefolder import load_image_folder
from .pipeline import MAX_BATCH, PROFILING_MODES, build, suggested_slo_ms, timed

__all__ = ["build_ofa", "model_config", "mapping_warning", "main"]

ADAPTER = Path(__file__).resolve().parents[3] / "model_repository" / "superserve" / "1" / "model.py"  # the checkout's
HANDOVER_BATCHES = 8  # one execute() takes up to this many largest batches, as the shipped models do
CHANCE_FACTOR = 5  # a best accuracy under this many times chance (1 / classes present), or under halfway from
# chance to 1 for a few classes, gets a warning


def mapping_warning(best_accuracy: float, classes: dict[str, int]) -> str | None:
    """A warning when even the most accurate SubNet scores near chance on the user's images: with a trained
    checkpoint that almost always means the folders were scored against the wrong outputs (or preprocessed
    differently from training). None when the accuracy is clearly above chance."""
    chance = 1.0 / len(classes)
    if best_accuracy >= min(CHANCE_FACTOR * chance, (1.0 + chance) / 2):
        return None
    shown = ", ".join(f"{name} -> {index}" for name, index in sorted(classes.items(), key=lambda kv: kv[1])[:3])
    return (f"the most accurate SubNet scores {best_accuracy:.3f} on the test images, near chance for "
            f"{len(classes)} classes ({chance:.3f}). If the checkpoint is trained, check the class mapping (folder -> "
            f"output index: {shown}{', ...' if len(classes) > 3 else ''}; synset folders get their ILSVRC-2012 "
            "index, --classes gives yours) and that the images are natural RGB photos preprocessed as the "
            "checkpoint was trained (profile.json's input_spec).")


def model_config(name: str, resolution: int, num_classes: int, max_batch: int, device: str = "cpu",
                 default_slo_ms: float | None = None, slo_source: str = "") -> str:
    """``config.pbtxt`` text for a SuperServe model of 3xRxR images (the shipped models' serving defaults), its
    instance on ``device`` (``cuda:<k>``: KIND_GPU on GPU k; the model's ``device`` setting follows it), and the
    SLO of a request that names none (``slo_source`` says where it came from, in a comment)."""
    config = model_config_pb2.ModelConfig(name=name, backend="python", max_batch_size=max_batch * HANDOVER_BATCHES)
    fp32, int32 = model_config_pb2.DataType.TYPE_FP32, model_config_pb2.DataType.TYPE_INT32
    config.input.add(name="INPUT", data_type=fp32, dims=[3, resolution, resolution])
    config.output.add(name="LOGITS", data_type=fp32, dims=[num_classes])
    for output, (kind, dims) in OPTIONAL_OUTPUTS.items():
        config.output.add(name=output, data_type=fp32 if kind == "TYPE_FP32" else int32, dims=dims)
    config.dynamic_batching.max_queue_delay_microseconds = 0
    group = model_config_pb2.ModelInstanceGroup
    if device.startswith("cuda"):
        config.instance_group.add(count=1, kind=group.KIND_GPU, gpus=[int(device.partition(":")[2] or 0)])
    else:
        config.instance_group.add(count=1, kind=group.KIND_CPU)
    header = [f"# {name}: a SuperServe model built by superserve.build.ofa (docs/configuration.md lists its settings).",
              f"# One execute() hand-over takes up to {HANDOVER_BATCHES} of its largest batches ({max_batch})."]
    if default_slo_ms is not None:
        config.parameters["default_slo_ms"].string_value = f"{default_slo_ms:g}"
        if default_slo_ms > ServingConfig.max_slo_ms:  # a slow device: let requests ask for as much
            config.parameters["max_slo_ms"].string_value = f"{default_slo_ms * 10:g}"
        header.append(f"# default_slo_ms {default_slo_ms:g}: {slo_source or 'given at build time'}.")
    return "\n".join(header) + "\n" + text_format.MessageToString(config)


def build_ofa(checkpoint: Path, images: Path, out: Path, resolution: int = 224, subnets: list | None = None,
              candidates: int = 40, max_batch: int = MAX_BATCH, repeats: int = 7, threads: int = 1,
              calibration: float = 0.2, validation: float = 0.3, per_class: int | None = None,
              classes: list[str] | None = None, seed: int = 0, device: str = "cpu", progress: bool = True,
              slo_ms: float | None = None, profiling: str = "auto") -> dict:
    """Build the model folder ``out`` (its name is the Triton model's); returns the profile. ``slo_ms``: the SLO of
    a request that names none (default: derived from the profile, ``suggested_slo_ms``)."""
    out = Path(out)
    version = out / "1"
    net = ElasticResNet(OFA_RESNET50)
    load_ofa_checkpoint(net, checkpoint)
    version.mkdir(parents=True, exist_ok=True)
    save_weights(net, version)
    del net
    seconds: dict = {}
    with timed(seconds, "reading"):
        data = load_image_folder(images, resolution, calibration, validation, per_class, classes, seed, progress)
    if max(data.classes.values()) >= OFA_RESNET50.num_classes:
        raise ValueError(f"the class list names {max(data.classes.values()) + 1} outputs; the SuperNet has "
                         f"{OFA_RESNET50.num_classes}")
    pool = None if subnets is None else [OFA_RESNET50.parse(s) for s in subnets]
    profile = build(version, candidates, repeats, threads, seed, progress=progress, data=data, subnets=pool,
                    max_batch=max_batch, device=device, profiling=profiling, seconds=seconds)
    profile["classes"] = data.classes
    warning = mapping_warning(max(s["accuracy"] for s in profile["subnets"]), data.classes)
    profile["warnings"] = [warning] if warning else []
    (version / "profile.json").write_text(json.dumps(profile, indent=1))
    if slo_ms is None:
        slo_ms = suggested_slo_ms(profile, ServingConfig.margin_ms)
        source = (f"derived from the profile: twice the most accurate SubNet's latency at batch {max_batch} on "
                  f"{profile['device']}, plus serving allowances (pass --slo-ms to choose)")
    else:
        source = "given with --slo-ms"
    (out / "config.pbtxt").write_text(model_config(out.name, resolution, OFA_RESNET50.num_classes, max_batch,
                                                   device, slo_ms, source))
    adapter = version / "model.py"
    if adapter.is_symlink() or adapter.exists():
        adapter.unlink()
    adapter.symlink_to(os.path.relpath(ADAPTER, version))
    return profile


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="local OFA ResNet-50 checkpoint file")
    p.add_argument("--images", type=Path, required=True, help="local folder of class folders of images")
    p.add_argument("--out", type=Path, required=True, help="the Triton model folder to write, e.g. "
                                                            "model_repository/ofa_resnet50")
    p.add_argument("--resolution", type=int, default=224, help="input height and width the model serves")
    p.add_argument("--subnets", type=Path, help="JSON list of candidate SubNets (OFA's {d, e, w} or ours)")
    p.add_argument("--candidates", type=int, default=40, help="sampled candidates when --subnets is not given")
    p.add_argument("--max-batch", type=int, default=MAX_BATCH, help="largest batch profiled and served")
    p.add_argument("--repeats", type=int, default=7, help="timed forward passes per (SubNet, batch size)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while profiling; serve with the same")
    p.add_argument("--calibration", type=float, default=0.2, help="fraction of each class for SubnetNorm")
    p.add_argument("--validation", type=float, default=0.3, help="fraction of each class that picks SubNets; "
                                                                 "the rest is the test split")
    p.add_argument("--per-class", type=int, help="read at most this many images per class (they are kept on disk, "
                                                 "150 kB per 224x224 image, not in memory)")
    p.add_argument("--classes", type=Path, help="text file, one class folder name per line: line k names the folder "
                                                "of the checkpoint's output k (needed only for folders that are "
                                                "not ILSVRC-2012 synsets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, or cuda:<k>: where it is profiled and served")
    p.add_argument("--profiling", choices=PROFILING_MODES, default="auto",
                   help="latency profile: full (every batch size), quick (powers of two and the largest, 3 passes, "
                        "the rest interpolated), auto (full when its estimate is within 15 minutes; the build says "
                        "which, and profile.json records it)")
    p.add_argument("--slo-ms", type=float, default=None,
                   help="latency target of a request that names none (default: twice the most accurate SubNet's "
                        "latency at the largest batch, plus allowances; the config says which)")
    args = p.parse_args(argv)
    subnets = json.loads(args.subnets.read_text()) if args.subnets else None
    classes = args.classes.read_text().split() if args.classes else None
    try:
        profile = build_ofa(args.checkpoint, args.images, args.out, args.resolution, subnets, args.candidates,
                            args.max_batch, args.repeats, args.threads, args.calibration, args.validation,
                            args.per_class, classes, args.seed, args.device, slo_ms=args.slo_ms,
                            profiling=args.profiling)
    except (ValueError, FileNotFoundError) as exc:
        p.error(str(exc))
    served = profile["subnets"]
    for warning in profile["warnings"]:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"{len(served)} SubNets served, accuracy {served[0]['accuracy']:.3f}..{served[-1]['accuracy']:.3f} on "
          f"{profile['splits']['test']['size']} test images -> {args.out} (serve it: make serve)")


if __name__ == "__main__":
    main()
