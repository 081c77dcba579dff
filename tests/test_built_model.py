"""The built model's artefacts (``make model``): honest accuracy and a config that matches them."""

from __future__ import annotations

import numpy as np
import pytest

from superserve.data import load_digits
from superserve.serving.config import read_model_config
from superserve.supernet.artefacts import check_model_config

pytestmark = pytest.mark.integration  # needs the built model, like the server tests


def test_the_reported_accuracy_comes_from_a_split_disjoint_from_training_calibration_and_selection(profile):
    assert profile["accuracy_split"] == "test" and profile["selection_split"] == "validation"
    data = load_digits()
    described = data.describe()
    assert profile["splits"] == described  # the same rows the build used (sizes and fingerprints)
    test = set(data.indices["test"].tolist())
    for other in ("train", "calibration", "validation"):
        assert not test & set(data.indices[other].tolist()), other
    assert not set(data.indices["validation"].tolist()) & set(data.indices["train"].tolist())
    assert described["test"]["size"] == 1000 and len(np.unique(data.indices["test"])) == 1000


def test_the_shipped_config_matches_the_artefacts(profile):
    from google.protobuf import json_format

    from conftest import MODEL_DIR

    config = json_format.MessageToDict(read_model_config(MODEL_DIR.parent / "config.pbtxt"),
                                       preserving_proto_field_name=True)
    check_model_config(config, profile)  # raises on a mismatch
    wrong = dict(config, input=[dict(config["input"][0], dims=["3", "28", "28"])])
    with pytest.raises(ValueError, match="input INPUT has dims"):
        check_model_config(wrong, profile)
    with pytest.raises(ValueError, match="max_batch_size 8 is below"):
        check_model_config(dict(config, max_batch_size=8), profile)
    with pytest.raises(ValueError, match="LOGITS has dims"):
        check_model_config(dict(config, output=[{"name": "LOGITS", "dims": ["7"]}]), profile)
