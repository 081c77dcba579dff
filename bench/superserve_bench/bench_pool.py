"""Pool several full benchmark runs: is a system's place in the trade-off the same from run to run?

One run of ``make bench`` measures each system twice per trace; on a shared 2-core machine the spread between
runs is as large as the gaps between the best systems. This pools every measured run of every benchmark folder
given (each run counts once), trace by trace, matched by kind and load relative to the capacity each benchmark
measured, and applies the benchmark's own comparison to the pooled means.

    .venv/bin/python -m superserve_bench.bench_pool results/bench results/bench_run2 [--out pooled.md] [--plot p.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .compare import ADAPTIVE, ATTAINMENT_BAR, compare_to_fixed, run_accuracies, spreads
from .plots import plot_tradeoff

__all__ = ["trace_label", "pool", "markdown", "main"]


def trace_label(trace: dict, top_rps: float) -> str:
    """The same experiment across runs: a held-out trace by its name (which says its window, functions or
    burstiness and load, whatever the seed), another by kind, burstiness and load relative to the measured top
    capacity."""
    if trace.get("name", "").startswith("heldout-"):
        return trace["name"]
    params = trace["params"]
    load = trace["mean_rate"] / top_rps
    if params["kind"] == "bursty":
        return f"bursty {load:.1f}x CV² {params['cv2']:g}"
    return f"{params['kind'].replace('_', ' ')} {load:.1f}x"


def pool(results: list[dict]) -> dict[str, list[dict]]:
    """Per trace label, one row per system: mean attainment and accuracy over every run of every benchmark,
    the spread (max - min) between those runs, and the per-run figures."""
    runs: dict[str, dict[str, list[dict]]] = {}
    for result in results:
        for trace in result["traces"]:
            by_system = runs.setdefault(trace_label(trace, result["capacity"]["top_rps"]), {})
            for row in trace["rows"]:
                # a benchmark of one run per system may not list its runs: the row is that run
                per_run = row.get("runs") or [{k: row[k] for k in ("slo_attainment", "mean_serving_accuracy")}]
                by_system.setdefault(row["system"], []).extend(per_run)
    pooled = {}
    for label, by_system in runs.items():
        rows = []
        for system, per_run in by_system.items():
            accuracy = run_accuracies(per_run)
            rows.append({"system": system, "runs": per_run,
                         "slo_attainment": sum(r["slo_attainment"] for r in per_run) / len(per_run),
                         "mean_serving_accuracy": sum(accuracy) / len(accuracy) if accuracy else float("nan"),
                         **spreads(per_run)})
        pooled[label] = rows
    return pooled


BAR_VERDICT = {True: "holds", False: "misses",
               None: f"has nothing to beat (no plain-Triton SubNet reached {ATTAINMENT_BAR})"}


def markdown(pooled: dict[str, list[dict]], sources: list[str]) -> str:
    """One table per trace; runs are counted per system, since the pooled benchmarks may have run different
    systems and repeats. Below each table, the adaptive systems' dominance and issue 14's bar on the pooled means."""
    lines = [f"Pooled over {len(sources)} benchmark run(s) ({', '.join(sources)}); every measured run counts once. "
             f"± is half the spread between runs. The bar (issue 14): {ATTAINMENT_BAR} attainment, more accurate than "
             "every plain-Triton SubNet that reaches it.", ""]
    for label, rows in pooled.items():
        lines += [f"### {label}", "", "| system | runs | SLO attainment | mean serving accuracy |", "|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['system']} | {len(r['runs'])} | {r['slo_attainment']:.4f} ± "
                         f"{r['attainment_spread'] / 2:.4f} | {100 * r['mean_serving_accuracy']:.2f}% ± "
                         f"{50 * r['accuracy_spread']:.2f} |")
        lines.append("")
        for system in ADAPTIVE:
            c = compare_to_fixed(rows, system)
            if c:
                lines.append(f"- **{system}**: dominated on the pooled mean by: "
                             f"{', '.join(c['dominated_by']) or 'none'}; beyond the spread between runs: "
                             f"{', '.join(c['clearly_dominated_by']) or 'none'}; the bar "
                             f"{BAR_VERDICT[c.get('bar_rule_holds')]}.")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmarks", type=Path, nargs="+", help="benchmark output folders (each with results.json)")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    p.add_argument("--plot", type=Path, default=None, help="also plot attainment vs accuracy per trace here (.png)")
    args = p.parse_args(argv)
    missing = [str(b) for b in args.benchmarks if not (b / "results.json").is_file()]
    if missing:
        p.error(f"no results.json in {', '.join(missing)}: run `make bench` first")
    pooled = pool([json.loads((b / "results.json").read_text()) for b in args.benchmarks])
    text = markdown(pooled, [str(b) for b in args.benchmarks])
    if args.out:
        args.out.write_text(text + "\n")
    if args.plot:
        plot_tradeoff([{"name": f"{label} (pooled)", "rows": rows} for label, rows in pooled.items()], args.plot)
    print(text)


if __name__ == "__main__":
    main()
