"""The stub guard: a process whose parent dies is killed, even if it can no longer run Python itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from superserve.runtime.tritonenv import process_alive

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


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_alive(pid)


def _start(mode: str):
    server = subprocess.Popen([sys.executable, "-c", SERVER, mode], stdout=subprocess.PIPE, text=True)
    stub, guard = map(int, server.stdout.readline().split())
    return server, stub, guard


def test_a_stub_whose_server_dies_is_killed():
    server, stub, guard = _start("hang")
    try:
        assert process_alive(stub) and process_alive(guard)
        time.sleep(0.3)
        assert process_alive(stub)  # the guard leaves a stub with a live server alone
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        assert _gone_within(stub, 5.0)
        assert _gone_within(guard, 5.0)
    finally:
        for pid in (stub, guard):
            if process_alive(pid):
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


def test_process_alive_counts_a_zombie_and_a_reaped_process_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    assert process_alive(os.getpid()) and process_alive(child.pid)
    child.stdin.close()  # it exits; unreaped, it is a zombie
    deadline = time.monotonic() + 10
    while process_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(f"/proc/{child.pid}/stat") as f:
        assert f.read().rsplit(") ", 1)[1][0] == "Z"  # still in /proc, but exited
    assert not process_alive(child.pid)
    child.wait(10)
    assert not process_alive(child.pid)  # reaped: no /proc entry at all
