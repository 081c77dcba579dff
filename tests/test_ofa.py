"""Bring your own OFA ResNet-50, end to end: a checkpoint in OFA's format (the project's writer, OFA's key names,
seeded random weights) and a generated class-per-folder image folder, built by ``superserve.build.ofa`` at a
small resolution and served by a real tritonserver beside the default model."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from PIL import Image

from superserve.build.pipeline import fill_batches, profiled_batches, profiling_estimate_s, suggested_slo_ms
from superserve.build.ofa import ADAPTER, build_ofa, main, mapping_warning
from superserve.build.imagefolder import class_labels, ilsvrc2012_wnids, load_image_folder, preprocess
from superserve.serving.config import read_model_config
from superserve.supernet import OFA_RESNET50, ElasticResNet, family_of
from superserve.serving.contract import check_model_config
from superserve.supernet.artefacts import load_supernet
from superserve.supernet.checkpoint import save_ofa_checkpoint
from superserve.runtime.tritonenv import REPO_ROOT, start_server
from superserve_bench.build_cost import random_checkpoint

RESOLUTION = 32
# a subset of ImageNet's synsets, scored against the checkpoint's outputs 0, 470 and 999 (not 0, 1, 2)
CLASSES = ("n01440764", "n02948072", "n15075141")
LABELS = (0, 470, 999)
FAVOURED = 470  # a checkpoint whose classifier always answers this output: only the right mapping scores above 0
PER_CLASS = 6  # split 1 calibration, 2 validation, 3 test


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for index, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = rng.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8)  # odd sizes: resize and crop both run
            pixels[..., index] //= 4  # a class tint
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / CLASSES[0] / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ofa")
    random_checkpoint(root / "ofa_resnet50.pth")
    images = _image_folder(root / "images")
    subnets = root / "subnets.json"  # OFA's {d, e, w} form, as OFA's own SubNet lists are written
    subnets.write_text(json.dumps([OFA_RESNET50.smallest().to_ofa(), OFA_RESNET50.largest().to_ofa(),
                                   OFA_RESNET50.sample(random.Random(1)).to_ofa()]))
    out = root / "repository" / "ofa_resnet50"
    main(["--checkpoint", str(root / "ofa_resnet50.pth"), "--images", str(images), "--out", str(out),
          "--resolution", str(RESOLUTION), "--subnets", str(subnets), "--max-batch", "4", "--repeats", "2"])
    return out, images


def test_the_build_writes_a_servable_model_folder(built):
    out, _ = built
    profile = json.loads((out / "1" / "profile.json").read_text())
    assert profile["family"] == "resnet" and profile["space"] == "ofa_resnet50"
    assert profile["input_shape"] == [3, RESOLUTION, RESOLUTION] and profile["num_classes"] == 1000
    spec = profile["input_spec"]
    assert spec["shape"] == [3, RESOLUTION, RESOLUTION] and spec["mean"] == [0.485, 0.456, 0.406]
    assert "centre crop 32x32" in spec["preprocessing"]
    assert {k: v["size"] for k, v in profile["splits"].items()} == {"calibration": 3, "validation": 6, "test": 9}
    assert profile["max_batch_size"] == 4 and 1 <= len(profile["subnets"]) <= 3
    assert profile["classes"] == dict(zip(CLASSES, LABELS))
    assert all(list(s["latency_ms"]) == ["1", "2", "3", "4"] for s in profile["subnets"])
    config = read_model_config(out / "config.pbtxt")
    assert config.name == "ofa_resnet50" and list(config.input[0].dims) == [3, RESOLUTION, RESOLUTION]
    # no SLO was given: the default is derived from the model's own profile, and the config says so
    assert float(config.parameters["default_slo_ms"].string_value) == suggested_slo_ms(profile, 3.0) > 0
    assert "derived from the profile" in (out / "config.pbtxt").read_text()
    assert config.max_batch_size == 4 * 8  # the hand-over: 8 of the largest batches
    check_model_config(json_format.MessageToDict(config, preserving_proto_field_name=True), profile)
    assert (out / "1" / "model.py").resolve() == ADAPTER.resolve()
    assert (out / "1" / "subnet_norm.pt").is_file()
    # what each phase cost is kept with the model (make build-cost reports it)
    build = profile["build"]
    assert list(build["seconds"]) == ["reading", "calibrating", "validating", "ranking", "profiling latency",
                                      "test accuracy"]
    assert all(s >= 0 for s in build["seconds"].values()) and build["seconds"]["profiling latency"] > 0
    assert build["peak_memory_mb"] > 100  # torch alone takes more


def test_a_subset_of_synsets_is_scored_against_the_checkpoints_class_indices(tmp_path, built):
    """A checkpoint whose classifier answers output 470 (n02948072) for every image; a third of the test images
    are in that folder. Labels 0..k-1 in folder order (1 for that folder) would score 0."""
    _, images = built
    net = ElasticResNet(OFA_RESNET50)
    with torch.no_grad():
        net.classifier.linear.weight.zero_()
        net.classifier.linear.bias.zero_()
        net.classifier.linear.bias[FAVOURED] = 1.0
    save_ofa_checkpoint(net, tmp_path / "constant.pth")
    profile = build_ofa(tmp_path / "constant.pth", images, tmp_path / "constant", RESOLUTION,
                        subnets=[OFA_RESNET50.smallest().to_ofa()], max_batch=2, repeats=1, progress=False)
    assert [s["accuracy"] for s in profile["subnets"]] == [1 / 3]
    assert len(profile["warnings"]) == 1 and "near chance for 3 classes" in profile["warnings"][0]
    assert "n01440764 -> 0, n02948072 -> 470, n15075141 -> 999" in profile["warnings"][0]


def test_class_labels_need_synsets_or_a_class_list():
    assert class_labels(["n15075141", "n01440764"]) == {"n15075141": 999, "n01440764": 0}
    assert len(ilsvrc2012_wnids()) == 1000 and list(ilsvrc2012_wnids()) == sorted(ilsvrc2012_wnids())
    with pytest.raises(ValueError, match="not ILSVRC-2012 synsets.*--classes"):
        class_labels(["cat", "n01440764"])
    assert class_labels(["cat", "dog"], ["dog", "cat"]) == {"cat": 1, "dog": 0}
    assert mapping_warning(0.9, {"a": 0, "b": 1}) is None
    assert "near chance for 2 classes" in mapping_warning(0.6, {"a": 0, "b": 1})
    ten = {f"n{i:08d}": i for i in range(10)}
    assert mapping_warning(0.8, ten) is None and mapping_warning(0.01, ten) is not None


def test_image_folder_splits_are_disjoint_and_preprocessed_as_imagenet(built):
    _, images = built
    data = load_image_folder(images, RESOLUTION, progress=False)
    files = data.files
    assert not set(files["calibration"]) & set(files["validation"])
    assert not set(files["test"]) & (set(files["validation"]) | set(files["calibration"]))
    assert sorted(set(data.test_y.tolist())) == list(LABELS) and data.test_x.shape == (9, 3, RESOLUTION, RESOLUTION)
    first = files["test"][0]
    np.testing.assert_array_equal(data.test_x[0].numpy(), preprocess(images / first, RESOLUTION))
    everything = data.test_x[:]  # the store reads and normalises on demand; slices and index tensors agree
    assert -2.2 < float(everything.min()) and float(everything.max()) < 2.7  # ImageNet-normalised range
    assert torch.equal(data.test_x[torch.tensor([4, 0])], everything[[4, 0]])
    assert torch.equal(data.test_x[-1], everything[-1])
    assert [len(c) for c in data.test_x.split(4)] == [4, 4, 1]
    reordered = load_image_folder(images, RESOLUTION, classes=list(CLASSES[::-1]), progress=False)
    assert sorted(set(reordered.test_y.tolist())) == [0, 1, 2]
    position = {label: 2 - i for i, label in enumerate(LABELS)}  # the given class list, reversed
    assert reordered.test_y.tolist() == [position[y] for y in data.test_y.tolist()]  # same files, the list's order
    with pytest.raises(ValueError, match="not in the class list"):
        load_image_folder(images, RESOLUTION, classes=["n01440764"], progress=False)
    with pytest.raises(ValueError, match="too few"):
        load_image_folder(images, RESOLUTION, per_class=2, progress=False)


def test_the_build_refuses_a_missing_checkpoint_with_a_clear_error(tmp_path, built):
    _, images = built
    with pytest.raises(FileNotFoundError, match="no OFA checkpoint"):
        build_ofa(tmp_path / "missing.pth", images, tmp_path / "model", RESOLUTION, progress=False)


@pytest.mark.integration  # starts its own tritonserver
def test_served_beside_the_default_model_every_subnet_equals_its_extracted_twin(built, tmp_path, digits):
    out, _ = built
    repo = tmp_path / "repository"
    repo.mkdir()
    (repo / "superserve").symlink_to(REPO_ROOT / "model_repository" / "superserve")
    (repo / out.name).symlink_to(out)
    net, profile = load_supernet(out / "1")
    family = family_of(net.space)
    x = load_image_folder(built[1], RESOLUTION, progress=False).test_x[:3].numpy()
    srv = start_server(repo, tmp_path / "server.log")
    try:
        for module, url in ((httpclient, srv.http_url), (grpcclient, srv.grpc_url)):
            client = module.InferenceServerClient(url)
            tensor = module.InferInput("INPUT", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            for index, entry in enumerate(profile["subnets"]):
                result = client.infer(out.name, [tensor], parameters={"subnet": index, "slo_ms": 10_000})
                assert result.as_numpy("SUBNET")[:, 0].tolist() == [index] * 3
                with torch.no_grad():
                    expected = family.extract(net, net.space.parse(entry["config"]))(torch.from_numpy(x)).numpy()
                logits = result.as_numpy("LOGITS")
                assert logits.shape == (3, 1000)
                np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
            digit = module.InferInput("INPUT", [1, 1, 28, 28], "FP32")  # the default model still serves
            digit.set_data_from_numpy(digits[0][:1])
            assert client.infer("superserve", [digit]).as_numpy("LOGITS").shape == (1, 10)
        # the project's own perf tool (make perf) sends this model's shape: real images from the folder
        perf = subprocess.run([sys.executable, "-m", "superserve_bench.perf", "--url", srv.grpc_url,
                               "--model", out.name, "--model-dir", str(out), "--images", str(built[1]),
                               "--rate", "20", "--slo-ms", "10000", "--measurement-ms", "2000"],
                              capture_output=True, text=True, timeout=300)
        assert perf.returncode == 0, perf.stdout + perf.stderr
        assert f"images from {built[1]}" in perf.stdout and "Throughput:" in perf.stdout, perf.stdout
        assert "error" not in perf.stdout.lower(), perf.stdout
        # the client example, given an image file, asks the server for the input shape and preprocesses to it
        image = next((built[1] / CLASSES[1]).glob("*.png"))
        example = subprocess.run([sys.executable, str(REPO_ROOT / "client" / "grpc_example.py"), "--url",
                                  srv.grpc_url, "--model", out.name, "--image", str(image), "--slo-ms", "10000"],
                                 capture_output=True, text=True, timeout=120)
        assert example.returncode == 0, example.stdout + example.stderr
        assert example.stdout.startswith(f"{image}: predicted "), example.stdout
    finally:
        srv.stop()


def test_the_client_preprocesses_an_image_as_the_build_does(built):
    """client/classify.py needs only numpy and Pillow, so it carries its own copy of the transform."""
    _, images = built
    spec = importlib.util.spec_from_file_location("classify", REPO_ROOT / "client" / "classify.py")
    classify = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(classify)
    for path in sorted(images.rglob("*.png"))[:3]:
        np.testing.assert_array_equal(classify.load_image(path, RESOLUTION), preprocess(path, RESOLUTION))


def test_quick_profiling_times_powers_of_two_and_fills_in_the_rest():
    assert profiled_batches(16, "full") == list(range(1, 17))
    assert profiled_batches(16, "quick") == [1, 2, 4, 8, 16] and profiled_batches(12, "quick") == [1, 2, 4, 8, 12]
    filled = fill_batches({1: 2.0, 2: 3.0, 4: 5.0, 8: 9.0, 12: 13.0}, 12)
    assert list(filled) == [str(b) for b in range(1, 13)]
    assert [filled[str(b)] for b in (1, 3, 4, 6, 10, 12)] == [2.0, 4.0, 5.0, 7.0, 11.0, 13.0]
    # 2 SubNets at 8 ms and 24 ms a batch of 8: 4 ms a sample; batches 1..4 timed 3 + 2 warm-up passes each
    assert profiling_estimate_s({"a": 8.0, "b": 24.0}, 8, [1, 2, 3, 4], 3) == pytest.approx(4e-3 * 10 * 5)
