"""Worker faults on a live server, read from Triton's log: the router logs every worker it starts and every one it
loses, with the process id, so a benchmark or a test knows which process to kill and when the router noticed."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WorkerEvent", "worker_events", "running_workers"]

# I1207 02:39:54.744688 3303 model.py:42] "superserve.serving.router: worker 0 (local, cpu) is up, process id 3332"
_EVENT = re.compile(r"^[IWE](\d{4}) (\d\d:\d\d:\d\d\.\d+) .*superserve\.serving\.router: worker (\d+) \(.*?\) "
                    r"(is up|lost), process id (\d+)")


@dataclass(frozen=True)
class WorkerEvent:
    time_s: float  # wall clock (time.time()), from the log line's timestamp
    worker: int
    kind: str  # "up" or "lost"
    pid: int


def worker_events(log: Path) -> list[WorkerEvent]:
    """Every worker start and loss the router logged, in order."""
    year = datetime.datetime.now().year
    events = []
    for line in Path(log).read_text(errors="replace").splitlines():
        match = _EVENT.match(line)
        if match:
            day, clock, worker, kind, pid = match.groups()
            stamp = datetime.datetime.strptime(f"{year}{day} {clock}", "%Y%m%d %H:%M:%S.%f").timestamp()
            events.append(WorkerEvent(stamp, int(worker), "up" if kind == "is up" else "lost", int(pid)))
    return events


def running_workers(log: Path) -> dict[int, int]:
    """worker index -> process id of each worker that is up now, by the log."""
    running = {}
    for event in worker_events(log):
        if event.kind == "up":
            running[event.worker] = event.pid
        else:
            running.pop(event.worker, None)
    return running
