"""Arrival traces: bursty (base + gamma stream), time-varying (rate ramp) and the Azure Functions trace.

A trace is a sorted array of arrival offsets in seconds plus the parameters that made it. Traces are
seeded, saved to JSON files every tool reads, and exported as perf_analyzer ``--request-intervals``.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Trace", "bursty", "time_varying", "azure_functions", "azure_minute_counts", "AZURE_SAMPLE"]

AZURE_SAMPLE = Path(__file__).resolve().parents[2] / "data" / "azure-functions-2019-sample1000-invocations.csv.gz"


@dataclass
class Trace:
    name: str
    arrivals_s: np.ndarray
    params: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return float(self.params.get("duration_s", self.arrivals_s[-1] if len(self.arrivals_s) else 0.0))

    @property
    def mean_rate(self) -> float:
        return len(self.arrivals_s) / self.duration_s if self.duration_s else 0.0

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"name": self.name, "params": self.params,
                                    "arrivals_s": [round(float(t), 7) for t in self.arrivals_s]}))

    @staticmethod
    def load(path: Path) -> "Trace":
        data = json.loads(Path(path).read_text())
        return Trace(data["name"], np.asarray(data["arrivals_s"], dtype=np.float64), data.get("params", {}))

    def write_request_intervals(self, path: Path) -> None:
        """perf_analyzer ``--request-intervals``: one gap in microseconds per line."""
        gaps = np.diff(np.concatenate([[0.0], self.arrivals_s])) * 1e6
        Path(path).write_text("\n".join(str(max(1, int(round(g)))) for g in gaps) + "\n")

    def rate_series(self, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(bin start times, arrivals per second in each bin)."""
        edges = np.arange(0.0, self.duration_s + bin_s, bin_s)
        counts, _ = np.histogram(self.arrivals_s, edges)
        return edges[:-1], counts / bin_s


def _gamma_gaps(rng: np.random.Generator, rate: float, cv2: float, n: int) -> np.ndarray:
    """Gamma inter-arrival times with mean 1/rate and squared coefficient of variation cv2."""
    if cv2 == 0:
        return np.full(n, 1.0 / rate)
    return rng.gamma(1.0 / cv2, cv2 / rate, n)


def _check(**values: float) -> None:
    for name, v in values.items():
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v}")


def bursty(base_rate: float, variable_rate: float, cv2: float, duration_s: float, seed: int = 0) -> Trace:
    """SuperServe's bursty trace: a steady stream (CV^2 = 0) at ``base_rate`` plus a gamma stream at
    ``variable_rate`` with squared coefficient of variation ``cv2``."""
    _check(base_rate=base_rate, variable_rate=variable_rate, cv2=cv2, duration_s=duration_s)
    rng = np.random.default_rng(seed)
    parts = []
    if base_rate > 0:
        parts.append(np.arange(0.0, duration_s, 1.0 / base_rate) + rng.uniform(0, 1.0 / base_rate))
    if variable_rate > 0:
        n = int(variable_rate * duration_s * 1.5) + 100
        times = np.cumsum(_gamma_gaps(rng, variable_rate, cv2, n))
        while times[-1] < duration_s:
            times = np.concatenate([times, times[-1] + np.cumsum(_gamma_gaps(rng, variable_rate, cv2, n))])
        parts.append(times)
    arrivals = np.sort(np.concatenate(parts)) if parts else np.empty(0)
    arrivals = arrivals[arrivals < duration_s]
    return Trace(f"bursty-b{base_rate:g}-v{variable_rate:g}-cv{cv2:g}", arrivals,
                 {"kind": "bursty", "base_rate": base_rate, "variable_rate": variable_rate, "cv2": cv2,
                  "duration_s": duration_s, "seed": seed})


def time_varying(rate_from: float, rate_to: float, acceleration: float, cv2: float, duration_s: float,
                 seed: int = 0) -> Trace:
    """Rate ramps linearly from ``rate_from`` to ``rate_to`` at ``acceleration`` (q/s^2), then holds;
    gamma inter-arrivals with squared coefficient of variation ``cv2`` at the current rate."""
    _check(rate_from=rate_from, rate_to=rate_to, acceleration=acceleration, cv2=cv2, duration_s=duration_s)
    if min(rate_from, rate_to) <= 0 or acceleration <= 0:
        raise ValueError("rates and acceleration must be > 0")
    rng = np.random.default_rng(seed)
    ramp_s = abs(rate_to - rate_from) / acceleration
    sign = 1.0 if rate_to >= rate_from else -1.0
    t, out = 0.0, []
    while True:
        rate = rate_from + sign * acceleration * min(t, ramp_s)
        t += float(_gamma_gaps(rng, rate, cv2, 1)[0])
        if t >= duration_s:
            break
        out.append(t)
    return Trace(f"ramp-{rate_from:g}-to-{rate_to:g}-a{acceleration:g}-cv{cv2:g}", np.asarray(out),
                 {"kind": "time_varying", "rate_from": rate_from, "rate_to": rate_to, "acceleration": acceleration,
                  "cv2": cv2, "duration_s": duration_s, "seed": seed})


def azure_minute_counts(path: Path = AZURE_SAMPLE, functions: tuple[int, int] | None = None) -> np.ndarray:
    """Invocations per minute of the day, summed over the sample's functions (rows ``functions`` = [first, last)
    of the file, default all): 1,440 values."""
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        first = header.index("minute_1")
        total = np.zeros(len(header) - first)
        for i, row in enumerate(reader):
            if functions is None or functions[0] <= i < functions[1]:
                total += np.asarray(row[first:], dtype=np.float64)
    return total


def azure_functions(mean_rate: float, duration_s: float, seed: int = 0, path: Path = AZURE_SAMPLE,
                    window: tuple[int, int] | None = None, functions: tuple[int, int] | None = None) -> Trace:
    """The day (or the minutes ``window`` = [first, last) of it, of the functions ``functions``) compressed into
    ``duration_s`` with its shape kept, rescaled to ``mean_rate``; Poisson arrivals inside each compressed minute."""
    _check(mean_rate=mean_rate, duration_s=duration_s)
    counts = azure_minute_counts(path, functions)
    if window is not None:
        counts = counts[window[0]:window[1]]
    rng = np.random.default_rng(seed)
    step = duration_s / len(counts)
    expected = counts / counts.mean() * mean_rate * step
    parts = [i * step + np.sort(rng.uniform(0, step, rng.poisson(lam))) for i, lam in enumerate(expected)]
    part = (f"-min{window[0]}-{window[1]}" if window else "") + \
        (f"-fn{functions[0]}-{functions[1]}" if functions else "")
    return Trace(f"azure{part}-{mean_rate:g}qps-{duration_s:g}s", np.concatenate(parts),
                 {"kind": "azure_functions", "mean_rate": mean_rate, "duration_s": duration_s, "seed": seed,
                  "window": window, "functions": functions, "peak_to_mean": float(counts.max() / counts.mean())})
