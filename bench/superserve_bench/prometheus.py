"""Reading the server's Prometheus text (Triton's metrics port): what the benchmarks check the server's own
books with, so the client's view and the server's can be compared."""

from __future__ import annotations

import re
import urllib.request

__all__ = ["scrape", "total", "model_books", "add_books", "per_request_ms", "TRITON_DURATIONS"]


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


# Triton's cumulative per-request durations (us) for every model, the parts of a request's time inside the server
TRITON_DURATIONS = ("queue", "compute_input", "compute_infer", "compute_output", "request")
_OUTCOME = re.compile(r'outcome="([a-z_]+)"')


def model_books(before: dict[str, float], after: dict[str, float], model: str) -> dict:
    """What the server's own books say of ``model`` between two scrapes: requests and ``execute()`` calls
    (Triton), each part of the requests' time inside Triton summed over them (us), and, for a SuperServe model,
    how it judged each request (``superserve_requests_total`` by outcome). Counts, so several intervals add up."""
    label = f'model="{model}"'

    def delta(prefix: str) -> float:
        return total(after, prefix, label) - total(before, prefix, label)

    books = {"requests": delta("nv_inference_count"), "executions": delta("nv_inference_exec_count"),
             **{f"{part}_us": delta(f"nv_inference_{part}_duration_us") for part in TRITON_DURATIONS}}
    outcomes: dict[str, float] = {}
    for key, value in after.items():
        if key.startswith("superserve_requests_total") and label in key and (found := _OUTCOME.search(key)):
            outcomes[found.group(1)] = outcomes.get(found.group(1), 0.0) + value - before.get(key, 0.0)
    if outcomes:
        books["outcomes"] = outcomes
    return books


def add_books(books: list[dict]) -> dict:
    """Several intervals' ``model_books`` as one."""
    out: dict = {}
    for b in books:
        for key, value in b.items():
            if key == "outcomes":
                merged = out.setdefault("outcomes", {})
                for outcome, count in value.items():
                    merged[outcome] = merged.get(outcome, 0.0) + count
            else:
                out[key] = out.get(key, 0.0) + value
    return out


def per_request_ms(books: dict) -> dict:
    """Pooled books as the mean request: ms in Triton's queue, in the model's ``execute()`` (Triton's compute
    input and infer: for a SuperServe round, also the time an answer waits for the round's later batches), in
    Triton's handling of the returned outputs, and in Triton overall; and requests per ``execute()`` call."""
    n = books.get("requests", 0.0)
    if not n:
        return {}
    ms = {part: books[f"{part}_us"] / n / 1e3 for part in TRITON_DURATIONS}
    return {"requests_per_execute": n / max(books["executions"], 1.0), "queue_ms": ms["queue"],
            "execute_ms": ms["compute_input"] + ms["compute_infer"], "output_ms": ms["compute_output"],
            "in_triton_ms": ms["request"]}
