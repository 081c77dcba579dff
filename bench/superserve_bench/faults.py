"""Worker faults on a live server, read from Triton's log: the router logs every worker it starts and every one it
loses, with the process id, so a benchmark or a test knows which process to kill and when the router noticed."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WorkerEvent", "worker_events", "running_workers"]

# I1207 02:39:54.744688 3303 model.py:42] "superserve.serving.router: worker 0 (local, cpu) is up, process id 3332"
# I1207 02:39:56.1 3303 model.py:42] "superserve.serving.router: worker 2 (remote, 127.0.0.1:8101/m) lost, at 127..."
_EVENT = re.compile(r"^[IWE](\d{4}) (\d\d:\d\d:\d\d\.\d+) .*superserve\.serving\.router: worker (\d+) \(.*?\) "
                    r"(is up|lost), (process id \d+|at [^ :\"]+:\d+)")


@dataclass(frozen=True)
class WorkerEvent:
    time_s: float  # wall clock (time.time()), from the log line's timestamp
    worker: int
    kind: str  # "up" or "lost"
    where: str  # "process id <pid>" (a local worker) or "at <host:port>" (a remote one)

    @property
    def pid(self) -> int | None:
        return int(self.where.split()[-1]) if self.where.startswith("process id") else None


def worker_events(log: Path) -> list[WorkerEvent]:
    """Every worker start and loss the router logged, in order."""
    year = datetime.datetime.now().year
    events = []
    for line in Path(log).read_text(errors="replace").splitlines():
        match = _EVENT.match(line)
        if match:
            day, clock, worker, kind, where = match.groups()
            stamp = datetime.datetime.strptime(f"{year}{day} {clock}", "%Y%m%d %H:%M:%S.%f").timestamp()
            events.append(WorkerEvent(stamp, int(worker), "up" if kind == "is up" else "lost", where))
    return events


def running_workers(log: Path) -> dict[int, int | None]:
    """worker index -> process id (None for a remote worker) of each worker that is up now, by the log."""
    running = {}
    for event in worker_events(log):
        if event.kind == "up":
            running[event.worker] = event.pid
        else:
            running.pop(event.worker, None)
    return running
