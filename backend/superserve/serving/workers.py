"""Local workers: one process each, holding the SuperNet and running the (SubNet, batch) the router sends it.

Both ends live here. The router's end (``LocalWorker``) starts ``python -m superserve.serving.workers``, hands it
a shared-memory block (a memfd: the largest batch's inputs, then its logits) and one end of a Unix socket pair.
A batch is a memcpy into the block and an 8-byte message; its answer is a 1-byte message and a memcpy out. The
router's thread waits on the socket with the GIL released, so N workers compute in parallel on N cores.

Processes the router starts itself are the router's to restart: a worker that exits shows as end-of-file on its
socket at once; one that stops answering is killed after a bound derived from the batch's profiled latency. A
worker dies with the process that started it (PR_SET_PDEATHSIG), so none outlives a dead router.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import logging
import math
import mmap
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["WorkerLost", "BatchFailed", "LocalWorker", "worker_python", "at_low_priority"]

log = logging.getLogger(__name__)

_BATCH = struct.Struct("<ii")  # SubNet index, samples
_READY, _DONE, _FAILED = b"R", b"D", b"E"


class WorkerLost(RuntimeError):
    """The worker died or stopped answering: its batch did not run (or its answer is lost)."""


class BatchFailed(RuntimeError):
    """The worker is fine but this batch raised (the message says why)."""


def worker_python() -> str:
    """The Python that runs worker processes: this one, unless this process is not a Python binary (Triton's
    stub embeds Python), then the first ``python3`` on PATH (``make serve`` puts the venv's first)."""
    if Path(sys.executable).name.startswith("python"):
        return sys.executable
    return shutil.which("python3") or "python3"


class LocalWorker:
    """A worker process on this machine, on ``device``, running ``num_threads`` torch threads."""

    def __init__(self, index: int, folder: Path, device: str, num_threads: int, input_shape: Sequence[int],
                 max_batch: int, num_classes: int, start_timeout_s: float = 300.0) -> None:
        self.index = index
        self.name = f"worker {index} (local, {device})"
        self._command = [worker_python(), "-m", "superserve.serving.workers", "--folder", str(folder),
                         "--device", device, "--threads", str(num_threads)]
        self._start_timeout_s = start_timeout_s
        inputs = max_batch * math.prod(input_shape) * 4
        outputs = max_batch * num_classes * 4
        # one block for the worker's life, handed to each process that runs it
        self._memory_fd = os.memfd_create(f"superserve-worker-{index}")
        os.ftruncate(self._memory_fd, inputs + outputs)
        self._memory = mmap.mmap(self._memory_fd, inputs + outputs)
        self._inputs = np.frombuffer(self._memory, np.float32, max_batch * math.prod(input_shape)).reshape(
            max_batch, *input_shape)
        self._outputs = np.frombuffer(self._memory, np.float32, max_batch * num_classes, inputs).reshape(
            max_batch, num_classes)
        self._process: subprocess.Popen | None = None
        self._socket: socket.socket | None = None
        self._samples = 0
        self.pid: int | None = None  # the latest process's, kept once it is gone (for the log)

    @property
    def where(self) -> str:
        return f"process id {self.pid}"

    def start(self) -> None:
        """Start the process and wait until it has loaded and warmed up the SuperNet; WorkerLost if it does not."""
        self.stop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = self._command + ["--channel", str(theirs.fileno()), "--memory", str(self._memory_fd),
                                   "--parent", str(os.getpid())]
        self._process = subprocess.Popen(command, pass_fds=(theirs.fileno(), self._memory_fd),
                                         stdin=subprocess.DEVNULL)
        self.pid = self._process.pid
        theirs.close()
        self._socket = ours
        reply = self._receive(self._start_timeout_s, "to start")
        if reply[:1] != _READY:
            raise WorkerLost(f"{self.name} sent {reply[:40]!r} instead of ready")

    def alive(self) -> bool:
        """The process runs (a cheap check: an idle worker's death is seen without sending it a batch)."""
        return self._process is not None and self._process.poll() is None

    def submit(self, subnet: int, images: np.ndarray) -> None:
        """Start a batch (returns at once); ``result`` waits for its logits."""
        n = images.shape[0]
        self._inputs[:n] = images
        self._samples = n
        try:
            self._socket.send(_BATCH.pack(subnet, n), socket.MSG_NOSIGNAL)  # a dead peer: EPIPE, no signal
        except OSError as exc:
            raise WorkerLost(f"{self.name} is gone ({exc})") from None

    def result(self, timeout_s: float) -> np.ndarray:
        """The logits of the submitted batch (a new array). WorkerLost if the process died or gave no answer
        within ``timeout_s`` (it is then killed); BatchFailed if the batch raised."""
        reply = self._receive(timeout_s, "to answer")
        if reply[:1] == _DONE:
            return self._outputs[:self._samples].copy()
        if reply[:1] == _FAILED:
            raise BatchFailed(reply[1:].decode(errors="replace"))
        raise WorkerLost(f"{self.name} sent {reply[:40]!r}")

    def _receive(self, timeout_s: float, what: str) -> bytes:
        try:
            self._socket.settimeout(timeout_s)
            reply = self._socket.recv(4096)
        except socket.timeout:
            self.stop()
            raise WorkerLost(f"{self.name} took more than {timeout_s:.2f} s {what}; killed") from None
        except OSError as exc:
            reply = b""
            log.debug("%s: %s", self.name, exc)
        if not reply:
            try:
                code = self._process.wait(5) if self._process else None
            except subprocess.TimeoutExpired:
                code = "none yet (it closed its socket)"
            raise WorkerLost(f"{self.name} exited with code {code}")
        return reply

    def stop(self) -> None:
        """Kill the process if it runs (a worker holds no state worth a graceful exit)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None


# The worker process --------------------------------------------------------------------------------------------
_PR_SET_PDEATHSIG = 1
_LOW_PRIORITY = 19  # the nice value of start-up work that must not take a core from a worker serving


def _lower_own_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _LOW_PRIORITY)
    except OSError:  # not allowed here: run at the priority we have
        pass


def at_low_priority(work):
    """``work()``, run on a thread of the lowest CPU priority, and its result (or its exception).

    Linux gives each thread its own nice value, so a worker (re)starting under load can do its heaviest step,
    importing torch (a second of CPU), at the lowest priority and still serve at normal priority on its main thread
    afterwards: the worker still serving keeps its core while the other comes back."""
    with ThreadPoolExecutor(max_workers=1, initializer=_lower_own_priority,
                            thread_name_prefix="low-priority start-up") as thread:
        return thread.submit(work).result()


def _serve(args: argparse.Namespace) -> None:
    torch = at_low_priority(lambda: importlib.import_module("torch"))

    from ..supernet.artefacts import load_supernet
    from .runner import SubnetRunner

    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != args.parent:  # the router died before the signal was armed
        return
    torch.set_num_threads(args.threads)
    net, profile = load_supernet(Path(args.folder), mapped=True)  # one copy of the weights for all local workers
    runner = SubnetRunner(net, profile, torch.device(args.device))
    runner.warm_up()
    channel = socket.socket(fileno=args.channel)
    memory = mmap.mmap(args.memory, os.fstat(args.memory).st_size)
    batch, count = runner.max_batch, runner.max_batch * math.prod(runner.input_shape)
    inputs = np.frombuffer(memory, np.float32, count).reshape(batch, *runner.input_shape)
    classes = int(profile["num_classes"])
    outputs = np.frombuffer(memory, np.float32, batch * classes, count * 4).reshape(batch, classes)
    channel.send(_READY + struct.pack("<i", os.getpid()))
    while True:
        message = channel.recv(64)
        if not message:
            return  # the router closed its end
        subnet, n = _BATCH.unpack(message)
        try:
            outputs[:n] = runner.run(subnet, inputs[:n])
        except Exception as exc:  # a bad batch, not a dead worker
            channel.send(_FAILED + f"inference failed: {exc}"[:2000].encode())
            continue
        channel.send(_DONE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A SuperServe worker process (started by the router, not by hand).")
    parser.add_argument("--folder", required=True, help="the model version folder (supernet.pt, profile.json)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channel", type=int, required=True, help="file descriptor of the router's socket")
    parser.add_argument("--memory", type=int, required=True, help="file descriptor of the shared batch memory")
    parser.add_argument("--parent", type=int, required=True, help="the router's process id")
    _serve(parser.parse_args(argv))


if __name__ == "__main__":
    main()
