"""Reading the server's Prometheus text (Triton's metrics port): what the benchmarks check the server's own
books with, so the client's view and the server's can be compared."""

from __future__ import annotations

import urllib.request

__all__ = ["scrape", "total"]


def scrape(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """Every sample on the page, keyed by metric name with its label text, e.g. ``name{model="m"}``."""
    out: dict[str, float] = {}
    for line in urllib.request.urlopen(url, timeout=timeout_s).read().decode().splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


def total(metrics: dict[str, float], prefix: str, label: str = "") -> float:
    """Sum of the samples whose key starts with ``prefix`` and contains ``label`` (e.g. ``model="superserve"``)."""
    return sum(v for k, v in metrics.items() if k.startswith(prefix) and label in k)
