"""The paper's serving metrics over per-request records.

- SLO attainment: fraction of all requests answered with a result within their SLO (shed, late,
  failed and timed-out requests all count as misses).
- Mean serving accuracy: mean profiled accuracy of the SubNets that served the on-time requests.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import numpy as np

__all__ = ["summarise"]


def summarise(records: Iterable, slo_ms: float) -> dict:
    records = list(records)
    n = len(records)
    outcomes = Counter(r.outcome for r in records)
    on_time = [r for r in records if r.outcome == "on_time"]
    answered = np.array([r.latency_ms for r in records if r.outcome in ("on_time", "late")])
    send_errors = np.array([r.send_error_ms for r in records]) if records else np.zeros(1)
    pct = (lambda q: float(np.percentile(answered, q))) if len(answered) else (lambda q: float("nan"))
    subnets = Counter(r.subnet for r in on_time)
    return {
        "requests": n,
        "slo_ms": slo_ms,
        "slo_attainment": len(on_time) / n if n else float("nan"),
        "mean_serving_accuracy": float(np.mean([r.accuracy for r in on_time])) if on_time else float("nan"),
        "outcomes": {k: outcomes.get(k, 0) for k in ("on_time", "late", "shed", "error", "timeout")},
        "latency_ms": {"mean": float(answered.mean()) if len(answered) else float("nan"), "p50": pct(50),
                       "p90": pct(90), "p99": pct(99), "max": pct(100)},
        "client_send_error_ms": {"p50": float(np.percentile(send_errors, 50)),
                                 "p99": float(np.percentile(send_errors, 99))},
        "subnet_share": {str(k): v / len(on_time) for k, v in sorted(subnets.items())} if on_time else {},
    }
