"""Remote workers: another ``tritonserver`` (on another machine) serving the ``superserve_worker`` model, reached
over gRPC with tritonclient. That is how one router spans machines: it keeps the one queue and the policy, and
sends each batch, with its SubNet, to whichever worker is free, local or remote.

A remote worker is lost when a call fails for a reason of the connection (unreachable, reset, server shutting
down) or gives no answer in time; the router then re-admits it as soon as its server answers again.
"""

from __future__ import annotations

import queue
from typing import Any

import numpy as np

from .workers import BatchFailed, WorkerLost

__all__ = ["RemoteWorker", "parse_remote"]

DEFAULT_MODEL = "superserve_worker"


def parse_remote(address: str) -> tuple[str, str]:
    """``host:port`` or ``host:port/model`` -> (gRPC url, model name); ValueError saying the form otherwise."""
    url, _, model = address.strip().partition("/")
    host, _, port = url.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or " " in url:
        raise ValueError(f"remote worker {address!r} must be host:port or host:port/model (gRPC), e.g. "
                         f"10.0.0.7:8001")
    return url, model or DEFAULT_MODEL


class RemoteWorker:
    def __init__(self, index: int, address: str, start_timeout_s: float = 5.0) -> None:
        self.index = index
        self.url, self.model = parse_remote(address)
        self.name = f"worker {index} (remote, {self.url}/{self.model})"
        self.where = f"at {self.url}"
        self._start_timeout_s = start_timeout_s
        self._client = None
        self._answers: queue.SimpleQueue = queue.SimpleQueue()

    @property
    def pid(self) -> None:
        return None

    def start(self) -> None:
        """Connect and check the worker model is ready; WorkerLost if not (the router tries again later)."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        self.stop()
        self._client = grpcclient.InferenceServerClient(self.url)
        try:
            ready = self._client.is_model_ready(self.model, client_timeout=self._start_timeout_s)
        except InferenceServerException as exc:
            ready, why = False, exc.message()
        else:
            why = f"model {self.model!r} is not ready there"
        if not ready:
            self.stop()
            raise WorkerLost(f"{self.name} does not answer: {why}")
        self._answers = queue.SimpleQueue()

    def alive(self) -> bool:
        """Not known without a call: a remote host that went away is found lost at its next batch."""
        return self._client is not None

    def submit(self, subnet: int, images: np.ndarray) -> None:
        import tritonclient.grpc as grpcclient

        tensor = grpcclient.InferInput("INPUT", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        answers = self._answers
        self._client.async_infer(self.model, [tensor], lambda result, error: answers.put((result, error)),
                                 parameters={"subnet": subnet},
                                 outputs=[grpcclient.InferRequestedOutput("LOGITS")])

    def result(self, timeout_s: float) -> np.ndarray:
        try:
            result, error = self._answers.get(timeout=timeout_s)
        except queue.Empty:
            self.stop()
            raise WorkerLost(f"{self.name} took more than {timeout_s:.2f} s to answer") from None
        if error is None:
            return result.as_numpy("LOGITS")
        if error.status() in ("StatusCode.INVALID_ARGUMENT", "StatusCode.INTERNAL") and \
                "not healthy" not in str(error.message()):
            raise BatchFailed(f"{self.name}: {error.message()}")
        self.stop()
        raise WorkerLost(f"{self.name}: {error.message()}")

    def stop(self) -> None:
        client: Any = self._client
        self._client = None
        if client is not None:
            try:
                client.close()
            except Exception:  # a client whose channel is already broken: nothing left to close
                pass
