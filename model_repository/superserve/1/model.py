"""Triton adapter for SuperServe: hand each execute() to the serving core as one round, or to the router.

One worker (``workers: 1``, the default): the core answers every request of the call before execute() returns,
in the returned list (one message to Triton per round), except an answer that could not wait for the rest of the
round, which its sender thread sends early through that request's sender (its list entry is then None).
More workers: execute() queues the requests in the router's EDF queue and returns at once, with the answers of
the requests refused on arrival (None for the others); worker processes compute, and each computed answer goes
out through its request's sender.
"""

import json
import logging
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from superserve.serving.config import parse_config, resolve_device
from superserve.serving.core import SuperServeCore
from superserve.serving.metrics import HISTOGRAMS, OUTCOMES, MetricsBuffer, histogram_bounds
from superserve.serving.router import Router
from superserve.serving.stub_guard import exit_with_server
from superserve.serving.contract import load_served_supernet

GIL_SWITCH_INTERVAL_S = 0.0002
WORKERS_READY_TIMEOUT_S = 300


class _TritonLog(logging.Handler):
    """The serving library's log records into Triton's log."""

    def emit(self, record):
        text = f"{record.name}: {record.getMessage()}"
        if record.levelno >= logging.ERROR:
            pb_utils.Logger.log_error(text)
        elif record.levelno >= logging.WARNING:
            pb_utils.Logger.log_warn(text)
        else:
            pb_utils.Logger.log_info(text)


class _Transport:
    """Reads Triton requests and makes their responses for the core."""

    def __init__(self, outputs):
        # SUBNET and ACCURACY are optional in config.pbtxt; with LOGITS alone, no request can ask for them
        self._labelled = bool({"SUBNET", "ACCURACY"} & set(outputs))
        self._labels = {}  # (subnet, n) -> (SUBNET, ACCURACY) arrays, reused across requests
        # pb_utils' error codes exist only once the stub runs the model (not while it auto-completes the config)
        self._final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        self._codes = {"invalid": pb_utils.TritonError.INVALID_ARG,
                       "unavailable": pb_utils.TritonError.UNAVAILABLE, "internal": pb_utils.TritonError.INTERNAL,
                       "cancelled": pb_utils.TritonError.CANCELLED}

    def images(self, request):
        tensor = pb_utils.get_input_tensor_by_name(request, "INPUT")
        return None if tensor is None else tensor.as_numpy()

    def parameters(self, request):
        return request.parameters()

    def result(self, request, logits, subnet, accuracy):
        # Only the outputs the request asked for (a client that names none asks for all): every output tensor
        # costs Triton a buffer and a copy, and perf_analyzer asks for every output the config declares.
        if not self._labelled:
            return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("LOGITS", logits)])
        wanted = request.requested_output_names()
        n = logits.shape[0]
        labels = self._labels.get((subnet, n))
        if labels is None:
            labels = self._labels[(subnet, n)] = (np.full((n, 1), subnet, np.int32),
                                                  np.full((n, 1), accuracy, np.float32))
        # A Tensor keeps the shared memory it was written to: one per response, never reused.
        tensors = [pb_utils.Tensor("LOGITS", logits)] if "LOGITS" in wanted else []
        if "SUBNET" in wanted:
            tensors.append(pb_utils.Tensor("SUBNET", labels[0]))
        if "ACCURACY" in wanted:
            tensors.append(pb_utils.Tensor("ACCURACY", labels[1]))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def error(self, code, message):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, self._codes[code]))

    def send(self, request, response):
        # Responses hold only requested outputs: the sender drops the others with the GIL released
        # (python_backend r24.10), and freeing a Tensor's array without the GIL kills the stub.
        request.get_response_sender().send(response, flags=self._final)

    def is_cancelled(self, request):
        return request.is_cancelled()


