"""Open-loop trace replay over gRPC (asyncio): each request leaves at its scheduled time, whatever the
server does. Every request ends in exactly one record; none is ever dropped from the books.

    .venv/bin/python -m superserve_bench.replay --trace results/traces/x.json --slo-ms 30
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .metrics import summarise
from .traces import Trace

__all__ = ["Record", "replay", "replay_sync", "main"]


@dataclass(slots=True)
class Record:
    scheduled_s: float  # offset in the trace
    send_error_ms: float  # how late the client sent it (its own lag, not the server's)
    latency_ms: float  # send to answer, as the client saw it
    outcome: str  # on_time, late, shed (UNAVAILABLE), error, timeout
    subnet: int = -1
    accuracy: float = float("nan")
    message: str = ""


def _requests(images: np.ndarray, model: str, parameters: dict, outputs=("SUBNET", "ACCURACY")) -> list:
    """Prebuilt ModelInferRequest protobufs (Triton's public gRPC protocol), reused for every send, so the
    client spends almost nothing per request and keeps to its schedule."""
    from tritonclient.grpc import service_pb2

    out = []
    for image in images[:64]:
        request = service_pb2.ModelInferRequest(model_name=model)
        tensor = request.inputs.add(name="INPUT", datatype="FP32")
        tensor.shape.extend([1, *image.shape])
        request.raw_input_contents.append(np.ascontiguousarray(image, dtype=np.float32).tobytes())
        for name in outputs:
            request.outputs.add(name=name)
        for key, value in parameters.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                request.parameters[key].string_param = str(value)
            elif isinstance(value, int):
                request.parameters[key].int64_param = value
            else:
                request.parameters[key].double_param = value
        out.append(request)
    return out


async def replay(trace: Trace, url: str, slo_ms: float, images: np.ndarray, parameters: dict | None = None,
                 model: str = "superserve", timeout_s: float = 30.0, progress: bool = False,
                 fixed_accuracy: float | None = None, connections: int = 1) -> list[Record]:
    """Replay ``trace`` against ``model``. A model that serves one fixed SubNet and answers only LOGITS (plain
    Triton) is given its profiled ``fixed_accuracy``; SuperServe's answers say which SubNet served them.
    ``connections``: requests take turns over that many gRPC connections (a flood from one connection waits on
    it, as no flood of many clients would)."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    if fixed_accuracy is None:
        requests = _requests(images, model, {"slo_ms": float(slo_ms), **(parameters or {})})
    else:
        requests = _requests(images, model, parameters or {}, outputs=("LOGITS",))
    # each channel its own subchannel pool: its own connection, not one shared by every channel to the url
    channels = [grpc.aio.insecure_channel(url, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(connections)]
    stubs = [service_pb2_grpc.GRPCInferenceServiceStub(channel) for channel in channels]
    records: list[Record | None] = [None] * len(trace.arrivals_s)

    async def one(i: int, scheduled: float, send_error_ms: float) -> None:
        start = time.perf_counter()
        try:
            response = await stubs[i % connections].ModelInfer(requests[i % len(requests)], timeout=timeout_s)
            latency = (time.perf_counter() - start) * 1e3
            outcome = "on_time" if latency <= slo_ms else "late"
            if fixed_accuracy is not None:
                records[i] = Record(scheduled, send_error_ms, latency, outcome, -1, fixed_accuracy)
                return
            raw = dict(zip((o.name for o in response.outputs), response.raw_output_contents))
            records[i] = Record(scheduled, send_error_ms, latency, outcome, int(np.frombuffer(raw["SUBNET"], np.int32)[0]),
                                float(np.frombuffer(raw["ACCURACY"], np.float32)[0]))
        except grpc.aio.AioRpcError as exc:
            latency = (time.perf_counter() - start) * 1e3
            code = exc.code()
            outcome = ("shed" if code == grpc.StatusCode.UNAVAILABLE else
                       "timeout" if code == grpc.StatusCode.DEADLINE_EXCEEDED else "error")
            records[i] = Record(scheduled, send_error_ms, latency, outcome, message=(exc.details() or "")[:200])
        except Exception as exc:  # anything else still ends in a record
            records[i] = Record(scheduled, send_error_ms, (time.perf_counter() - start) * 1e3, "error",
                                message=repr(exc)[:200])

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(trace.arrivals_s), desc=f"replaying {trace.name}", unit="req", leave=False)
    tasks = []
    # Keep the cyclic garbage collector out of the replay: a full collection over tens of thousands of live
    # records stalls the event loop for ~100 ms (measured: clusters of late sends). Records hold no cycles;
    # the collector runs again after.
    gc_was_enabled = gc.isenabled()
    try:
        try:  # connect first, so the first request does not pay for the connection
            await asyncio.wait_for(asyncio.gather(*(channel.channel_ready() for channel in channels)), timeout_s)
        except asyncio.TimeoutError:
            pass  # no server: every request below ends in its own error record
        gc.collect()
        gc.disable()
        t0 = time.perf_counter() + 0.05
        for i, scheduled in enumerate(trace.arrivals_s):
            delay = t0 + scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            send_error_ms = max(0.0, (time.perf_counter() - t0 - scheduled) * 1e3)
            tasks.append(asyncio.create_task(one(i, float(scheduled), send_error_ms)))
            if bar is not None and i % 200 == 0:
                bar.update(200 if i else 1)
        await asyncio.gather(*tasks)
    finally:
        if gc_was_enabled:
            gc.enable()
        if bar is not None:
            bar.close()
        for channel in channels:
            await channel.close()
    missing = [i for i, r in enumerate(records) if r is None]
    if missing:  # cannot happen unless a task was lost: say so loudly rather than report a rosy number
        raise RuntimeError(f"{len(missing)} requests have no record, e.g. {missing[:5]}")
    return records  # type: ignore[return-value]


def replay_sync(*args, **kwargs) -> list[Record]:
    return asyncio.run(replay(*args, **kwargs))


def main(argv: list[str] | None = None) -> None:
    from superserve.build.data import load_digits

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", type=Path, required=True, help="a trace JSON file (superserve_bench.traces)")
    p.add_argument("--url", default="127.0.0.1:8001")
    p.add_argument("--slo-ms", type=float, required=True)
    p.add_argument("--subnet", type=int, default=None, help="pin every request to one SubNet (Clipper+)")
    p.add_argument("--out", type=Path, default=None, help="write every record and the summary here (JSON)")
    args = p.parse_args(argv)
    images = load_digits().test_x.numpy()
    params = {} if args.subnet is None else {"subnet": args.subnet}
    records = replay_sync(Trace.load(args.trace), args.url, args.slo_ms, images, params, progress=True)
    summary = summarise(records, args.slo_ms)
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "records": [asdict(r) for r in records]}))


if __name__ == "__main__":
    main()
