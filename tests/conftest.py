"""Shared fixtures: one real tritonserver per test session, on free loopback ports."""

from __future__ import annotations

import json

import pytest

from superserve.runtime.tritonenv import REPO_ROOT, start_server

MODEL_DIR = REPO_ROOT / "model_repository" / "superserve" / "1"


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    if not (MODEL_DIR / "profile.json").is_file():
        pytest.fail(f"no built model in {MODEL_DIR}: run `make model` (make test does it)")
    srv = start_server(REPO_ROOT / "model_repository", tmp_path_factory.mktemp("triton") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def profile():
    return json.loads((MODEL_DIR / "profile.json").read_text())


@pytest.fixture(scope="session")
def digits():
    from superserve.build.data import load_digits

    data = load_digits()
    return data.test_x.numpy(), data.test_y.numpy()


def pytest_collection_modifyitems(items):
    for item in items:
        if "server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
