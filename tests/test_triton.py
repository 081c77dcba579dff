"""Integration: a real tritonserver serving the built SuperNet, over HTTP and gRPC, and perf_analyzer."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from superserve.serving.config import config_from_pbtxt
from superserve.runtime.tritonenv import REPO_ROOT, ensure_triton_home, perf_analyzer_env, start_server

MODEL = "superserve"
PROTOCOLS = ("http", "grpc")


def infer(server, protocol, images, parameters=None, input_name="INPUT", datatype="FP32", headers=None, model=MODEL):
    """One request; returns (logits, subnet indices, accuracies) or raises InferenceServerException."""
    module, url = (httpclient, server.http_url) if protocol == "http" else (grpcclient, server.grpc_url)
    client = module.InferenceServerClient(url)
    tensor = module.InferInput(input_name, list(images.shape), datatype)
    tensor.set_data_from_numpy(images)
    outputs = [module.InferRequestedOutput(n) for n in ("LOGITS", "SUBNET", "ACCURACY")]
    result = client.infer(model, [tensor], outputs=outputs, parameters=parameters, headers=headers)
    return result.as_numpy("LOGITS"), result.as_numpy("SUBNET")[:, 0], result.as_numpy("ACCURACY")[:, 0]


@pytest.fixture(scope="module")
def local_net():
    from conftest import MODEL_DIR
    from superserve.supernet.artefacts import load_supernet

    return load_supernet(MODEL_DIR)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_predictions_on_held_out_data_match_the_reported_subnet(server, protocol, digits, local_net, profile):
    import torch

    net, _ = local_net
    images, labels = digits
    correct = total = 0
    for start in range(0, 64, 8):
        x, y = images[start:start + 8], labels[start:start + 8]
        logits, subnets, accuracies = infer(server, protocol, x, {"slo_ms": 1000})
        assert len(set(subnets.tolist())) == 1  # one request runs on one SubNet
        subnet = int(subnets[0])
        assert accuracies[0] == pytest.approx(profile["subnets"][subnet]["accuracy"])
        net.actuate(net.space.parse(profile["subnets"][subnet]["config"]))
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(logits, expected, atol=1e-4)
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    assert correct / total >= 0.9


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_transformer_supernet_is_served_beside_the_resnet_and_every_subnet_matches_its_twin(server, protocol,
                                                                                                digits):
    import torch

    from superserve.supernet import family_of
    from superserve.supernet.artefacts import load_supernet

    net, profile = load_supernet(REPO_ROOT / "model_repository" / "superserve_vit" / "1")
    assert profile["family"] == "transformer" and profile["space"] == net.space.name
    family = family_of(net.space)
    x = digits[0][:4]
    for index, entry in enumerate(profile["subnets"]):
        logits, subnets, accuracies = infer(server, protocol, x, {"subnet": index, "slo_ms": 5000},
                                            model="superserve_vit")
        assert subnets.tolist() == [index] * len(x) and accuracies[0] == pytest.approx(entry["accuracy"])
        with torch.no_grad():
            expected = family.extract(net, net.space.parse(entry["config"]))(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(logits, expected, atol=1e-4)


def _served_or_refused(server, protocol, images, parameters=None, headers=None):
    """One request sent to an idle model (so it is dated on arrival): its SubNet and accuracy, or None if it was
    refused because no allowed SubNet could meet its deadline. Timing-sensitive assertions accept both: a stall
    of the shared machine may leave too little slack, but it can never make a slower SubNet fit."""
    time.sleep(0.05)  # a request right after a round may be dated to that round's start (serving/handover.py)
    try:
        _, subnets, accuracies = infer(server, protocol, images, parameters, headers=headers)
        return int(subnets[0]), float(accuracies[0])
    except InferenceServerException as exc:
        assert "deadline cannot be met" in str(exc)
        return None


def _tight_slo_ms(server, profile) -> float:
    """An SLO the most accurate SubNet cannot meet even alone, but the fastest can: halfway between their
    batch-1 costs under the server's cost model (compute + learned overheads per batch and sample + margin)."""
    margin = config_from_pbtxt(REPO_ROOT / "model_repository/superserve/config.pbtxt").margin_ms
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    overhead = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("superserve_overhead_per_") and f'model="{MODEL}"' in line)
    fastest = profile["subnets"][0]["latency_ms"]["1"]
    slowest = profile["subnets"][-1]["latency_ms"]["1"]
    return margin + overhead + (fastest + slowest) / 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_loose_slo_gets_the_most_accurate_subnet_and_tight_a_faster_one(server, protocol, digits, profile):
    images, _ = digits
    last = len(profile["subnets"]) - 1
    _, subnets, _ = infer(server, protocol, images[:1], {"slo_ms": 5000})
    assert subnets[0] == last
    outcome = _served_or_refused(server, protocol, images[:1], {"slo_ms": _tight_slo_ms(server, profile)})
    assert outcome is None or outcome[0] < last


