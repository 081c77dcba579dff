"""The serving core behind the Triton model: validate, queue, dispatch, actuate, run, answer.

Triton-agnostic: a ``Transport`` sends results and errors for an opaque request handle, so the
integration with Triton stays a thin adapter and this core is tested with a fake transport.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch

from ..scheduler.policies import Decision, make_policy
from ..scheduler.profile import Profile
from ..scheduler.queue import QueuedRequest
from ..supernet import ElasticResNet
from .config import ServingConfig
from .dispatcher import Dispatcher
from .metrics import Metrics
from .requests import RequestError, check_images, parse_parameters

__all__ = ["Transport", "SuperServeCore"]

log = logging.getLogger(__name__)

_SPEC_CACHE_SIZE = 1024
_OVERHEAD_FLOOR_NS = 100_000  # lets a learned overhead of ~0 still grow


class Transport(Protocol):
    def send_result(self, handle: Any, logits: np.ndarray, subnet: int, accuracy: float) -> None: ...
    def send_error(self, handle: Any, code: str, message: str) -> None: ...  # invalid/unavailable/cancelled/internal
    def is_cancelled(self, handle: Any) -> bool: ...


class SuperServeCore:
    def __init__(self, net: ElasticResNet, profile: Mapping[str, Any], config: ServingConfig, transport: Transport,
                 metrics: Metrics | None = None, clock: Callable[[], int] = time.monotonic_ns) -> None:
        torch.set_num_threads(config.num_threads)
        if profile.get("threads") not in (None, config.num_threads):
            log.warning("profile.json was measured with %s torch threads but the model runs %d: latencies differ",
                        profile.get("threads"), config.num_threads)
        if profile.get("space") not in (None, net.space.name):
            raise ValueError(f"profile.json is for SuperNet {profile.get('space')!r}, weights are {net.space.name!r}")
        self.net = net.eval()
        # Policies decide on the serving cost model: profiled compute plus a per-sample serving overhead,
        # learned from the batches this server really runs (the profile knows only bare compute).
        self.compute_profile = Profile.from_dict(profile)
        self.overhead_ns = float(config.overhead_per_sample_ms * 1e6)
        self._policy_overhead_ns = self.overhead_ns
        self.profile = self.compute_profile.with_overhead(0, int(self.overhead_ns))
        self.config = config
        self.input_shape = tuple(int(d) for d in profile["input_shape"])
        self.plans = []
        for i, entry in enumerate(profile["subnets"]):
            plan = net.inference_plan(net.space.parse(entry["config"]))
            if plan.norm_row < 0:
                raise ValueError(f"profile SubNet {i} ({entry.get('id')}) has no SubnetNorm statistics in "
                                 "subnet_norm.pt: rebuild the model (`make model`)")
            self.plans.append(plan)
        self.accuracy = [s.accuracy for s in self.profile.subnets]
        self.transport = transport
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.metrics.cost_model(self.overhead_ns)
        self._warm_up()
        self.dispatcher = Dispatcher(self._make_policy(), self._run, self._reject, self._is_cancelled, config.max_queue,
                                     self.metrics, clock, config.drain_timeout_s, config.cancel_check_ms,
                                     config.rate_window_ms)
        self._specs: dict[str, object] = {}  # parameters JSON -> RequestSpec or error text: clients repeat them

    def _make_policy(self):
        """The configured policy over the current cost model (``self.profile``)."""
        return make_policy(self.config.policy, self.profile, int(self.config.margin_ms * 1e6),
                           self.config.num_buckets, self.config.latency_safety, self.config.max_utilization)

    @torch.inference_mode()
    def _warm_up(self) -> None:
        """One pass per SubNet at batch 1 and the largest batch, so the first requests are not slow."""
        for plan in self.plans:
            self.net.actuate(plan)
            for batch in (1, self.profile.max_batch):
                self.net(torch.zeros((batch, *self.input_shape)))

    def submit(self, images: np.ndarray, parameters_json: str, handle: Any, arrival_ns: int) -> None:
        """Validate one request and queue it; a bad request is answered at once and alone."""
        try:
            spec = self._specs.get(parameters_json)
            if spec is None:
                try:
                    spec = parse_parameters(parameters_json, self.profile, self.config.default_slo_ms,
                                            self.config.max_slo_ms)
                except RequestError as exc:
                    spec = str(exc)
                if len(self._specs) >= _SPEC_CACHE_SIZE:
                    self._specs.clear()
                self._specs[parameters_json] = spec
            if isinstance(spec, str):
                raise RequestError(spec)
            check_images(images, self.input_shape, self.profile.max_batch)
        except RequestError as exc:
            self.metrics.outcome("error")
            self.transport.send_error(handle, "invalid", str(exc))
            return
        request = QueuedRequest(arrival_ns + spec.slo_ns, arrival_ns, spec.lo, spec.hi, (images, handle),
                                images.shape[0])
        self.dispatcher.submit(request)

    def close(self) -> None:
        self.dispatcher.close()

    def _reject(self, request: QueuedRequest, code: str, message: str) -> None:
        self.transport.send_error(request.payload[1], code, message)

    def _is_cancelled(self, request: QueuedRequest) -> bool:
        return self.transport.is_cancelled(request.payload[1])

    def _learn_overhead(self, subnet: int, samples: int, elapsed_ns: int) -> None:
        """Fold one batch's observed per-sample overhead into the cost model; re-plan when it moved >15%.

        Each batch weighs by its samples (a batch of 1 is 1/16 of the evidence of a full one), and one
        observation may at most double the estimate: a single stall (the stub's garbage collector, a
        preempted thread) is not a per-sample cost. Unweighted and unclipped, one 35 ms stall in a batch of
        2 moved the estimate from 0.4 to 1.0 ms, and the policy then served cheaper SubNets for a while
        at 0.7x load (measured: 98.59% vs 98.70%).
        """
        rate = self.config.overhead_adapt_rate
        if not rate:
            return
        observed = max(0.0, (elapsed_ns - self.compute_profile.latency_ns(subnet, samples)) / samples)
        observed = min(observed, 2.0 * self.overhead_ns + _OVERHEAD_FLOOR_NS)
        self.overhead_ns += rate * samples / self.profile.max_batch * (observed - self.overhead_ns)
        if abs(self.overhead_ns - self._policy_overhead_ns) > 0.15 * max(self._policy_overhead_ns, 50_000):
            self._policy_overhead_ns = self.overhead_ns
            self.profile = self.compute_profile.with_overhead(0, int(self.overhead_ns))
            self.dispatcher.policy = self._make_policy()
            self.metrics.cost_model(self.overhead_ns)

    def _run(self, decision: Decision, batch: list[QueuedRequest]) -> None:
        subnet = decision.subnet
        started = self.clock()
        try:
            images = batch[0].payload[0] if len(batch) == 1 else np.concatenate([r.payload[0] for r in batch])
            with torch.inference_mode():
                self.net.actuate(self.plans[subnet])
                logits = self.net(torch.from_numpy(images)).numpy()
        except Exception as exc:  # a failure reaches every request of the batch, and only them
            log.exception("batch on SubNet %d failed", subnet)
            for request in batch:
                self.metrics.outcome("error")
                self.transport.send_error(request.payload[1], "internal", f"inference failed: {exc}")
            return
        accuracy = self.accuracy[subnet]
        self.metrics.batch(subnet, len(images), accuracy)
        offset = 0
        for request in batch:
            n = request.size
            self.transport.send_result(request.payload[1], logits[offset:offset + n], subnet, accuracy)
            self.metrics.outcome("on_time" if self.clock() <= request.deadline_ns else "late")
            offset += n
        self._learn_overhead(subnet, len(images), self.clock() - started)
