"""The stub guard: a process whose parent dies is killed, even if it can no longer run Python itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

# The "stub": starts its guard, reports both pids, then sleeps: like a stub deadlocked on a dead server,
# nothing of its own ends it.
STUB = """
import os, sys
from superserve.serving.stub_guard import exit_with_server
guard = exit_with_server(period_s=0.1)
print(os.getpid(), guard.pid, flush=True)
if sys.argv[1] == "hang":
    import time; time.sleep(60)
"""
# The "server": starts the stub and reaps it when it exits, as tritonserver does.
SERVER = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", {STUB!r}, sys.argv[1]], stdin=subprocess.PIPE).wait()
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _start(mode: str):
    server = subprocess.Popen([sys.executable, "-c", SERVER, mode], stdout=subprocess.PIPE, text=True)
    stub, guard = map(int, server.stdout.readline().split())
    return server, stub, guard


def test_a_stub_whose_server_dies_is_killed():
    server, stub, guard = _start("hang")
    try:
        assert _alive(stub) and _alive(guard)
        time.sleep(0.3)
        assert _alive(stub)  # the guard leaves a stub with a live server alone
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        assert _gone_within(stub, 5.0)
        assert _gone_within(guard, 5.0)
    finally:
        for pid in (stub, guard):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_guard_ends_by_itself_when_its_stub_exits():
    server, stub, guard = _start("exit")
    try:
        assert _gone_within(stub, 10.0)  # the stub ran to its end
        assert _gone_within(guard, 5.0)
        assert server.poll() is None  # the server was never touched
    finally:
        server.kill()
        server.wait(10)
