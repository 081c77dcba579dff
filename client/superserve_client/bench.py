"""The headline benchmark: SlackFit vs fixed-model serving and the other policies, on the same traces,
against one real tritonserver. Writes JSON, a Markdown table and plots.

    .venv/bin/python -m superserve_client.bench --out results/bench [--quick]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from superserve.tritonenv import REPO_ROOT, start_server

from .metrics import summarise
from .prometheus import scrape, total
from .replay import replay_sync
from .traces import Trace, azure_functions, bursty

__all__ = ["main", "systems_for", "make_bench_repository", "compare_to_fixed"]

MODEL_DIR = REPO_ROOT / "model_repository" / "superserve"
ARTEFACTS = ("model.py", "supernet.pt", "subnet_norm.pt", "profile.json")
LEAD_IN_S = 2.0  # of each trace, replayed unmeasured before every run (see lead_in)
MAX_RERUNS = 3  # restarts of the server for one run after a Python stub died, before giving up


BENCH_POLICIES = ("slackfit", "slackfit-la", "maxacc", "maxbatch")


def model_for(policy: str) -> str:
    """The benchmark repository's model that runs ``policy``."""
    return "superserve" if policy == "slackfit" else f"superserve_{policy.replace('-', '_')}"


def make_bench_repository(out: Path, policies=BENCH_POLICIES) -> Path:
    """A model repository with one model per policy, all sharing the built artefacts (symlinks)."""
    repo = out / "model_repository"
    if repo.exists():
        shutil.rmtree(repo)
    config = (MODEL_DIR / "config.pbtxt").read_text()
    for policy in policies:
        name = model_for(policy)
        version = repo / name / "1"
        version.mkdir(parents=True)
        text = re.sub(r'name: "superserve"', f'name: "{name}"', config)
        text = re.sub(r'(key: "policy" value: \{ string_value: )"[^"]*"', rf'\1"{policy}"', text)
        (repo / name / "config.pbtxt").write_text(text)
        for artefact in ARTEFACTS:
            (version / artefact).symlink_to((MODEL_DIR / "1" / artefact).resolve())
    return repo


def systems_for(profile: dict) -> list[tuple[str, str, dict]]:
    """(label, model, request parameters): SlackFit (paper), SlackFit-LA (ours), MaxAcc, MaxBatch, INFaaS,
    six Clipper+ models."""
    n = len(profile["subnets"])
    six = sorted({round(i * (n - 1) / 5) for i in range(6)})
    paper = model_for("slackfit")  # pinned to one SubNet, it serves INFaaS and Clipper+ too
    systems = [("SlackFit", paper, {}), ("SlackFit-LA", model_for("slackfit-la"), {}),
               ("MaxAcc", model_for("maxacc"), {}),
               ("MaxBatch", model_for("maxbatch"), {}), ("INFaaS", paper, {"subnet": 0})]
    systems += [(f"Clipper+ {profile['subnets'][i]['accuracy']:.3f}", paper, {"subnet": i}) for i in six]
    return systems


def measure_capacity(server, profile: dict, work: Path, seconds: float = 4.0) -> dict:
    """Saturation throughput (req/s) of the most accurate and the fastest SubNet, measured with
    perf_analyzer on this machine now: the yardstick the loads are set against."""
    from superserve.tools.bench_server import saturation

    from .perf import write_input_data

    data = write_input_data(work / "perf_input.json")
    top = len(profile["subnets"]) - 1
    return {"top_rps": saturation(server, data, 32, seconds, subnet=top)["throughput_rps"],
            "fastest_rps": saturation(server, data, 32, seconds, subnet=0)["throughput_rps"]}


def load_setup(slo_ms: float | None = None):
    """The built profile, the model's serving config, and the SLO every benchmark uses unless one is given."""
    from superserve.serving.config import config_from_pbtxt

    profile = json.loads((MODEL_DIR / "1" / "profile.json").read_text())
    config = config_from_pbtxt(MODEL_DIR / "config.pbtxt")
    return profile, config, slo_ms or default_slo_ms(profile, config.overhead_per_sample_ms, config.margin_ms)


def default_slo_ms(profile: dict, overhead_per_sample_ms: float, margin_ms: float) -> float:
    """Twice the most accurate SubNet's cost at the largest batch under the serving cost model."""
    b = profile["max_batch_size"]
    return round(2 * (profile["subnets"][-1]["latency_ms"][str(b)] + b * overhead_per_sample_ms + margin_ms), 1)


