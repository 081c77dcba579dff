"""Ends a Python stub whose tritonserver is gone.

When tritonserver dies without unloading its models (SIGKILL, a crash), the stub is meant to notice within a
second and exit. In Triton 2.51 it can instead deadlock: a call that waits for the parent (a custom-metric update,
made with the GIL held) never returns, and the stub's own exit path waits on a lock it will not get. No thread in
the stub can then run Python, so the guard is a separate tiny process: a shell loop that SIGKILLs the stub once it
is re-parented, and ends by itself when the stub exits normally.
"""

from __future__ import annotations

import os
import subprocess

__all__ = ["exit_with_server"]

_WATCH = """
while [ "$(sed -n 's/^PPid:[[:space:]]*//p' /proc/{stub}/status 2>/dev/null)" = "{server}" ]; do sleep {period}; done
kill -9 {stub} 2>/dev/null
"""


def exit_with_server(period_s: float = 1.0) -> subprocess.Popen:
    """Start the guard for this process (the stub), whose parent is the server; return the guard's process."""
    script = _WATCH.format(stub=os.getpid(), server=os.getppid(), period=period_s)
    return subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, close_fds=True)
