"""Bring your own OFA ResNet-50, end to end: a checkpoint in OFA's format (the project's writer, OFA's key names,
seeded random weights) and a generated class-per-folder image folder, built by ``superserve.build_ofa`` at a
small resolution and served by a real tritonserver beside the default model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from PIL import Image

from superserve.build_ofa import ADAPTER, build_ofa, main
from superserve.imagefolder import load_image_folder, preprocess
from superserve.serving.config import read_model_config
from superserve.supernet import OFA_RESNET50, ElasticResNet, family_of
from superserve.supernet.artefacts import check_model_config, load_supernet
from superserve.supernet.checkpoint import save_ofa_checkpoint
from superserve.tritonenv import REPO_ROOT, start_server

RESOLUTION = 32
CLASSES = ("n01440764", "n01443537", "n01484850")  # ImageNet's first synsets: OFA's class indices 0, 1, 2
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
    torch.manual_seed(0)
    net = ElasticResNet(OFA_RESNET50)
    for m in net.norm_layers().values():  # non-trivial statistics, as a trained checkpoint has
        m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
    save_ofa_checkpoint(net, root / "ofa_resnet50.pth")
    del net
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
    assert all(list(s["latency_ms"]) == ["1", "2", "3", "4"] for s in profile["subnets"])
    config = read_model_config(out / "config.pbtxt")
    assert config.name == "ofa_resnet50" and list(config.input[0].dims) == [3, RESOLUTION, RESOLUTION]
    check_model_config(json_format.MessageToDict(config, preserving_proto_field_name=True), profile)
    assert (out / "1" / "model.py").resolve() == ADAPTER.resolve()
    assert (out / "1" / "subnet_norm.pt").is_file()


def test_image_folder_splits_are_disjoint_and_preprocessed_as_imagenet(built):
    _, images = built
    data = load_image_folder(images, RESOLUTION, progress=False)
    files = data.files
    assert not set(files["calibration"]) & set(files["validation"])
    assert not set(files["test"]) & (set(files["validation"]) | set(files["calibration"]))
    assert sorted(set(data.test_y.tolist())) == [0, 1, 2] and data.test_x.shape == (9, 3, RESOLUTION, RESOLUTION)
    first = files["test"][0]
    np.testing.assert_array_equal(data.test_x[0].numpy(), preprocess(images / first, RESOLUTION))
    assert -2.2 < float(data.test_x.min()) and float(data.test_x.max()) < 2.7  # ImageNet-normalised range
    reordered = load_image_folder(images, RESOLUTION, classes=list(CLASSES[::-1]), progress=False)
    assert sorted(set(reordered.test_y.tolist())) == [0, 1, 2]
    assert reordered.test_y.tolist() == [2 - y for y in data.test_y.tolist()]  # same files, the given class order
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
    finally:
        srv.stop()
