"""Model repositories for the benchmarks: SuperServe models (one per policy) beside plain-Triton models (one fixed
SubNet each), all sharing the built artefacts through symlinks, so one tritonserver serves every system side by
side. Configs are read and written as Triton's ``ModelConfig`` protobuf message.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from superserve.serving.config import read_model_config
from superserve.runtime.tritonenv import REPO_ROOT

__all__ = ["SuperServeModel", "NativeModel", "make_repository", "model_dir", "MODEL_DIR", "SERVED_MODELS"]

# the shipped model repository's models (the ResNet and transformer SuperNets), read from the folder itself
SERVED_MODELS = tuple(sorted(p.parent.name for p in (REPO_ROOT / "model_repository").glob("*/config.pbtxt")))
ARTEFACTS = ("supernet.pt", "subnet_norm.pt", "profile.json")  # subnet_norm.pt only for BatchNorm families


def model_dir(model: str = "superserve") -> Path:
    """A shipped SuperServe model's folder (its config.pbtxt and version 1 artefacts)."""
    if model not in SERVED_MODELS:
        raise ValueError(f"unknown model {model!r}; the model repository serves {', '.join(SERVED_MODELS)}")
    return REPO_ROOT / "model_repository" / model


MODEL_DIR = model_dir()
NATIVE_MODEL_PY = Path(__file__).with_name("native_model.py")


@dataclass(frozen=True)
class SuperServeModel:
    """The shipped SuperServe model under another name, with some serving parameters overridden, if ``outputs``
    is given only those of its outputs declared (``("LOGITS",)``: what plain Triton's model makes), with ``gpu``
    its instance on that GPU (KIND_GPU), and ``workers`` worker processes (1, unless a benchmark asks for more:
    one worker is what compares with one plain-Triton instance)."""

    name: str
    parameters: dict = field(default_factory=dict)
    outputs: tuple[str, ...] | None = None
    gpu: int | None = None
    workers: int = 1
    queue_timeout_us: int = 0  # Triton's queue policy in front of the model: reject a request queued this long


@dataclass(frozen=True)
class NativeModel:
    """One SubNet behind Triton's dynamic batcher (``native_model.py``): what a Triton user would deploy.

    ``max_queue_delay_us`` and ``preferred_batch_size`` are the knobs Triton's docs tell a user to tune; the queue
    policy (``max_queue_size``, ``queue_timeout_us`` with REJECT) is what Triton offers against overload."""

    name: str
    subnet: int
    max_queue_delay_us: int = 0
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_size: int = 0  # Triton's queue policy: refuse beyond this many queued (0: unbounded)
    queue_timeout_us: int = 0  # ... and reject a request queued longer than this (0: never)


def _superserve_config(model: SuperServeModel, shipped: model_config_pb2.ModelConfig) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    config.CopyFrom(shipped)
    config.name = model.name
    config.parameters["workers"].string_value = str(model.workers)
    for key, value in model.parameters.items():
        config.parameters[key].string_value = str(value)
    if model.outputs is not None:
        kept = [o for o in config.output if o.name in model.outputs]
        del config.output[:]
        config.output.extend(kept)
    if model.queue_timeout_us:
        policy = config.dynamic_batching.default_queue_policy
        policy.default_timeout_microseconds = model.queue_timeout_us
        policy.timeout_action = model_config_pb2.ModelQueuePolicy.REJECT
        policy.allow_timeout_override = True
    if model.gpu is not None:
        del config.instance_group[:]
        config.instance_group.add(count=1, kind=model_config_pb2.ModelInstanceGroup.KIND_GPU, gpus=[model.gpu])
    return config


def _native_config(model: NativeModel, profile: dict, shipped: model_config_pb2.ModelConfig):
    config = model_config_pb2.ModelConfig(name=model.name, backend="python", max_batch_size=profile["max_batch_size"])
    config.input.extend(shipped.input)
    config.output.extend(o for o in shipped.output if o.name == "LOGITS")
    config.dynamic_batching.max_queue_delay_microseconds = model.max_queue_delay_us
    config.dynamic_batching.preferred_batch_size.extend(model.preferred_batch_size)
    if model.max_queue_size or model.queue_timeout_us:
        policy = config.dynamic_batching.default_queue_policy
        policy.max_queue_size = model.max_queue_size
        policy.default_timeout_microseconds = model.queue_timeout_us
        policy.timeout_action = model_config_pb2.ModelQueuePolicy.REJECT
    config.instance_group.add(count=1, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    config.parameters["subnet"].string_value = str(model.subnet)
    config.parameters["num_threads"].string_value = str(profile.get("threads", 1))
    return config


def make_repository(out: Path, models: list[SuperServeModel | NativeModel], profile: dict,
                    source: Path = MODEL_DIR) -> Path:
    """Write ``out/model_repository`` holding ``models``, all serving the SuperNet of the shipped model folder
    ``source``; returns its path."""
    repo = Path(out) / "model_repository"
    if repo.exists():
        shutil.rmtree(repo)
    shipped = read_model_config(source / "config.pbtxt")
    for model in models:
        if isinstance(model, SuperServeModel):
            config, code = _superserve_config(model, shipped), source / "1" / "model.py"
        else:
            config, code = _native_config(model, profile, shipped), NATIVE_MODEL_PY
        version = repo / model.name / "1"
        version.mkdir(parents=True)
        (repo / model.name / "config.pbtxt").write_text(text_format.MessageToString(config))
        (version / "model.py").symlink_to(code.resolve())
        for artefact in ARTEFACTS:
            if (source / "1" / artefact).is_file():
                (version / artefact).symlink_to((source / "1" / artefact).resolve())
    return repo
