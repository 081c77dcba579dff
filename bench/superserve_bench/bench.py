"""The headline benchmark: SuperServe's policies against plain Triton serving fixed SubNets, on the same traces,
side by side in one real tritonserver. Writes JSON, a Markdown table and plots.

Systems: SlackFit-LA (SuperServe's default), SlackFit (the paper's), MaxAcc and MaxBatch, all SuperServe models;
and Clipper+ = plain Triton (``native_model.py``: Triton's own dynamic batcher, one fixed SubNet) on six SubNets
spread over the accuracy range, the least accurate of which is also what INFaaS (always the cheapest) serves.

    .venv/bin/python -m superserve_bench.bench --out results/bench [--quick]
    # a candidate setting side by side with the shipped one, in the same server and runs:
    .venv/bin/python -m superserve_bench.bench --quick --systems SlackFit-LA,"Clipper+ 0.916" \
        --variant "margin 5:margin_ms=5"
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from superserve.build.pipeline import suggested_slo_ms
from superserve.serving.config import config_from_pbtxt, parse_config
from superserve.runtime.tritonenv import REPO_ROOT, start_server

from .bench_peer import perf_analyzer
from .compare import ADAPTIVE, FIXED_PREFIX, aggregate, compare_to_fixed
from .inputs import describe_inputs, model_inputs, write_input_data
from .plots import plot
from .prometheus import model_books, scrape, total
from .replay import replay_sync
from .report import markdown
from .repository import SERVED_MODELS, NativeModel, SuperServeModel, make_repository, model_dir
from .traces import Trace, azure_functions, bursty

__all__ = ["main", "System", "systems_for", "parse_variant", "load_setup", "measure_capacity"]

LEAD_IN_S = 2.0  # the end of each trace, replayed unmeasured before every run (see measured_run)
BOOKS_SETTLE_S = 0.6  # the SuperServe model publishes its own counts every 0.5 s: the scrape after a run waits
MAX_RERUNS = 3  # restarts of the server for one run after a Python stub died, before giving up
POLICIES = {"SlackFit-LA": "slackfit-la", "SlackFit": "slackfit", "MaxAcc": "maxacc", "MaxBatch": "maxbatch"}


@dataclass(frozen=True)
class System:
    label: str
    model: str  # the Triton model serving it
    policy: str | None = None  # SuperServe's policy; None for plain Triton
    subnet: int | None = None  # plain Triton's fixed SubNet
    accuracy: float | None = None  # plain Triton's responses carry no ACCURACY: the profile's
    parameters: tuple[tuple[str, str], ...] = ()  # SuperServe's serving parameters beyond the shipped config

    def serving_parameters(self) -> dict:
        """SuperServe's parameters over the shipped config (its policy first); plain Triton's fixed SubNet."""
        return {"policy": self.policy, **dict(self.parameters)} if self.policy else {"subnet": self.subnet}


def parse_variant(spec: str, index: int) -> System:
    """``LABEL:key=value;key=value``: SuperServe (SlackFit-LA unless ``policy`` is set) with these serving
    parameters over the shipped ones, as its own model; ValueError names what is wrong."""
    label, _, settings = spec.partition(":")
    pairs = [item.split("=", 1) for item in settings.split(";") if item.strip()]
    if not label.strip() or not pairs or any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"variant {spec!r}: write LABEL:key=value[;key=value...], e.g. 'margin 5:margin_ms=5'")
    parameters = {key.strip(): value.strip() for key, value in pairs}
    config = parse_config(parameters, model_name=f"variant {label.strip()}")
    return System(label.strip(), f"superserve_variant_{index}", policy=config.policy,
                  parameters=tuple(parameters.items()))


def systems_for(profile: dict) -> list[System]:
    n = len(profile["subnets"])
    six = sorted({round(i * (n - 1) / 5) for i in range(6)})
    out = [System(label, f"superserve_{policy.replace('-', '_')}", policy=policy) for label, policy in POLICIES.items()]
    for i in six:
        accuracy = profile["subnets"][i]["accuracy"]
        label = f"{FIXED_PREFIX} {accuracy:.3f}" + (" (INFaaS)" if i == 0 else "")
        if any(s.label == label for s in out):  # two SubNets as accurate: runs and rows are keyed by label
            label += f" (SubNet {i})"
        out.append(System(label, f"native_{i}", subnet=i, accuracy=accuracy))
    return out


def repository_models(systems: list[System]) -> list:
    return [SuperServeModel(s.model, s.serving_parameters()) if s.policy else NativeModel(s.model, s.subnet)
            for s in systems]


def measure_capacity(server, profile: dict, work: Path, inputs, seconds: float = 4.0) -> dict:
    """Saturation throughput (req/s) of plain Triton on the most accurate and on the fastest SubNet, measured
    with perf_analyzer on this machine now: the yardstick the loads are set against."""
    data = write_input_data(work / "perf_input.json", inputs[:32])
    top = len(profile["subnets"]) - 1
    return {"top_rps": perf_analyzer(server, f"native_{top}", data, work, 32, seconds)["throughput_rps"],
            "fastest_rps": perf_analyzer(server, "native_0", data, work, 32, seconds)["throughput_rps"]}


def load_setup(slo_ms: float | None = None, model: str = "superserve"):
    """The built profile, the model's serving config, and the SLO every benchmark uses unless one is given."""
    source = model_dir(model)
    profile = json.loads((source / "1" / "profile.json").read_text())
    config = config_from_pbtxt(source / "config.pbtxt")
    # the benchmarks' SLO convention, unchanged since their first runs so they compare
    return profile, config, slo_ms or suggested_slo_ms(profile, config.margin_ms)


