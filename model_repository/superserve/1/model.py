"""Triton adapter for SuperServe: unpack requests, hand them to the serving core, pack its answers.

execute() only validates, stamps the arrival time and queues; the core's dispatcher thread answers
every request exactly once through its response sender (non-decoupled model, responses sent later).
"""

import json
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from superserve.build import load_supernet
from superserve.serving.config import parse_config
from superserve.serving.core import SuperServeCore
from superserve.serving.metrics import OUTCOMES, Metrics



class _Transport:
    """Sends the core's answers through Triton response senders (the request handles)."""

    def __init__(self):
        self._labels = {}  # (subnet, n) -> (SUBNET, ACCURACY) arrays, reused across requests
        # pb_utils' error codes exist only once the stub runs the model (not while it auto-completes the config)
        self._final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        self._codes = {"invalid": pb_utils.TritonError.INVALID_ARG,
                       "unavailable": pb_utils.TritonError.UNAVAILABLE, "internal": pb_utils.TritonError.INTERNAL}

    def send_result(self, sender, logits, subnet, accuracy):
        n = logits.shape[0]
        labels = self._labels.get((subnet, n))
        if labels is None:
            labels = self._labels[(subnet, n)] = (np.full((n, 1), subnet, np.int32),
                                                  np.full((n, 1), accuracy, np.float32))
        response = pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("LOGITS", logits), pb_utils.Tensor("SUBNET", labels[0]),
            pb_utils.Tensor("ACCURACY", labels[1])])
        sender.send(response, flags=self._final)

    def send_error(self, sender, code, message):
        error = pb_utils.TritonError(message, self._codes[code])
        sender.send(pb_utils.InferenceResponse(output_tensors=[], error=error), flags=self._final)

    def is_cancelled(self, sender):
        return sender.is_cancelled()


class _PrometheusMetrics(Metrics):
    """The core's metrics as Prometheus families on Triton's metrics port."""

    def __init__(self, model_name, subnets):
        label = {"model": model_name}
        self._families = [
            pb_utils.MetricFamily("superserve_requests_total", "Requests by outcome", pb_utils.MetricFamily.COUNTER),
            pb_utils.MetricFamily("superserve_subnet_samples_total", "Samples served per SubNet",
                                  pb_utils.MetricFamily.COUNTER),
            pb_utils.MetricFamily("superserve_served_accuracy", "Profiled accuracy of the SubNet of each batch",
                                  pb_utils.MetricFamily.HISTOGRAM),
            pb_utils.MetricFamily("superserve_batch_size", "Samples per dispatched batch",
                                  pb_utils.MetricFamily.HISTOGRAM),
            pb_utils.MetricFamily("superserve_slack_ms", "Head request's remaining slack at dispatch",
                                  pb_utils.MetricFamily.HISTOGRAM),
            pb_utils.MetricFamily("superserve_decision_us", "Policy decision time", pb_utils.MetricFamily.HISTOGRAM),
            pb_utils.MetricFamily("superserve_queue_length", "Waiting requests", pb_utils.MetricFamily.GAUGE),
        ]
        requests, samples, accuracy, batch, slack, decision, queue = self._families
        self._outcomes = {o: requests.Metric(labels={**label, "outcome": o}) for o in OUTCOMES}
        self._samples = [samples.Metric(labels={**label, "subnet": str(i)}) for i in range(subnets)]
        self._accuracy = accuracy.Metric(labels=label, buckets=[0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 1.0])
        self._batch = batch.Metric(labels=label, buckets=[1, 2, 4, 8, 12, 16])
        self._slack = slack.Metric(labels=label, buckets=[1, 2, 5, 10, 20, 50, 100, 1000])
        self._decision = decision.Metric(labels=label, buckets=[1, 5, 10, 25, 50, 100, 1000])
        self._queue = queue.Metric(labels=label)

    def outcome(self, outcome, count=1):
        self._outcomes[outcome].increment(count)

    def queue_length(self, length):
        self._queue.set(length)

    def decision(self, slack_ns, decision_ns):
        self._slack.observe(slack_ns / 1e6)
        self._decision.observe(decision_ns / 1e3)

    def batch(self, subnet, size, accuracy):
        self._samples[subnet].increment(size)
        self._batch.observe(size)
        self._accuracy.observe(accuracy)


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        name = args["model_name"]
        try:
            config = parse_config(model_config.get("parameters", {}), name)
            folder = Path(args["model_repository"]) / args["model_version"]
            net, profile = load_supernet(folder)
        except (ValueError, FileNotFoundError) as exc:
            raise pb_utils.TritonModelException(f"model {name!r} failed to load: {exc}") from exc
        self.core = SuperServeCore(net, profile, config, _Transport(),
                                   _PrometheusMetrics(name, len(profile["subnets"])))
        pb_utils.Logger.log_info(f"{name}: {len(profile['subnets'])} SubNets served, policy {config.policy}, "
                                 f"{config.num_threads} torch thread(s)")

    def execute(self, requests):
        now = time.monotonic_ns()
        for request in requests:
            sender = request.get_response_sender()
            tensor = pb_utils.get_input_tensor_by_name(request, "INPUT")
            # Triton frees request tensors when execute() returns, so the queued input must be a copy.
            images = np.array(tensor.as_numpy()) if tensor is not None else np.empty((0,), np.float32)
            self.core.submit(images, request.parameters(), sender, now)
        return None

    def finalize(self):
        self.core.close()