def test_http_header_sets_the_slo(server, digits, profile):
    images, _ = digits
    tight = _tight_slo_ms(server, profile)
    outcome = _served_or_refused(server, "http", images[:1], headers={"x-slo-ms": f"{tight:.3f}"})
    assert outcome is None or outcome[0] < len(profile["subnets"]) - 1
    with pytest.raises(InferenceServerException, match="deadline cannot be met"):  # the header is read at all
        infer(server, "http", images[:1], headers={"x-slo-ms": "0.01"})


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_subnet_pin_and_accuracy_floor(server, protocol, digits, profile):
    images, _ = digits
    middle = len(profile["subnets"]) // 2
    for index in (0, middle):
        _, subnets, _ = infer(server, protocol, images[:2], {"subnet": index, "slo_ms": 5000})
        assert subnets.tolist() == [index, index]
    floor = profile["subnets"][middle]["accuracy"]
    for _ in range(3):
        _, _, accuracies = infer(server, protocol, images[:1], {"min_accuracy": floor, "slo_ms": 5000})
        assert accuracies[0] >= floor - 1e-6
    # an SLO the floored SubNets meet, where SlackFit alone might have picked a faster, less accurate one
    margin = config_from_pbtxt(REPO_ROOT / "model_repository/superserve/config.pbtxt").margin_ms
    slo = margin + 2 * profile["subnets"][-1]["latency_ms"]["1"] + 1.0
    outcome = _served_or_refused(server, protocol, images[:1], {"min_accuracy": floor, "slo_ms": slo})
    assert outcome is None or outcome[1] >= floor - 1e-6


def _status(exc: InferenceServerException) -> str:
    return str(exc.status())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_impossible_slo_is_shed_with_unavailable(server, protocol, digits):
    images, _ = digits
    with pytest.raises(InferenceServerException, match="deadline cannot be met") as info:
        infer(server, protocol, images[:1], {"slo_ms": 0.01})
    assert _status(info.value) in ("503", "StatusCode.UNAVAILABLE")


