"""Calibration measures against hand-computed values, the temperature fit against a known
temperature, and a run's calibration, predictions file and reliability diagram."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp import calibration
from tests.conftest import SMALL_RUN_FLAGS, run_module


def test_the_measures_on_a_case_computed_by_hand():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 1])
    # Confidences 0.9, 0.6, 0.7, 0.8 fall in four different bins of 15; correct: 1, 0, 1, 1.
    ece = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.7) + abs(1 - 0.8)) / 4
    nll = -(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.8)) / 4
    brier = (2 * 0.1**2 + 2 * 0.6**2 + 2 * 0.3**2 + 2 * 0.2**2) / 4
    measured = calibration.measures(probabilities, labels)
    assert measured["ece"] == pytest.approx(ece)
    assert measured["nll"] == pytest.approx(nll)
    assert measured["brier"] == pytest.approx(brier)
    # Two examples in one bin: the bin's accuracy and mean confidence are compared, not each.
    same_bin = np.array([[0.62, 0.38], [0.61, 0.39]])
    assert calibration.expected_calibration_error(same_bin, np.array([0, 1])) == pytest.approx(
        abs(0.5 - 0.615))


def _draw(rng, probabilities):
    """One label per row, drawn from that row's class probabilities (by the inverse CDF)."""
    below = np.cumsum(probabilities, axis=1)[:, :-1]
    return (rng.random((len(probabilities), 1)) >= below).sum(axis=1)


@settings(max_examples=10, deadline=None)
@given(temperature=st.floats(0.3, 5.0), seed=st.integers(0, 1000))
def test_the_temperature_fit_recovers_the_temperature_the_labels_were_drawn_with(temperature,
                                                                                 seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(20000, 10))
    truth = calibration.softmax(logits / temperature)
    labels = _draw(rng, truth)
    fitted = calibration.fit_temperature(logits, labels)
    assert fitted == pytest.approx(temperature, rel=0.1)


def test_scaling_by_the_fitted_temperature_does_not_lower_the_validation_likelihood():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(5000, 10))  # overconfident: drawn at temperature 2
    labels = _draw(rng, calibration.softmax(logits / 2.0))
    result = calibration.calibration(logits, labels, logits, labels)
    assert result["scaled"]["nll"] <= result["nll"] and result["scaled"]["ece"] < result["ece"]


@pytest.mark.slow  # a whole run
def test_a_run_reports_calibration_and_leaves_its_test_predictions(small_data, tmp_path):
    done = run_module("improved", "--data-dir", small_data, "--logdir", tmp_path,
                          "--run-name", "calibrated", "--epochs", 2, "--test-time-flip",
                          *SMALL_RUN_FLAGS)
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "calibrated"
    results = json.loads((run_dir / "results.json").read_text())
    saved = np.load(run_dir / "test_predictions.npz")
    probabilities, labels = saved["probabilities"], saved["labels"]
    assert probabilities.shape == (200, 10) and probabilities.dtype == np.float32
    # Everything reported can be computed again from the file.
    assert np.mean(probabilities.argmax(axis=1) == labels) == pytest.approx(
        results["test_accuracy"])
    reported = results["calibration"]
    again = calibration.measures(probabilities.astype(np.float64), labels)
    for key in ("ece", "nll", "brier"):
        assert reported[key] == pytest.approx(again[key], abs=1e-5)
    assert reported["nll"] == pytest.approx(results["test_loss"], abs=1e-4)
    assert reported["temperature"] > 0 and set(reported["scaled"]) == {"ece", "nll", "brier"}
    assert results["sharpness"] is None  # measured when asked (--sharpness) or in a study
    assert results["corruption_accuracy"] is None  # left out when asked (--no-corruptions)