class _PrometheusExporter:
    """Drains the core's metrics buffer into Prometheus families on Triton's metrics port, off the hot path."""

    PERIOD_S = 0.5

    def __init__(self, model_name, subnets, buffer, workers=0):
        label = {"model": model_name}
        family = pb_utils.MetricFamily
        self._families = {  # kept referenced for the model's lifetime
            "requests": family("superserve_requests_total", "Requests by outcome", family.COUNTER),
            "samples": family("superserve_subnet_samples_total", "Samples served per SubNet", family.COUNTER),
            "queue": family("superserve_queue_length", "Requests of the current round still waiting", family.GAUGE),
            "per_batch": family("superserve_overhead_per_batch_ms",
                                "Serving overhead per batch the policy plans with (learned)", family.GAUGE),
            "per_sample": family("superserve_overhead_per_sample_ms",
                                 "Serving overhead per sample the policy plans with (learned)", family.GAUGE),
        }
        self._outcomes = {o: self._families["requests"].Metric(labels={**label, "outcome": o}) for o in OUTCOMES}
        self._samples = [self._families["samples"].Metric(labels={**label, "subnet": str(i)}) for i in range(subnets)]
        self._gauge_metrics = [self._families[name].Metric(labels=label)
                               for name in ("queue", "per_batch", "per_sample")]
        # Histograms as Prometheus writes them (_bucket{le}, _sum, _count), fed from the buffer's bins: one update
        # per changed series per flush, where a native histogram would cost one per observation.
        self._histograms = {}
        for name, (text, _) in HISTOGRAMS.items():
            bounds = buffer.bounds[name]
            series = {part: self._families.setdefault(f"{name}_{part}", family(f"superserve_{name}_{part}", text,
                                                                               family.COUNTER))
                      for part in ("bucket", "sum", "count")}
            buckets = [series["bucket"].Metric(labels={**label, "le": str(b)}) for b in (*bounds, "+Inf")]
            self._histograms[name] = (buckets, series["sum"].Metric(labels=label),
                                      series["count"].Metric(labels=label))
        self._workers = []  # per worker: up, busy seconds, losses, restarts
        if workers:  # a router's workers
            for key, text, kind in (("worker_up", "1 while the worker is in the rotation", family.GAUGE),
                                    ("worker_busy_seconds_total", "Time the worker spent on batches", family.COUNTER),
                                    ("worker_losses_total", "Times the worker died or stopped answering",
                                     family.COUNTER),
                                    ("worker_restarts_total", "Times the worker was started again", family.COUNTER)):
                self._families[key] = family(f"superserve_{key}", text, kind)
            self._families["requeued"] = family("superserve_requeued_total",
                                                "Requests of a lost worker's batch put back in the queue",
                                                family.COUNTER)
            self._requeued = self._families["requeued"].Metric(labels=label)
            self._workers = [[self._families[key].Metric(labels={**label, "worker": str(i)})
                              for key in ("worker_up", "worker_busy_seconds_total", "worker_losses_total",
                                          "worker_restarts_total")] for i in range(workers)]
        self._buffer = buffer
        self._gauges = [None] * len(self._gauge_metrics)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="superserve-metrics", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.PERIOD_S):
            try:
                self.flush()
            except Exception as exc:  # one bad update loses that flush's counts, not every later one
                pb_utils.Logger.log_error(f"superserve metrics: a flush failed ({exc}); the next ones go on")

    def flush(self):
        snapshot = self._buffer.drain()
        for outcome, count in snapshot.outcomes.items():
            self._outcomes[outcome].increment(count)
        for subnet, count in snapshot.samples.items():
            self._samples[subnet].increment(count)
        gauges = (snapshot.queue_length, snapshot.overhead_per_batch_ms, snapshot.overhead_per_sample_ms)
        for i, (metric, value) in enumerate(zip(self._gauge_metrics, gauges)):
            if value != self._gauges[i]:  # an unchanged gauge costs an IPC round trip all the same
                metric.set(value)
                self._gauges[i] = value
        for i, up in snapshot.workers_up.items():
            self._workers[i][0].set(up)
        for column, counts in ((1, snapshot.worker_busy_s), (2, snapshot.worker_losses),
                               (3, snapshot.worker_restarts)):
            for i, value in counts.items():
                if value:
                    self._workers[i][column].increment(value)
        if snapshot.requeued:
            self._requeued.increment(snapshot.requeued)
        for name, binned in snapshot.histograms.items():
            buckets, total, count = self._histograms[name]
            for bucket, n in zip(buckets, binned.cumulative):
                if n:
                    bucket.increment(n)
            total.increment(binned.total)
            count.increment(binned.count)

    def close(self):
        self._stop.set()
        self._thread.join()
        self.flush()


class TritonPythonModel:
    def initialize(self, args):
        # The metrics thread and the round share the GIL; Python's default 5 ms switch interval would let the
        # metrics thread hold it that long in the middle of a round.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self.guard = exit_with_server()  # no stub outlives its server
        model_config = json.loads(args["model_config"])
        name = args["model_name"]
        try:
            config = parse_config(model_config.get("parameters", {}), name)
            # auto: where Triton placed this instance (instance_group kind and device)
            config = replace(config, device=resolve_device(config.device, args["model_instance_kind"],
                                                           args["model_instance_device_id"]))
            folder = Path(args["model_repository"]) / args["model_version"]
            net, profile = load_served_supernet(folder, model_config)
            handover = int(model_config["max_batch_size"])
            buffer = MetricsBuffer(bounds=histogram_bounds(profile, config.default_slo_ms, handover))
            transport = _Transport([o["name"] for o in model_config["output"]])
            self.core = self.router = None
            if config.routed:
                library = logging.getLogger("superserve")
                library.setLevel(logging.INFO)
                library.addHandler(_TritonLog())
                del net  # the workers map the weights file themselves; the router needs none
                self.router = Router.start(profile, config, transport, folder, buffer, WORKERS_READY_TIMEOUT_S)
            else:
                self.core = SuperServeCore(net, profile, config, transport, buffer,
                                           handover_samples=handover)
        except (ValueError, FileNotFoundError) as exc:
            raise pb_utils.TritonModelException(f"model {name!r} failed to load: {exc}") from exc
        self.exporter = _PrometheusExporter(name, len(profile["subnets"]), buffer,
                                            len(self.router.workers) if self.router else 0)
        where = ("workers " + ", ".join(w.name for w in self.router.workers) if self.router else config.device)
        pb_utils.Logger.log_info(f"{name}: {len(profile['subnets'])} SubNets served on {where}, policy "
                                 f"{config.policy}, {config.num_threads} torch thread(s) each")

    def execute(self, requests):
        return (self.router or self.core).serve(requests)

    def finalize(self):
        (self.router or self.core).close()
        self.exporter.close()
        self.guard.kill()
        self.guard.wait()
