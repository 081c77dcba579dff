"""The model's serving settings: one typed object whose defaults are the shipped behaviour.

``config.pbtxt`` sets only what a deployment changes, as Triton ``parameters``; a model config without any
``parameters`` serves exactly like the shipped one. Unknown or malformed parameters fail the load with a
message naming the model and the parameter. Tools read a ``config.pbtxt`` with Triton's own ``ModelConfig``
message (``tritonclient``'s ``model_config_pb2``) and protobuf's text format.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from ..scheduler.load import LoadEstimate
from ..scheduler.policies import (DEFAULT_BUCKETS, DEFAULT_POLICY, LA_RULES, Policy, check_policy_name,
                                  check_rules_off, make_policy)
from ..scheduler.profile import Profile
from .remote import parse_remote

__all__ = ["ServingConfig", "PARAMETERS", "parse_config", "resolve_device", "read_model_config", "config_from_pbtxt",
           "configured_policy", "configured_load"]


@dataclass(frozen=True)
class ServingConfig:
    policy: str = DEFAULT_POLICY
    rules_off: str = ""
    num_buckets: int = DEFAULT_BUCKETS
    latency_safety: float = 0.2
    max_utilization: float = 0.85
    rate_window_ms: float = 500.0
    burst_memory_ms: float = 3000.0
    default_slo_ms: float = 50.0
    max_slo_ms: float = 60_000.0
    margin_ms: float = 3.0
    overhead_per_batch_ms: float = 0.3
    overhead_per_sample_ms: float = 0.05
    overhead_adapt_rate: float = 0.01
    slowdown_adapt_rate: float = 0.5
    num_threads: int = 1
    idle_gap_ms: float = 1.0
    max_hold_ms: float = 20.0
    idle_gap_per_answer_ms: float = 0.25
    arrival_spread: float = 1.0
    cancel_check_ms: float = 100.0
    device: str = "auto"
    workers: int = 1
    worker_devices: str = ""
    remote_workers: str = ""
    worker_timeout_factor: float = 20.0
    worker_timeout_min_ms: float = 1000.0

    @property
    def routed(self) -> bool:
        """Served by the router over worker processes (else in the model's own process, one round per call)."""
        return self.workers > 1 or bool(self.remote_list())

    def remote_list(self) -> list[str]:
        """The remote workers' addresses, ``host:port`` or ``host:port/model``."""
        return [a.strip() for a in self.remote_workers.split(",") if a.strip()]

    def worker_device_list(self, device: str) -> list[str]:
        """Each worker's device: ``worker_devices`` if set, else ``device`` (the model's, resolved) for all."""
        if self.worker_devices.strip():
            return [d.strip() for d in self.worker_devices.split(",")]
        return [device] * self.workers


# parameter -> (lower bound, upper bound or None, what it does): the configuration reference (docs/configuration.md)
PARAMETERS = {
    "policy": (None, None, "the scheduling policy (see POLICIES in scheduler/policies.py)"),
    "rules_off": (None, None, "slackfit-la: rules to switch off, comma-separated, to measure what each buys: "
                              + "; ".join(f"{name} ({what})" for name, what in LA_RULES.items())
                              + ". Its other rules are settings: max_utilization 1, burst_memory_ms 0, latency_safety"
                                " 0 turn theirs off"),
    "num_buckets": (2, 10_000, "slackfit: latency buckets between the fastest and the slowest (SubNet, batch)"),
    "latency_safety": (0.0, 100.0, "slackfit-la: plan every batch, and the backlog behind it, at (1 + this) x its "
                                   "cost-model latency; also when an answer may wait for the rest of its round"),
    "max_utilization": (0.01, 1.0, "slackfit-la: pass over SubNets that would keep the server busier than this at "
                                   "the recent arrival rate (1 turns the cap off)"),
    "rate_window_ms": (1.0, 600_000.0, "time constant of the arrival-rate estimate the utilization cap reads"),
    "burst_memory_ms": (0.0, 600_000.0, "slackfit-la: how long a burst's arrival rate is remembered (fading) when "
                                        "budgeting for the requests that arrive during a batch (0: not at all)"),
    "default_slo_ms": (0.001, None, "latency target of a request that sends no slo_ms"),
    "max_slo_ms": (0.001, None, "the largest slo_ms a request may ask for"),
    "margin_ms": (0.0, 10_000.0, "reserved from every slack for what the model cannot see: Triton's hand-over "
                                 "and sending the answer"),
    "overhead_per_batch_ms": (0.0, 10_000.0, "starting serving cost of a batch added to its profiled latency "
                                             "(deciding, gathering, sending; learned from real batches)"),
    "overhead_per_sample_ms": (0.0, 10_000.0, "starting serving cost of each sample of a batch, on top of "
                                              "overhead_per_batch_ms"),
    "overhead_adapt_rate": (0.0, 1.0, "how fast the serving costs are learned: each batch (for the cost between "
                                      "rounds, each round) takes this share of the evidence (0: fixed)"),
    "slowdown_adapt_rate": (0.0, 1.0, "how fast the policy learns that batches run slower than planned (other work "
                                      "on the cores) and plans with it; per full batch (0: never)"),
    "num_threads": (1, 1024, "torch intra-op threads of the model instance (profile.json says what it was "
                             "measured with)"),
    "idle_gap_ms": (0.0, 1_000.0, "a round starting this long after the previous one ended found the model idle: "
                                  "its requests arrived just now (else: while the previous round ran)"),
    "max_hold_ms": (0.0, 10_000.0, "an answer waits for later batches of its round at most this long (planned), "
                                   "then goes out early from the sender thread (0: every batch's answers at once)"),
    "idle_gap_per_answer_ms": (0.0, 1_000.0, "added to idle_gap_ms for each answer the previous round returned "
                                             "(Triton turns them into responses before the next round)"),
    "arrival_spread": (0.0, 1.0, "how a round dates its requests, which Triton hands over undated: 1 spreads them "
                                 "evenly from the earliest the oldest can have arrived up to now; 0 dates every one "
                                 "at that earliest time, a bound none is older than"),
    "cancel_check_ms": (0.0, 3_600_000.0, "only requests waiting at least this long are asked whether their "
                                          "client gave up (each question is an IPC round trip)"),
    "device": (None, None, "where the SuperNet runs: auto follows the instance_group (KIND_GPU: cuda:<its GPU>, "
                           "else cpu); or cpu, cuda, cuda:<k>"),
    "workers": (0, 1024, "local worker processes. 1 (and no remote workers): the SuperNet runs in the model's own "
                         "process, one round per execute(); more: a router with one EDF queue over that many worker "
                         "processes, each holding the SuperNet, restarted when lost"),
    "worker_devices": (None, None, "with workers > 1: a device per worker, comma-separated (cpu, cuda:<k>), e.g. "
                                   "cuda:0,cuda:1; empty: every worker on device"),
    "remote_workers": (None, None, "more workers behind the router: other tritonservers serving the "
                                   "superserve_worker model (make worker-host), comma-separated host:port (gRPC) or "
                                   "host:port/model"),
    "worker_timeout_factor": (1.0, 10_000.0, "a worker that has not answered a batch within this many times its "
                                             "planned latency is lost (killed and restarted)"),
    "worker_timeout_min_ms": (1.0, 3_600_000.0, "... but never sooner than this"),
}
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
# parameters that Triton's Python backend reads itself (python_be.cc), not settings of ours
TRITON_PARAMETERS = frozenset({"EXECUTION_ENV_PATH", "FORCE_CPU_ONLY_INPUT_TENSORS"})


def resolve_device(setting: str, instance_kind: str, instance_device_id: int | str = 0) -> str:
    """The torch device a model instance runs on: ``device`` as set, or for ``auto`` where Triton placed the
    instance (``args["model_instance_kind"]``, ``args["model_instance_device_id"]``)."""
    if setting != "auto":
        return setting
    return f"cuda:{int(instance_device_id)}" if instance_kind == "GPU" else "cpu"


def configured_policy(config: ServingConfig, profile: Profile, latency_safety: float | None = None,
                      workers: int = 1) -> Policy:
    """The policy ``config`` sets, over ``profile``: what the serving loop, the router, the simulator and the
    benchmarks all make. ``latency_safety``: the one to plan with (default the config's)."""
    return make_policy(config.policy, profile, int(config.margin_ms * 1e6), config.num_buckets,
                       config.latency_safety if latency_safety is None else latency_safety,
                       config.max_utilization, workers, check_rules_off(config.rules_off))


def configured_load(config: ServingConfig, max_batch: int) -> LoadEstimate:
    """The load estimate a serving loop keeps under ``config``: its rate window and burst memory, a hand-over
    counting as a burst once it holds a full batch (``max_batch``, the profile's largest)."""
    return LoadEstimate(int(config.rate_window_ms * 1e6), burst_memory_ns=int(config.burst_memory_ms * 1e6),
                        round_min_samples=max_batch)


def parse_config(parameters: Mapping[str, object], model_name: str = "superserve") -> ServingConfig:
    """Parse Triton ``parameters`` (``{"key": {"string_value": "..."}}`` or plain ``{"key": "..."}``)."""
    known = {f.name: f for f in fields(ServingConfig)}
    values = {}
    for key, raw in parameters.items():
        value = raw.get("string_value") if isinstance(raw, Mapping) else raw
        if key in TRITON_PARAMETERS:
            continue
        if key not in known:
            raise ValueError(f"model {model_name!r}: unknown parameter {key!r}; known: {', '.join(sorted(known))}")
        kind = type(known[key].default)
        try:
            parsed = kind(value) if kind is not int else int(str(value), 10)
        except (TypeError, ValueError):
            raise ValueError(f"model {model_name!r}: parameter {key!r} must be {kind.__name__}, got {value!r}") from None
        if kind is float and not math.isfinite(parsed):
            raise ValueError(f"model {model_name!r}: parameter {key!r} must be finite, got {value!r}")
        lo, hi, _ = PARAMETERS[key]
        if lo is not None and (parsed < lo or (hi is not None and parsed > hi)):
            raise ValueError(f"model {model_name!r}: parameter {key!r}={parsed} must be within [{lo}, {hi}]")
        values[key] = parsed
    try:
        values["policy"] = check_policy_name(values.get("policy", DEFAULT_POLICY))
        values["rules_off"] = ",".join(sorted(check_rules_off(values.get("rules_off", ""))))
    except ValueError as exc:
        raise ValueError(f"model {model_name!r}: {exc}") from None
    if not DEVICE.fullmatch(values.get("device", "auto")):
        raise ValueError(f"model {model_name!r}: parameter 'device' must be auto, cpu, cuda or cuda:<k>, got "
                         f"{values['device']!r}")
    config = ServingConfig(**values)
    if config.workers + len(config.remote_list()) < 1:
        raise ValueError(f"model {model_name!r}: workers 0 needs remote_workers (a router needs a worker)")
    for address in config.remote_list():
        try:
            parse_remote(address)
        except ValueError as exc:
            raise ValueError(f"model {model_name!r}: parameter 'remote_workers': {exc}") from None
    devices = config.worker_device_list("cpu")
    if any(not DEVICE.fullmatch(d) or d == "auto" for d in devices) or len(devices) != config.workers:
        raise ValueError(f"model {model_name!r}: parameter 'worker_devices' must list {config.workers} devices "
                         f"(cpu, cuda or cuda:<k>, comma-separated), got {config.worker_devices!r}")
    if config.default_slo_ms > config.max_slo_ms:
        raise ValueError(f"model {model_name!r}: default_slo_ms {config.default_slo_ms} exceeds max_slo_ms "
                         f"{config.max_slo_ms}")
    return config


def read_model_config(path: Path):
    """A ``config.pbtxt`` as Triton's ``ModelConfig`` protobuf message."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


def config_from_pbtxt(path: Path) -> ServingConfig:
    """The serving config a ``config.pbtxt`` gives the model (for tools that plan like the server does)."""
    message = read_model_config(path)
    return parse_config({key: value.string_value for key, value in message.parameters.items()}, message.name)


def reference_markdown() -> str:
    """The configuration reference (``docs/configuration.md``), made from the config and the policy registry."""
    from ..scheduler.policies import POLICIES

    defaults = ServingConfig()
    lines = ["# Configuration reference", "",
             "Generated by `python -m superserve.serving.config` from `ServingConfig` and the policy registry; a "
             "test keeps this file in step with them.", "",
             "Set a parameter in `config.pbtxt` only to change it; without any, the model serves with these "
             "defaults:", "", "```", 'parameters: { key: "policy" value: { string_value: "slackfit" } }', "```", "",
             "| parameter | default | allowed | what it does |", "|---|---|---|---|"]
    for name, (lo, hi, text) in PARAMETERS.items():
        allowed = ({"policy": "a policy below", "device": "auto, cpu, cuda:<k>",
                    "worker_devices": "a device per worker", "remote_workers": "gRPC addresses",
                    "rules_off": "rule names"}[name]
                   if lo is None else
                   f"{lo:g} .. {hi:g}" if hi is not None else f">= {lo:g}")
        lines.append(f"| `{name}` | `{getattr(defaults, name)}` | {allowed} | {text} |")
    lines += ["", "## Policies", "", "| `policy` | what it serves |", "|---|---|"]
    lines += [f"| `{name}` | {summary} |" for name, (summary, _) in POLICIES.items()]
    lines += ["", "Triton's own settings that matter: `max_batch_size` is the hand-over of one `execute()` call in "
              "samples (one request may carry at most the SuperNet's largest batch, 16), and `dynamic_batching` "
              "must have no queue delay.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown(), end="")
