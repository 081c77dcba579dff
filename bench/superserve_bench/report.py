"""The benchmark's Markdown report."""

from __future__ import annotations

__all__ = ["markdown"]


def _summary_line(system: str, c: dict) -> str:
    parts = []
    if "accuracy_gain_points_at_equal_attainment" in c:
        parts.append(f"{c['accuracy_gain_points_at_equal_attainment']:+.2f} points accuracy at equal attainment "
                     f"(vs {c['vs_fixed_for_accuracy_gain']})")
    if "attainment_ratio_at_equal_accuracy" in c:
        parts.append(f"{c['attainment_ratio_at_equal_accuracy']:.2f}x attainment at equal accuracy "
                     f"(vs {c['vs_fixed_for_attainment_ratio']})")
    if "dominated_by" in c:
        parts.append("dominated by: " + (", ".join(c["dominated_by"]) or "none") + "; beyond run-to-run spread: " +
                     (", ".join(c["clearly_dominated_by"]) or "none"))
    return f"**{system}**: " + "; ".join(parts) + "."


def _time_table(rows: list[dict]) -> list[str]:
    """Where a request's time goes, from Triton's own per-model figures beside the client's; and how many
    requests the model itself counted as missed (late or refused) against what the client saw."""
    rows = [r for r in rows if r.get("server_books", {}).get("in_triton_ms") is not None]
    if not rows:
        return []
    lines = ["Where the time goes (Triton's figures for the mean request, ms; the model's own count of misses, "
             "late or refused, beside the client's):", "",
             "| system | requests per execute() | Triton queue | in execute() | output | in Triton | client mean | "
             "misses, model / client |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, o = r["server_books"], r["outcomes"]
        model_misses = (f"{b['outcomes'].get('late', 0) + b['outcomes'].get('shed', 0):.0f}" if b["outcomes"]
                        else "-")
        lines.append(f"| {r['system']} | {b['requests_per_execute']:.1f} | {b['queue_ms']:.2f} | {b['execute_ms']:.2f} | "
                     f"{b['output_ms']:.2f} | {b['in_triton_ms']:.2f} | {r['latency_ms']['mean']:.2f} | "
                     f"{model_misses} / {r['requests'] - o['on_time']} |")
    return lines + [""]


def markdown(results: dict) -> str:
    cap = results["capacity"]
    repeats = results.get("repeats", 1)
    top = (f"given capacity ({cap['top_rps']:.0f} req/s; measured now: {cap['measured_top_rps']:.0f} req/s"
           if "measured_top_rps" in cap else f"measured capacity ({cap['top_rps']:.0f} req/s")
    lines = [f"SLO {results['slo_ms']:.1f} ms for every request; {results['duration_s']:.0f} s per run, {repeats} "
             f"interleaved run(s) per system and trace (figures over all of them; ± is half the spread between runs); "
             f"loads relative to the most accurate SubNet's {top}; the fastest SubNet's: {cap['fastest_rps']:.0f} "
             "req/s).", ""]
    restarts = results.get("restarts", [])
    lines += [f"Server restarts after a Python stub died (upstream Triton bug; the run was repeated): {len(restarts)}"
              + "".join(f"; {r['trace']} / {r['system']} (repeat {r['repeat'] + 1})" for r in restarts) + ".", ""]
    for trace in results["traces"]:
        lines += [f"### {trace['name']} (mean {trace['mean_rate']:.0f} req/s, {trace['requests']} requests per run)", "",
                  "| system | SLO attainment | mean serving accuracy | p99 latency (ms) | shed | late |",
                  "|---|---|---|---|---|---|"]
        for r in trace["rows"]:
            lines.append(f"| {r['system']} | {r['slo_attainment']:.4f} ± {r.get('attainment_spread', 0) / 2:.4f} | "
                         f"{100 * r['mean_serving_accuracy']:.2f}% ± {50 * r.get('accuracy_spread', 0):.2f} | "
                         f"{r['latency_ms']['p99']:.1f} | {r['outcomes']['shed']} | {r['outcomes']['late']} |")
        lines.append("")
        lines += _time_table(trace["rows"])
        for system, c in trace["vs_fixed"].items():
            if c:
                lines.append("- " + _summary_line(system, c))
        lines.append("")
    return "\n".join(lines)
