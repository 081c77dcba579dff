"""The Triton model config's ``parameters`` turned into one frozen, validated object at load time."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from ..scheduler.policies import DEFAULT_BUCKETS, POLICY_NAMES

__all__ = ["ServingConfig", "parse_config", "parameters_from_pbtxt", "config_from_pbtxt"]


@dataclass(frozen=True)
class ServingConfig:
    policy: str = "slackfit"
    num_buckets: int = DEFAULT_BUCKETS
    latency_safety: float = 0.0  # slackfit-la: plan every batch, and the backlog behind it, at (1 + this) x its latency
    max_utilization: float = 1.0  # slackfit-la: pass over SubNets that would keep the server busier than this
    rate_window_ms: float = 500.0  # time constant of the queue's arrival-rate estimate (sustained load, not bursts)
    default_slo_ms: float = 50.0
    max_slo_ms: float = 60_000.0
    max_queue: int = 512  # waiting requests; beyond it new requests are refused with UNAVAILABLE
    margin_ms: float = 1.0  # reserved from each request's slack: per-batch dispatch and hand-over cost
    overhead_per_sample_ms: float = 0.3  # added per sample to profiled latency: response sending, IPC
    overhead_adapt_rate: float = 0.05  # EWMA weight learning the per-sample overhead from real batches (0: fixed)
    num_threads: int = 1  # torch intra-op threads of the model instance
    drain_timeout_s: float = 5.0  # on unload/shutdown, serve what is queued for at most this long
    # Requests queued at least this long are asked whether their client gave up. Each question is an IPC round
    # trip; at 5 ms a loaded server asked about every request and lost 13% of its saturation throughput. A
    # request with an SLO under this is shed at its deadline anyway, so only long-SLO requests are asked.
    cancel_check_ms: float = 100.0


_BOUNDS = {
    "num_buckets": (2, 10_000),
    "latency_safety": (0.0, 100.0),
    "max_utilization": (0.01, 1.0),
    "rate_window_ms": (1.0, 600_000.0),
    "default_slo_ms": (0.001, None),
    "max_slo_ms": (0.001, None),
    "max_queue": (1, 1_000_000),
    "margin_ms": (0.0, 10_000.0),
    "overhead_per_sample_ms": (0.0, 10_000.0),
    "overhead_adapt_rate": (0.0, 1.0),
    "num_threads": (1, 1024),
    "drain_timeout_s": (0.0, 3600.0),
    "cancel_check_ms": (0.0, 3_600_000.0),
}


def parse_config(parameters: Mapping[str, object], model_name: str = "superserve") -> ServingConfig:
    """Parse Triton ``parameters`` (``{"key": {"string_value": "..."}}`` or plain ``{"key": "..."}``).

    Unknown keys are an error: a typo in config.pbtxt should fail the load, not be silently ignored.
    """
    known = {f.name: f for f in fields(ServingConfig)}
    values = {}
    for key, raw in parameters.items():
        value = raw.get("string_value") if isinstance(raw, Mapping) else raw
        if key not in known:
            raise ValueError(f"model {model_name!r}: unknown parameter {key!r}; known: {', '.join(sorted(known))}")
        kind = type(known[key].default)
        try:
            parsed = kind(value) if kind is not int else int(str(value), 10)
        except (TypeError, ValueError):
            raise ValueError(f"model {model_name!r}: parameter {key!r} must be {kind.__name__}, got {value!r}") from None
        if kind is float and not math.isfinite(parsed):
            raise ValueError(f"model {model_name!r}: parameter {key!r} must be finite, got {value!r}")
        if key in _BOUNDS:
            lo, hi = _BOUNDS[key]
            if parsed < lo or (hi is not None and parsed > hi):
                raise ValueError(f"model {model_name!r}: parameter {key!r}={parsed} must be within [{lo}, {hi}]")
        values[key] = parsed
    config = ServingConfig(**values)
    name = config.policy.strip().lower()
    if not (name in ("slackfit", "slackfit-la", "maxacc", "maxbatch", "cheapest") or name.startswith("fixed:")):
        raise ValueError(f"model {model_name!r}: unknown policy {config.policy!r}; choose one of "
                         f"{', '.join(POLICY_NAMES)}")
    if config.default_slo_ms > config.max_slo_ms:
        raise ValueError(f"model {model_name!r}: default_slo_ms {config.default_slo_ms} exceeds max_slo_ms "
                         f"{config.max_slo_ms}")
    return config


def parameters_from_pbtxt(text: str) -> dict[str, str]:
    """The ``parameters`` of a config.pbtxt written in our one-line form (for tools and tests)."""
    return dict(re.findall(r'parameters:\s*\{\s*key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', text))


def config_from_pbtxt(path: Path) -> ServingConfig:
    """The serving config a config.pbtxt file gives the model (for tools that plan like the server does)."""
    return parse_config(parameters_from_pbtxt(Path(path).read_text()))
