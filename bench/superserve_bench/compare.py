"""The paper's comparisons over benchmark rows: pooling repeated runs, their spread, and an adaptive system
against the fixed models (dominance, accuracy at equal attainment, attainment at equal accuracy)."""

from __future__ import annotations

from .metrics import summarise
from .prometheus import add_books, per_request_ms

__all__ = ["ADAPTIVE", "FIXED_PREFIX", "ATTAINMENT_BAR", "aggregate", "spreads", "run_accuracies", "compare_to_fixed"]

ADAPTIVE = ("SlackFit-LA", "SlackFit")  # the systems compared against the fixed choices
FIXED_PREFIX = "Clipper+"  # fixed-model rows (plain Triton serving one SubNet) are labelled so
ATTAINMENT_BAR = 0.99


def _better_on_both(r: dict, s: dict) -> bool:
    return (r["slo_attainment"] >= s["slo_attainment"] and r["mean_serving_accuracy"] >= s["mean_serving_accuracy"]
            and (r["slo_attainment"], r["mean_serving_accuracy"]) != (s["slo_attainment"], s["mean_serving_accuracy"]))


def _clearly_better(r: dict, s: dict) -> bool:
    """Better on both axes, and on one of them by more than either system's run-to-run spread."""
    tol_att = max(r.get("attainment_spread", 0.0), s.get("attainment_spread", 0.0))
    tol_acc = max(r.get("accuracy_spread", 0.0), s.get("accuracy_spread", 0.0))
    return _better_on_both(r, s) and (r["slo_attainment"] - s["slo_attainment"] > tol_att or
                                      r["mean_serving_accuracy"] - s["mean_serving_accuracy"] > tol_acc)


def compare_to_fixed(rows: list[dict], system: str = "SlackFit-LA") -> dict:
    """Paper-style figures of ``system`` against the best fixed choice (Clipper+): accuracy gain at
    equal-or-better attainment, attainment ratio at equal-or-better accuracy; and which systems dominate it,
    on the mean (``dominated_by``) and beyond the run-to-run spread (``clearly_dominated_by``)."""
    slack = next((r for r in rows if r["system"] == system), None)
    if slack is None:
        return {}
    fixed = [r for r in rows if r["system"].startswith(FIXED_PREFIX)]
    at_least_attainment = [r for r in fixed if r["slo_attainment"] >= slack["slo_attainment"] - 1e-9]
    at_least_accuracy = [r for r in fixed if r["mean_serving_accuracy"] >= slack["mean_serving_accuracy"] - 1e-9]
    out = {}
    if at_least_attainment:
        best = max(at_least_attainment, key=lambda r: r["mean_serving_accuracy"])
        out["accuracy_gain_points_at_equal_attainment"] = 100 * (slack["mean_serving_accuracy"] -
                                                                  best["mean_serving_accuracy"])
        out["vs_fixed_for_accuracy_gain"] = best["system"]
    if at_least_accuracy:
        best = max(at_least_accuracy, key=lambda r: r["slo_attainment"])
        out["attainment_ratio_at_equal_accuracy"] = slack["slo_attainment"] / max(best["slo_attainment"], 1e-9)
        out["vs_fixed_for_attainment_ratio"] = best["system"]
    others = [r for r in rows if r is not slack and r["system"] not in ADAPTIVE]
    out["dominated_by"] = [r["system"] for r in others if _better_on_both(r, slack)]
    out["clearly_dominated_by"] = [r["system"] for r in others if _clearly_better(r, slack)]
    reaching = [r for r in fixed if r["slo_attainment"] >= ATTAINMENT_BAR]
    if reaching:  # wherever a fixed model reaches the bar, the system must too, and be more accurate
        best = max(r["mean_serving_accuracy"] for r in reaching)
        out["bar_rule_holds"] = bool(slack["slo_attainment"] >= ATTAINMENT_BAR and slack["mean_serving_accuracy"] > best)
    return out


def aggregate(label: str, model: str, params: dict, runs: list[list], slo_ms: float,
              books: list[dict] | None = None) -> dict:
    """One row from repeated runs of a system on a trace: figures over all their requests, plus the
    spread (max - min) of attainment and accuracy between runs, the noise any comparison must beat, and the
    server's own books of those runs (``prometheus.model_books``), pooled, where given."""
    per_run = [summarise(records, slo_ms) for records in runs]
    row = {"system": label, "model": model, "parameters": params,
           **summarise([r for records in runs for r in records], slo_ms)}
    if books:
        pooled = add_books(books)
        row["server_books"] = {**per_request_ms(pooled), "outcomes": pooled.get("outcomes", {})}
    row["runs"] = [{"slo_attainment": s["slo_attainment"], "mean_serving_accuracy": s["mean_serving_accuracy"]}
                   for s in per_run]
    return {**row, **spreads(row["runs"])}


def run_accuracies(runs: list[dict]) -> list[float]:
    """Each run's mean serving accuracy, less the runs with nothing on time (accuracy NaN)."""
    return [r["mean_serving_accuracy"] for r in runs if r["mean_serving_accuracy"] == r["mean_serving_accuracy"]]


def spreads(runs: list[dict]) -> dict:
    """Spread (max - min) of attainment and accuracy between runs; a run with nothing on time has no accuracy
    to spread."""
    attainment = [r["slo_attainment"] for r in runs]
    accuracy = run_accuracies(runs)
    return {"attainment_spread": max(attainment) - min(attainment),
            "accuracy_spread": (max(accuracy) - min(accuracy)) if accuracy else 0.0}