class _MetricsPoller(threading.Thread):
    """Samples the server's batch-size histogram while a trace runs: mean batch size over time."""

    def __init__(self, url: str, model: str, period_s: float = 0.5):
        super().__init__(daemon=True)
        self.url, self.label, self.period_s = url, f'model="{model}"', period_s
        self.samples: list[tuple[float, float, float]] = []
        self.stop_event = threading.Event()

    def run(self):
        start = time.perf_counter()
        while not self.stop_event.wait(self.period_s):
            try:
                metrics = scrape(self.url, timeout_s=2)
            except OSError:
                continue
            self.samples.append((time.perf_counter() - start, total(metrics, "superserve_batch_size_sum", self.label),
                                 total(metrics, "superserve_batch_size_count", self.label)))


def head(trace: Trace, seconds: float) -> Trace:
    return Trace(f"{trace.name}-head", trace.arrivals_s[trace.arrivals_s < seconds], {"duration_s": seconds})


def tail(trace: Trace, seconds: float) -> Trace:
    """The trace's last ``seconds``, from 0: what comes before its start if it repeats (a day's end precedes the
    next day's start). A run's lead-in replayed the trace's own head before, and so met Azure's opening spike twice,
    2 s apart: a setting that remembers bursts then rode the second for having seen the first."""
    start = trace.duration_s - seconds
    return Trace(f"{trace.name}-tail", trace.arrivals_s[trace.arrivals_s >= start] - start, {"duration_s": seconds})


def replay_system(server, trace: Trace, slo_ms: float, images, system: System):
    return replay_sync(trace, server.grpc_url, slo_ms, images, model=system.model, fixed_accuracy=system.accuracy)


def warm_up(server, systems: list[System], trace: Trace, slo_ms: float, images, seconds: float = 3.0) -> None:
    """A few seconds of traffic through every model first: each is its own Python process, and its first
    seconds (allocator, caches, the learned overhead) are not what the benchmark measures."""
    for system in systems:
        replay_system(server, head(trace, seconds), slo_ms, images, system)


def measured_run(server, trace: Trace, slo_ms: float, images, system: System, watch: bool):
    """One run after its lead-in: the trace's last LEAD_IN_S through the same system, unmeasured (``tail``).

    Without it, a run inherited the state the previous run left in the model (the learned cost model, the
    arrival-rate estimate), from another system sharing the model or from a lighter trace: in one full
    benchmark the first pass over a trace was the worse one in 20 of the 25 system/trace pairs whose two runs
    differed. Returns the client's records, the server's own books of the run (``model_books``) and, with
    ``watch``, the server's batch sizes sampled during it."""
    replay_system(server, tail(trace, LEAD_IN_S), slo_ms, images, system)
    poller = _MetricsPoller(server.metrics_url, system.model)
    if watch:
        poller.start()
    # the run follows its lead-in at once, so that it starts with the state the lead-in left; the model's own
    # counts may then take in up to the lead-in's last half-second (a SuperServe model publishes them every 0.5 s)
    before = scrape(server.metrics_url)
    records = replay_system(server, trace, slo_ms, images, system)
    if watch:
        poller.stop_event.set()
        poller.join()
    time.sleep(BOOKS_SETTLE_S)  # also lets the server drain before the next run
    return records, model_books(before, scrape(server.metrics_url), system.model), poller


