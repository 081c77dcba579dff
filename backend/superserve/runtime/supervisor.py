"""Keeps tritonserver serving when one of its Python stubs dies.

Triton 2.51's Python backend neither restarts a stub that has exited nor marks its model unready, and a
stub can die of memory corruption under sustained load (open upstream: triton-inference-server/server#8841;
seen here four times in two days of benchmarks). The model then holds every request it is given until the
server restarts. The supervisor looks at the stubs every second and restarts the whole server when one
has died: seconds of refused connections, which clients retry, instead of an outage without end.
"""

from __future__ import annotations

import sys
import threading
from typing import Callable

from .tritonenv import ServerProcess

__all__ = ["Supervisor"]

STOP_TIMEOUT_S = 10.0  # a server with a dead stub may wait on it until Triton's own exit timeout; not worth it


class Supervisor:
    def __init__(self, start: Callable[[], ServerProcess], poll_s: float = 1.0) -> None:
        self._start = start
        self._poll_s = poll_s
        self._stop = threading.Event()
        self.server: ServerProcess | None = None
        self.restarts = 0

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Serve until ``stop()``; returns tritonserver's exit code if it exits by itself, else 0."""
        self.server = self._start()
        try:
            while not self._stop.wait(self._poll_s):
                code = self.server.process.poll()
                if code is not None:
                    return code  # tritonserver itself exited: not for us to hide
                dead = self.server.dead_stubs()
                if dead:
                    self.restarts += 1
                    print(f"superserve supervisor: {dead} Python stub(s) of tritonserver died (Triton does not "
                          f"restart them); restarting the server (restart {self.restarts})",
                          file=sys.stderr, flush=True)
                    self.server.stop(timeout_s=STOP_TIMEOUT_S)
                    self.server = self._start()
            return 0
        finally:
            self.server.stop()
