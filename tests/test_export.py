"""Integration: the exported model repository, served by the wheel's tritonserver started with a bare environment
(nothing of this project's venv), answers every SubNet of every shipped model with its extracted twin's logits."""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from superserve.runtime.export import ENV_NAME, built_models, export, exported_config
from superserve.runtime.tritonenv import REPO_ROOT, start_server

REPOSITORIES = (REPO_ROOT / "model_repository", REPO_ROOT / "worker_repository")
VENV = str(Path(sys.prefix).resolve())


def test_the_exported_config_names_the_environment_once():
    config = 'name: "m"\nbackend: "python"\nparameters: { key: "EXECUTION_ENV_PATH" value: { string_value: "x" } }\n'
    text = exported_config(exported_config(config))
    assert text.count("EXECUTION_ENV_PATH") == 1
    assert '"$$TRITON_MODEL_DIRECTORY/../../python_env"' in text and '"x"' not in text


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    export(out, REPOSITORIES, say=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def bare_server(exported, tmp_path_factory):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path_factory.mktemp("home")), "LANG": "C.UTF-8"}
    assert not any(VENV in value for value in env.values())
    server = start_server(exported / "model_repository", tmp_path_factory.mktemp("bare") / "server.log", env=env)
    yield server
    server.stop()


def _descendants(pid: int) -> list[int]:
    parents = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        parents[int(stat.split("/")[2])] = int(text[text.rindex(")") + 2:].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


@pytest.mark.integration
def test_every_shipped_model_is_exported():
    names = {folder.name for repository in REPOSITORIES for folder in built_models(repository)}
    assert {"superserve", "superserve_vit", "superserve_worker"} <= names


@pytest.mark.integration
def test_the_environment_holds_the_pinned_versions(exported):
    from importlib.metadata import version

    probe = "from importlib.metadata import version as v; import superserve; " \
            "print(v('torch'), v('numpy'), v('tritonclient'), superserve.__file__)"
    done = subprocess.run([str(exported / ENV_NAME / "bin" / "python"), "-c", probe], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"}, check=True)
    versions, where = done.stdout.split()[:3], done.stdout.split()[3]
    assert versions == [version("torch"), version("numpy"), version("tritonclient")]
    assert where.startswith(str(exported / ENV_NAME))  # installed from the wheel, not a link to the checkout


@pytest.mark.integration
def test_the_server_and_every_model_process_run_without_the_venv(bare_server, exported):
    env = str((exported / ENV_NAME).resolve())
    torch_users = 0
    for pid in [bare_server.process.pid, *_descendants(bare_server.process.pid)]:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        except OSError:
            continue  # a process that ended while we looked
        assert VENV not in maps and VENV not in environ, f"process {pid} uses {VENV}"
        torch_libs = {line.split()[-1] for line in maps.splitlines() if "libtorch_cpu" in line}
        assert all(lib.startswith(env) for lib in torch_libs), torch_libs
        torch_users += bool(torch_libs)
    assert torch_users >= 5  # three model stubs and the router's two local workers


@pytest.mark.integration
@pytest.mark.parametrize("model", ["superserve", "superserve_vit", "superserve_worker"])
def test_every_subnet_answers_like_its_extracted_twin(bare_server, exported, digits, model):
    import torch

    from superserve.supernet import family_of
    from superserve.supernet.artefacts import load_supernet

    net, profile = load_supernet(exported / "model_repository" / model / "1")
    family = family_of(net.space)
    client = grpcclient.InferenceServerClient(bare_server.grpc_url)
    x = digits[0][:4]
    for index, entry in enumerate(profile["subnets"]):
        tensor = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(model, [tensor], parameters={"subnet": index, "slo_ms": 5000})
        if model != "superserve_worker":
            assert result.as_numpy("SUBNET")[:, 0].tolist() == [index] * len(x)
        with torch.no_grad():
            expected = family.extract(net, net.space.parse(entry["config"]))(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(result.as_numpy("LOGITS"), expected, atol=1e-4)