class _MetricsPoller(threading.Thread):
    """Samples the server's batch-size histogram while a trace runs: mean batch size over time."""

    def __init__(self, url: str, period_s: float = 0.5):
        super().__init__(daemon=True)
        self.url, self.period_s = url, period_s
        self.samples: list[tuple[float, float, float]] = []
        self.stop_event = threading.Event()

    def _read(self) -> tuple[float, float]:
        metrics = scrape(self.url, timeout_s=2)
        return total(metrics, "superserve_batch_size_sum"), total(metrics, "superserve_batch_size_count")

    def run(self):
        start = time.perf_counter()
        while not self.stop_event.wait(self.period_s):
            try:
                self.samples.append((time.perf_counter() - start, *self._read()))
            except OSError:
                pass


ADAPTIVE = ("SlackFit", "SlackFit-LA")  # the systems compared against the fixed choices


def _better_on_both(r: dict, s: dict) -> bool:
    return (r["slo_attainment"] >= s["slo_attainment"] and r["mean_serving_accuracy"] >= s["mean_serving_accuracy"]
            and (r["slo_attainment"], r["mean_serving_accuracy"]) != (s["slo_attainment"], s["mean_serving_accuracy"]))


def _clearly_better(r: dict, s: dict) -> bool:
    """Better on both axes, and on one of them by more than either system's run-to-run spread."""
    tol_att = max(r.get("attainment_spread", 0.0), s.get("attainment_spread", 0.0))
    tol_acc = max(r.get("accuracy_spread", 0.0), s.get("accuracy_spread", 0.0))
    return _better_on_both(r, s) and (r["slo_attainment"] - s["slo_attainment"] > tol_att or
                                      r["mean_serving_accuracy"] - s["mean_serving_accuracy"] > tol_acc)


def compare_to_fixed(rows: list[dict], system: str = "SlackFit") -> dict:
    """Paper-style figures of ``system`` against the best fixed choice (Clipper+): accuracy gain at
    equal-or-better attainment, attainment ratio at equal-or-better accuracy; and which systems dominate it,
    on the mean (``dominated_by``) and beyond the run-to-run spread (``clearly_dominated_by``)."""
    slack = next((r for r in rows if r["system"] == system), None)
    if slack is None:
        return {}
    fixed = [r for r in rows if r["system"].startswith("Clipper+")]
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
    return out


def aggregate(label: str, model: str, params: dict, runs: list[list], slo_ms: float) -> dict:
    """One row from repeated runs of a system on a trace: figures over all their requests, plus the
    spread (max - min) of attainment and accuracy between runs, the noise any comparison must beat."""
    per_run = [summarise(records, slo_ms) for records in runs]
    row = {"system": label, "model": model, "parameters": params,
           **summarise([r for records in runs for r in records], slo_ms)}
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


def warm_up(server, systems, trace: Trace, slo_ms: float, images, seconds: float = 3.0) -> None:
    """A few seconds of traffic through every model first: each is its own Python process, and its
    first seconds (allocator, caches, the learned overhead) are not what the benchmark measures."""
    for model in dict.fromkeys(model for _, model, _ in systems):
        replay_sync(head(trace, seconds), server.grpc_url, slo_ms, images, {}, model=model)


def head(trace: Trace, seconds: float) -> Trace:
    return Trace(f"{trace.name}-head", trace.arrivals_s[trace.arrivals_s < seconds], {"duration_s": seconds})


def lead_in(server, trace: Trace, slo_ms: float, images, params: dict, model: str) -> None:
    """LEAD_IN_S of the trace through the system about to run it, unmeasured.

    Without it, a run inherited the state the previous run left in the model (the learned cost model, the
    arrival-rate estimate), from another system sharing the model or from a lighter trace: in one full
    benchmark the first pass over a trace was the worse one in 20 of the 25 system/trace pairs whose two runs
    differed."""
    replay_sync(head(trace, LEAD_IN_S), server.grpc_url, slo_ms, images, params, model=model)


def _run(server, trace: Trace, slo_ms: float, images, params: dict, model: str, watch: bool):
    """One measured run after its lead-in; with ``watch``, the server's batch sizes sampled during it."""
    lead_in(server, trace, slo_ms, images, params, model)
    poller = _MetricsPoller(server.metrics_url)
    if watch:
        poller.start()
    records = replay_sync(trace, server.grpc_url, slo_ms, images, params, model=model)
    if watch:
        poller.stop_event.set()
        poller.join()
    return records, poller


def build_traces(top: float, quick: bool, duration_s: float, seed: int) -> list[Trace]:
    """Loads relative to the most accurate SubNet's measured capacity ``top``, from below it to above it."""
    traces = [azure_functions(mean_rate=0.8 * top, duration_s=duration_s, seed=seed)]
    loads = (1.2,) if quick else (0.7, 1.4)
    cv2s = (8,) if quick else (2, 8)
    for load in loads:
        for cv2 in cv2s:
            rate = load * top  # half steady, half gamma-bursty, as in the paper's traces
            traces.append(bursty(rate / 2, rate / 2, cv2, duration_s, seed=seed))
    return traces