# Bad input matrix: each case gets a clear error for that request only; the server keeps serving.
BAD_CASES = {
    "wrong input name": (dict(input_name="IMAGE"), "IMAGE"),
    "wrong shape": (dict(images=np.zeros((1, 28, 28), np.float32)), "shape"),
    "wrong dtype": (dict(images=np.zeros((1, 1, 28, 28), np.float64), datatype="FP64"), "FP64"),
    "nan values": (dict(images=np.full((1, 1, 28, 28), np.nan, np.float32)), "NaN or Inf"),
    "inf values": (dict(images=np.full((1, 1, 28, 28), np.inf, np.float32)), "NaN or Inf"),
    "batch above maximum": (dict(images=np.zeros((17, 1, 28, 28), np.float32)), "batch"),
    "slo zero": (dict(parameters={"slo_ms": 0}), "slo_ms must be > 0"),
    "slo negative": (dict(parameters={"slo_ms": -3}), "slo_ms must be > 0"),
    "slo non-numeric": (dict(parameters={"slo_ms": "fast"}), "must be a number"),
    "slo absurdly large": (dict(parameters={"slo_ms": 1e9}), "exceeds this model's maximum"),
    "subnet out of range": (dict(parameters={"subnet": 999}), "subnet must be an integer"),
    "subnet negative": (dict(parameters={"subnet": -1}), "subnet must be an integer"),
    "subnet non-numeric": (dict(parameters={"subnet": "largest"}), "must be a number"),
    "min_accuracy above every subnet": (dict(parameters={"min_accuracy": 0.9999}), "above every SubNet"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(server, protocol, case, digits):
    kwargs, message = dict(BAD_CASES[case][0]), BAD_CASES[case][1]  # a copy: cases are shared by both protocols
    images = kwargs.pop("images", digits[0][:1])
    with pytest.raises(InferenceServerException, match=message) as info:
        infer(server, protocol, images, **kwargs)
    assert _status(info.value) in ("400", "StatusCode.INVALID_ARGUMENT")
    logits, _, _ = infer(server, protocol, digits[0][:1], {"slo_ms": 1000})
    assert logits.shape == (1, 10) and np.isfinite(logits).all()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_response_carries_the_outputs_the_client_asked_for(server, protocol, digits):
    module, url = (httpclient, server.http_url) if protocol == "http" else (grpcclient, server.grpc_url)
    client = module.InferenceServerClient(url)
    tensor = module.InferInput("INPUT", [2, 1, 28, 28], "FP32")
    tensor.set_data_from_numpy(digits[0][:2])
    asked = lambda *names: client.infer(MODEL, [tensor], outputs=[module.InferRequestedOutput(n) for n in names],
                                        parameters={"slo_ms": 1000})
    only = asked("LOGITS")
    assert only.as_numpy("LOGITS").shape == (2, 10)
    assert only.as_numpy("SUBNET") is None and only.as_numpy("ACCURACY") is None
    labels = asked("SUBNET", "ACCURACY")
    assert labels.as_numpy("LOGITS") is None and labels.as_numpy("SUBNET").shape == (2, 1)
    assert 0.5 < labels.as_numpy("ACCURACY")[0, 0] <= 1.0
    every = client.infer(MODEL, [tensor], parameters={"slo_ms": 1000})  # names none: all three
    assert every.as_numpy("LOGITS").shape == (2, 10) and every.as_numpy("SUBNET").shape == (2, 1)
    assert every.as_numpy("ACCURACY").shape == (2, 1)


@pytest.mark.integration  # starts its own tritonserver
def test_a_deployment_may_declare_logits_alone(tmp_path, profile, digits):
    """Without SUBNET and ACCURACY in config.pbtxt the model serves LOGITS only (what plain Triton's model makes,
    and what perf_analyzer then asks for)."""
    from superserve_bench.repository import SuperServeModel, make_repository, model_dir

    repo = make_repository(tmp_path, [SuperServeModel("logits_only", outputs=("LOGITS",))], profile,
                           model_dir("superserve"))
    srv = start_server(repo, tmp_path / "server.log")
    try:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        tensor = grpcclient.InferInput("INPUT", [3, 1, 28, 28], "FP32")
        tensor.set_data_from_numpy(digits[0][:3])
        result = client.infer("logits_only", [tensor], parameters={"slo_ms": 1000})
        assert result.as_numpy("LOGITS").shape == (3, 10) and result.as_numpy("SUBNET") is None
        assert (result.as_numpy("LOGITS").argmax(1) == digits[1][:3]).sum() >= 2
        with pytest.raises(InferenceServerException, match="SUBNET"):
            client.infer("logits_only", [tensor], outputs=[grpcclient.InferRequestedOutput("SUBNET")])
    finally:
        srv.stop()


def test_unknown_parameters_are_ignored(server, digits):
    logits, _, _ = infer(server, "grpc", digits[0][:1], {"slo_ms": 1000, "colour": "blue"})
    assert logits.shape == (1, 10)


def _on_time_count(server) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    lines = [line for line in text.splitlines()
             if line.startswith("superserve_requests_total") and 'outcome="on_time"' in line
             and f'model="{MODEL}"' in line]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_metrics_are_exported(server, digits):
    before = _on_time_count(server)
    for _ in range(3):
        infer(server, "http", digits[0][:1], {"slo_ms": 1000})
    deadline = time.monotonic() + 10
    while _on_time_count(server) < before + 3 and time.monotonic() < deadline:
        time.sleep(0.1)  # metrics are flushed off the hot path, twice a second
    assert _on_time_count(server) >= before + 3
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    for family in ("superserve_batch_size", "superserve_slack_ms", "superserve_decision_us",
                   "superserve_queue_length", "superserve_subnet_samples_total", "superserve_served_accuracy"):
        assert family in text


def test_perf_analyzer_completes_without_errors(server, tmp_path):
    from superserve_bench.inputs import model_inputs, write_input_data
    from superserve_bench.perf import perf_command
    from superserve_bench.repository import model_dir

    export = tmp_path / "perf.json"
    # SLO 2 s: with a queue policy Triton's batcher can hold a request ~0.5 s now and then (see config.pbtxt)
    data = write_input_data(tmp_path / "input.json", model_inputs(model_dir(), 32))
    cmd = perf_command(server.grpc_url, 2000, data, rate=100,
                       interval_ms=2000, export=export, max_trials=10)  # a busy machine needs more to settle
    result = subprocess.run(cmd, env=perf_analyzer_env(ensure_triton_home()), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Throughput:" in result.stdout and "error" not in result.stdout.lower(), result.stdout
    requests = [r for exp in json.loads(export.read_text())["experiments"] for r in exp["requests"]]
    assert len(requests) > 50