def build_traces(top: float, quick: bool, duration_s: float, seed: int) -> list[Trace]:
    """The traces the defaults were chosen on (seed 0): loads relative to the most accurate SubNet's measured
    capacity ``top``, from below it to above it."""
    traces = [azure_functions(mean_rate=0.8 * top, duration_s=duration_s, seed=seed)]
    loads = (1.2,) if quick else (0.7, 1.4)
    cv2s = (8,) if quick else (2, 8)
    for load in loads:
        for cv2 in cv2s:
            rate = load * top  # half steady, half gamma-bursty, as in the paper's traces
            traces.append(bursty(rate / 2, rate / 2, cv2, duration_s, seed=seed))
    return traces


HELD_OUT_SEED = 1000  # no default was chosen on a trace from this seed on


def held_out_traces(top: float, duration_s: float, seed: int = HELD_OUT_SEED) -> list[Trace]:
    """Traces that no default was chosen on: other seeds, other windows and functions of the Azure sample, other
    burstiness and loads. Names start with ``heldout-`` and do not depend on ``seed``."""
    traces = [azure_functions(0.8 * top, duration_s, seed, functions=(0, 500)),
              azure_functions(0.8 * top, duration_s, seed + 1, functions=(500, 1000)),
              azure_functions(0.8 * top, duration_s, seed + 2, window=(360, 720)),
              azure_functions(0.8 * top, duration_s, seed + 3, window=(1080, 1440))]
    names = ["azure-functions-0-499", "azure-functions-500-999", "azure-6h-12h", "azure-18h-24h"]
    for i, (load, cv2) in enumerate(((1.0, 4), (0.85, 16), (1.2, 1))):
        rate = load * top
        traces.append(bursty(rate / 2, rate / 2, cv2, duration_s, seed=seed + 4 + i))
        names.append(f"bursty-cv{cv2}-{load:g}x")
    for trace, name in zip(traces, names):
        trace.name = f"heldout-{name}"
    return traces


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