def plot_tradeoff(traces: list[dict], path: Path) -> Path:
    """SLO attainment vs mean serving accuracy, one panel per trace, one point per system (the paper's Fig. 9),
    with the spread between runs as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(traces), figsize=(5 * len(traces), 4.2), squeeze=False)
    for ax, trace in zip(axes[0], traces):
        for row in trace["rows"]:
            label = row["system"]
            style = dict(marker="*", s=220, c="tab:red", zorder=5) if label == "SlackFit" else dict(
                marker="P", s=120, c="tab:brown", zorder=4) if label == "SlackFit-LA" else (
                dict(marker="o", s=50, c="tab:gray") if label.startswith("Clipper+") else dict(
                marker="s", s=60, c={"MaxAcc": "tab:blue", "MaxBatch": "tab:orange"}.get(label, "tab:green")))
            x, y = row["mean_serving_accuracy"] * 100, row["slo_attainment"]
            ax.scatter(x, y, label=label, **style)
            if row.get("attainment_spread") or row.get("accuracy_spread"):
                ax.errorbar(x, y, xerr=50 * row.get("accuracy_spread", 0), yerr=row.get("attainment_spread", 0) / 2,
                            fmt="none", ecolor=style["c"], alpha=0.6, zorder=3)
        ax.set_title(trace["name"], fontsize=9)
        ax.set_xlabel("mean serving accuracy (%)")
        ax.set_ylabel("SLO attainment")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [plot_tradeoff(results["traces"], out / "attainment_vs_accuracy.png")]
    dyn = results.get("dynamics")
    if dyn:
        fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
        axes[0].plot(dyn["t_s"], dyn["arrival_rate"], c="tab:blue")
        axes[0].set_ylabel("arrivals / s")
        axes[1].plot(dyn["t_s"], np.asarray(dyn["accuracy"]) * 100, c="tab:green")
        axes[1].set_ylabel("served accuracy (%)")
        axes[2].plot(dyn["batch_t_s"], dyn["batch_size"], c="tab:purple")
        axes[2].set_ylabel("mean batch size")
        axes[2].set_xlabel("time (s)")
        axes[0].set_title(f"SlackFit-LA dynamics on {dyn['trace']}")
        fig.tight_layout()
        path = out / "dynamics.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def dynamics(trace: Trace, records, poller: _MetricsPoller, bin_s: float) -> dict:
    t, rate = trace.rate_series(bin_s)
    scheduled = np.array([r.scheduled_s for r in records])
    acc = np.array([r.accuracy if r.outcome == "on_time" else np.nan for r in records])
    idx = np.minimum((scheduled / bin_s).astype(int), len(t) - 1)
    accuracy = [float(np.nanmean(acc[idx == i])) if np.any(~np.isnan(acc[idx == i])) else float("nan")
                for i in range(len(t))]
    samples = np.array(poller.samples) if poller.samples else np.zeros((0, 3))
    batch_t, batch = [], []
    for a, b in zip(samples[:-1], samples[1:]):
        if b[2] > a[2]:
            batch_t.append(float(b[0]))
            batch.append(float((b[1] - a[1]) / (b[2] - a[2])))
    return {"trace": trace.name, "t_s": t.tolist(), "arrival_rate": rate.tolist(), "accuracy": accuracy,
            "batch_t_s": batch_t, "batch_size": batch}


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


def markdown(results: dict) -> str:
    cap = results["capacity"]
    repeats = results.get("repeats", 1)
    lines = [f"SLO {results['slo_ms']:.1f} ms for every request; {results['duration_s']:.0f} s per run, {repeats} "
             f"interleaved run(s) per system and trace (figures over all of them; ± is half the spread between runs); "
             f"loads relative to the most accurate SubNet's measured capacity ({cap['top_rps']:.0f} req/s; the fastest "
             f"SubNet's: {cap['fastest_rps']:.0f} req/s).", ""]
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
        for system, c in trace["vs_fixed"].items():
            if c:
                lines.append("- " + _summary_line(system, c))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from tqdm import tqdm

    from superserve.data import load_digits

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bench")
    p.add_argument("--quick", action="store_true", help="a smaller grid (about 5 minutes)")
    p.add_argument("--duration-s", type=float, default=None, help="seconds per run (default 20, quick 8)")
    p.add_argument("--slo-ms", type=float, default=None,
                   help="SLO for all requests (default: 2x the most accurate SubNet's batch-16 latency)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=None,
                   help="runs per system and trace, interleaved, to measure run-to-run noise (default 2, quick 1)")
    p.add_argument("--systems", default="", help="comma-separated labels to run (default: all), e.g. SlackFit,INFaaS")
    p.add_argument("--traces", default="", help="run only traces whose name contains this text, e.g. cv8")
    args = p.parse_args(argv)
    profile, config, slo_ms = load_setup(args.slo_ms)
    duration = args.duration_s or (8.0 if args.quick else 12.0)
    repeats = args.repeats or (1 if args.quick else 2)
    args.out.mkdir(parents=True, exist_ok=True)
    systems = systems_for(profile)
    if args.systems:
        wanted = {label.strip() for label in args.systems.split(",")}
        unknown = wanted - {label for label, _, _ in systems}
        if unknown:
            p.error(f"unknown systems {sorted(unknown)}; choose from {[label for label, _, _ in systems]}")
        systems = [s for s in systems if s[0] in wanted]
    images = load_digits().held_out_x.numpy()
    repo = make_bench_repository(args.out)
    server = start_server(repo, args.out / "server.log")
    results = {"slo_ms": slo_ms, "duration_s": duration, "repeats": repeats, "profile_threads": profile.get("threads"),
               "serving_config": {"margin_ms": config.margin_ms,
                                  "overhead_per_sample_ms": config.overhead_per_sample_ms}, "traces": [],
               "restarts": []}
    try:
        results["capacity"] = measure_capacity(server, profile, args.out)
        traces = [t for t in build_traces(results["capacity"]["top_rps"], args.quick, duration, args.seed)
                  if args.traces in t.name]
        if not traces:
            raise SystemExit(f"no benchmark trace name contains {args.traces!r}")
        for trace in traces:
            trace.save(args.out / "traces" / f"{trace.name}.json")
        warm_up(server, systems, traces[0], slo_ms, images)
        bar = tqdm(total=len(traces) * len(systems) * repeats, desc="benchmark runs", unit="run")
        for t_index, trace in enumerate(traces):
            runs: dict[str, list] = {label: [] for label, _, _ in systems}
            for rep in range(repeats):
                # interleaved, each repeat in another order, so a slow spell of the machine is shared out
                order = systems if rep % 2 == 0 else systems[::-1]
                for label, model, params in order:
                    bar.set_postfix_str(f"{trace.name} / {label}")
                    watch = t_index == 0 and rep == 0 and label == "SlackFit-LA"
                    records, poller = _run(server, trace, slo_ms, images, params, model, watch)
                    reruns = 0
                    while dead := server.dead_stubs():
                        if reruns == MAX_RERUNS:
                            raise SystemExit(f"Python stubs kept dying on {trace.name} / {label}; see "
                                             f"{args.out / 'server.log'}")
                        reruns += 1
                        # A Python stub died (upstream Triton bug, see superserve.supervisor): this run's
                        # figures are void. Restart the server, warm it up, run again, and say so.
                        results["restarts"].append({"trace": trace.name, "system": label, "repeat": rep,
                                                    "dead_stubs": dead})
                        tqdm.write(f"a Python stub died during {trace.name} / {label}: restarting the server "
                                   "and running it again")
                        server.stop()
                        shutil.copy(args.out / "server.log", args.out / f"server.crash{len(results['restarts'])}.log")
                        server = start_server(repo, args.out / "server.log")
                        warm_up(server, systems, traces[0], slo_ms, images)
                        records, poller = _run(server, trace, slo_ms, images, params, model, watch)
                    if watch:
                        results["dynamics"] = dynamics(trace, records, poller, bin_s=max(duration / 40, 0.25))
                        (args.out / "records_slackfit_la.json").write_text(json.dumps([asdict(r) for r in records]))
                    runs[label].append(records)
                    bar.update(1)
                    time.sleep(0.5)  # let the server drain before the next run
            rows = [aggregate(label, model, params, runs[label], slo_ms) for label, model, params in systems]
            results["traces"].append({"name": trace.name, "params": trace.params, "mean_rate": trace.mean_rate,
                                      "requests": len(trace.arrivals_s), "rows": rows,
                                      "vs_fixed": {system: compare_to_fixed(rows, system) for system in ADAPTIVE}})
        bar.close()
        learned = scrape(server.metrics_url).get('superserve_overhead_per_sample_ms{model="superserve"}')
        results["learned_overhead_per_sample_ms"] = learned
    finally:
        server.stop()
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown(results)
    (args.out / "results.md").write_text(table)
    paths = plot(results, args.out)
    print(table)
    print("plots: " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
