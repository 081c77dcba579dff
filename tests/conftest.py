"""Shared fixtures: one real tritonserver per test session, on free loopback ports."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from superserve.tritonenv import REPO_ROOT, ensure_triton_home, server_command, server_env

MODEL_DIR = REPO_ROOT / "model_repository" / "superserve" / "1"


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Server:
    process: subprocess.Popen
    http_port: int
    grpc_port: int
    metrics_port: int
    log: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self, timeout_s: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(model_repository: Path, log: Path, timeout_s: float = 180) -> Server:
    """Start tritonserver and wait until the model is ready (polling, no fixed sleeps)."""
    import tritonclient.http as httpclient

    if not (MODEL_DIR / "profile.json").is_file():
        raise RuntimeError(f"no built model in {MODEL_DIR}: run `make model` (make test does it)")
    http, grpc, metrics = free_ports(3)
    cmd = server_command(ensure_triton_home(), model_repository, http, grpc, metrics)
    out = open(log, "w")
    process = subprocess.Popen(cmd, env=server_env(ensure_triton_home()), stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    server = Server(process, http, grpc, metrics, log)
    client = httpclient.InferenceServerClient(server.http_url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tritonserver exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if client.is_server_ready():
                return server
        except Exception:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"tritonserver not ready after {timeout_s} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("triton") / "server.log"
    srv = start_server(REPO_ROOT / "model_repository", log)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def profile():
    return json.loads((MODEL_DIR / "profile.json").read_text())


@pytest.fixture(scope="session")
def held_out():
    from superserve.data import load_digits

    data = load_digits()
    return data.held_out_x.numpy(), data.held_out_y.numpy()


def pytest_collection_modifyitems(items):
    for item in items:
        if "server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