def main(argv: list[str] | None = None) -> None:
    from tqdm import tqdm

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bench")
    p.add_argument("--quick", action="store_true", help="a smaller grid (about 5 minutes)")
    p.add_argument("--duration-s", type=float, default=None, help="seconds per run (default 12, quick 8)")
    p.add_argument("--slo-ms", type=float, default=None,
                   help="SLO for all requests (default: 2x the most accurate SubNet's batch-16 latency)")
    p.add_argument("--seed", type=int, default=0, help="the tuning traces' seed (the defaults were chosen on 0)")
    p.add_argument("--held-out", action="store_true",
                   help="run the held-out traces (seeds from 1000, other windows and functions of the Azure sample, "
                        "other burstiness), on which no default was chosen, instead of the tuning traces")
    p.add_argument("--repeats", type=int, default=None,
                   help="runs per system and trace, interleaved, to measure run-to-run noise (default 2, quick 1)")
    p.add_argument("--systems", default="", help="comma-separated labels to run (default: all), e.g. SlackFit-LA")
    p.add_argument("--traces", default="",
                   help="run only traces whose name contains this text, or any of several, comma-separated: "
                        "e.g. cv8 or azure,cv8")
    p.add_argument("--top-rps", type=float, default=None,
                   help="set the loads against this capacity of the most accurate SubNet (req/s) rather than the one "
                        "measured now: runs in another spell of the machine then replay the same traces")
    p.add_argument("--model", default="superserve", choices=SERVED_MODELS, help="the SuperNet to benchmark")
    p.add_argument("--images", type=Path, default=None,
                   help="a folder of images to send to an image model (default: the digits for the shipped models, "
                        "synthetic inputs of the model's shape otherwise)")
    p.add_argument("--variant", action="append", default=[], metavar="LABEL:key=value;...",
                   help="also run SuperServe with these serving parameters (docs/configuration.md) as system LABEL; "
                        "repeatable")
    args = p.parse_args(argv)
    if args.top_rps is not None and not 0 < args.top_rps < float("inf"):
        p.error(f"--top-rps must be a finite capacity above 0 req/s, got {args.top_rps}")
    profile, config, slo_ms = load_setup(args.slo_ms, args.model)
    duration = args.duration_s or (8.0 if args.quick else 12.0)
    repeats = args.repeats or (1 if args.quick else 2)
    args.out.mkdir(parents=True, exist_ok=True)
    every = systems_for(profile)
    systems = every
    if args.systems:
        wanted = {label.strip() for label in args.systems.split(",")}
        unknown = wanted - {s.label for s in every}
        if unknown:
            p.error(f"unknown systems {sorted(unknown)}; choose from {[s.label for s in every]}")
        systems = [s for s in every if s.label in wanted]
    try:
        variants = [parse_variant(spec, i) for i, spec in enumerate(args.variant)]
    except ValueError as exc:
        p.error(str(exc))
    if clash := {v.label for v in variants} & {s.label for s in every}:
        p.error(f"variant labels {sorted(clash)} are taken by the benchmark's own systems")
    systems = systems + variants
    try:
        images = model_inputs(model_dir(args.model), 64, args.images)
    except (ValueError, FileNotFoundError) as exc:
        p.error(str(exc))
    # the capacity yardstick always needs the fastest and the most accurate plain-Triton models
    top = len(profile["subnets"]) - 1
    yardsticks = [NativeModel(f"native_{i}", i) for i in (0, top) if f"native_{i}" not in {s.model for s in systems}]
    repo = make_repository(args.out, repository_models(systems) + yardsticks, profile, model_dir(args.model))
    server = start_server(repo, args.out / "server.log")
    results = {"model": args.model, "slo_ms": slo_ms, "duration_s": duration, "repeats": repeats,
               "profile_threads": profile.get("threads"),
               "serving_config": asdict(config), "inputs": describe_inputs(model_dir(args.model), args.images),
               "traces": [], "restarts": []}
    try:
        results["capacity"] = measure_capacity(server, profile, args.out, images)
        if args.top_rps is not None:
            results["capacity"]["measured_top_rps"] = results["capacity"]["top_rps"]
            results["capacity"]["top_rps"] = args.top_rps
        top = results["capacity"]["top_rps"]
        every = held_out_traces(top, duration) if args.held_out else build_traces(top, args.quick, duration, args.seed)
        results["trace_set"] = "held-out" if args.held_out else "tuning"
        traces = [t for t in every if any(part in t.name for part in args.traces.split(","))]
        if not traces:
            raise SystemExit(f"no benchmark trace name contains {args.traces!r}")
        for trace in traces:
            trace.save(args.out / "traces" / f"{trace.name}.json")
        warm_up(server, systems, traces[0], slo_ms, images)
        bar = tqdm(total=len(traces) * len(systems) * repeats, desc="benchmark runs", unit="run")
        for t_index, trace in enumerate(traces):
            runs: dict[str, list] = {s.label: [] for s in systems}
            books: dict[str, list] = {s.label: [] for s in systems}
            for rep in range(repeats):
                # interleaved, each repeat in another order, so a slow spell of the machine is shared out
                for system in (systems if rep % 2 == 0 else systems[::-1]):
                    bar.set_postfix_str(f"{trace.name} / {system.label}")
                    watch = t_index == 0 and rep == 0 and system.label == "SlackFit-LA"
                    records, run_books, poller = measured_run(server, trace, slo_ms, images, system, watch)
                    reruns = 0
                    while dead := server.dead_stubs():
                        if reruns == MAX_RERUNS:
                            raise SystemExit(f"Python stubs kept dying on {trace.name} / {system.label}; see "
                                             f"{args.out / 'server.log'}")
                        reruns += 1
                        # A Python stub died (upstream Triton bug, see superserve.runtime.supervisor): this run's
                        # figures are void. Restart the server, warm it up, run again, and say so.
                        results["restarts"].append({"trace": trace.name, "system": system.label, "repeat": rep,
                                                    "dead_stubs": dead})
                        tqdm.write(f"a Python stub died during {trace.name} / {system.label}: restarting the server "
                                   "and running it again")
                        server.stop()
                        shutil.copy(args.out / "server.log", args.out / f"server.crash{len(results['restarts'])}.log")
                        server = start_server(repo, args.out / "server.log")
                        warm_up(server, systems, traces[0], slo_ms, images)
                        records, run_books, poller = measured_run(server, trace, slo_ms, images, system, watch)
                    if watch:
                        results["dynamics"] = dynamics(trace, records, poller, bin_s=max(duration / 40, 0.25))
                        (args.out / "records_slackfit_la.json").write_text(json.dumps([asdict(r) for r in records]))
                    runs[system.label].append(records)
                    books[system.label].append(run_books)
                    bar.update(1)
            rows = [aggregate(s.label, s.model, s.serving_parameters(), runs[s.label], slo_ms, books[s.label])
                    for s in systems]
            results["traces"].append({"name": trace.name, "params": trace.params, "mean_rate": trace.mean_rate,
                                      "requests": len(trace.arrivals_s), "rows": rows,
                                      "vs_fixed": {label: compare_to_fixed(rows, label) for label in ADAPTIVE}})
        bar.close()
        metrics = scrape(server.metrics_url)
        results["learned_overhead_ms"] = {  # what the SlackFit-LA model plans with at the end: the simulator's
            part: metrics.get(f'superserve_overhead_per_{part}_ms{{model="superserve_slackfit_la"}}')
            for part in ("batch", "sample")}
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
