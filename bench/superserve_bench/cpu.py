"""CPU time by role while a benchmark runs: Triton's frontend (the tritonserver process), each model's Python stub
(for a routed model: the router), its worker processes, a remote worker host, and the load generator. On a
2-core machine this says whether the cores or the serving design limit a throughput."""

from __future__ import annotations

import os
import re
import resource
from collections import Counter
from pathlib import Path

__all__ = ["CpuMeter"]

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_MODEL = re.compile(r"/([^/]+)/\d+/model\.py|--folder \S*/([^/ ]+)/\d+")


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, CPU ticks so far, command line)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended while we looked
        fields = text[text.rindex(")") + 2:].split()
        out[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), cmdline)
    return out


def _ended_children_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """``start()``, the work, ``stop()`` -> CPU seconds per role over that span. ``servers``: role name -> a
    tritonserver's pid (the router's server as "frontend", a worker host as e.g. "remote host")."""

    def __init__(self, servers: dict[str, int]) -> None:
        self._servers = servers
        self._start: dict[int, tuple[int, int, str]] = {}

    def _role(self, pid: int, processes: dict) -> str | None:
        chain, p = [], pid
        while p in processes and len(chain) < 4:
            chain.append(p)
            p = processes[p][0]
        cmd = processes[pid][2]
        if "perf_analyzer" in cmd or "superserve_bench" in cmd:
            return "load generator"
        for role, server in self._servers.items():
            if server not in chain:
                continue
            if pid == server:
                return role
            if role != "frontend":
                return role  # everything a worker host runs
            model = _MODEL.search(cmd)
            name = next((g for g in model.groups() if g), "?") if model else "?"
            if "serving.workers" in cmd:
                return f"workers of {name}"
            if "triton_python_backend_stub" in cmd:
                return f"stub of {name}"
            return None
        return None

    def start(self) -> None:
        self._start = _processes()
        self._children_s = _ended_children_s()

    def stop(self) -> dict[str, float]:
        end = _processes()
        seconds: Counter = Counter()
        # a load generator this process ran to its end (perf_analyzer) is gone from /proc by now
        seconds["load generator"] += _ended_children_s() - self._children_s
        for pid, (_, ticks, _) in end.items():
            role = self._role(pid, end)
            if role is not None:
                seconds[role] += (ticks - self._start.get(pid, (0, 0, ""))[1]) * _TICK_S
        return dict(seconds)
