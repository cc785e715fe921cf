"""experiments.speedrun: a fixed budget per seed, its figures, and the Keras reference."""

import json
import math

import pytest

from experiments.recipes import SPEEDRUN as CONFIG
from experiments.speedrun import markdown, summarize
from tests.conftest import run_module


def run(seed, accuracy, seconds, whitening=0.5):
    return {"seed": seed, "test_accuracy": accuracy, "train_seconds": seconds,
            "whitening_seconds": whitening, "epochs_run": 8, "precision": "float32"}


def test_summary_requires_every_seed_and_compares_mean_times_with_keras():
    runs = [run(0, 0.905, 10.0), run(1, 0.899, 14.0)]
    keras = [{"seconds": 60.0, "epochs": 20, "test_accuracy": 0.893},
             {"seconds": 84.0, "epochs": 25, "test_accuracy": 0.892}]
    summary = summarize(runs, keras, 0.900, 0.892)
    assert not summary["every_seed_reached_target"]  # seed 1 fell short
    assert math.isclose(summary["mean_train_seconds"], 12.0)
    assert summary["max_train_seconds"] == 14.0
    assert math.isclose(summary["keras_reference"]["speedup"], 72.0 / 12.0)
    table = markdown(summary, "some CPU", ["float32"])
    assert "| 1 | 0.8990 | NO | 14.00 | 0.50 | 8 |" in table
    assert "NOT every seed" in table and "**6.0x**" in table

    assert summarize(runs[:1], None, 0.900, 0.892)["every_seed_reached_target"]
    # A Keras seed that never reached its target gives no ratio, rather than a flattering one.
    keras[1] = {"seconds": None, "epochs": 60, "test_accuracy": 0.89}
    reference = summarize(runs, keras, 0.900, 0.892)["keras_reference"]
    assert reference["speedup"] is None and reference["mean_seconds"] is None
    assert "not reached" in markdown(summarize(runs, keras, 0.9, 0.892), "cpu", ["float32"])


def test_the_recipe_stops_by_a_fixed_budget():
    # Nothing in the run looks at held-out data to decide when to stop.
    assert not CONFIG.early_stopping and CONFIG.lr_schedule == "cosine"
    assert CONFIG.whitening == "zca" and CONFIG.precision == "auto"


@pytest.mark.slow
def test_speedrun_trains_each_seed_times_keras_and_continues_by_name(small_data, tmp_path):
    args = ["--seeds", "2", "--data-dir", small_data, "--no-verify-checksums",
            "--validation-size", "100", "--logdir", tmp_path, "--study-name", "sr",
            "--no-sharpness", "--no-figures", "--precision", "float32", "--target", "0.5",
            "--keras-target", "0.3"]
    first = run_module("speedrun", *args, "--keras-reference")
    assert first.returncode == 0, first.stderr
    study = tmp_path / "sr"
    summary = json.loads((study / "speedrun.json").read_text())
    assert summary["seeds"] == [0, 1]
    for record in summary["runs"]:
        results = json.loads((study / f"seed{record['seed']}" / "results.json").read_text())
        assert results["epochs_run"] == CONFIG.epochs  # the fixed budget
        assert results["whitening_seconds"] > 0
        assert math.isclose(results["train_seconds"],
                            sum(results["epoch_seconds"]) + results["whitening_seconds"])
        assert record["train_seconds"] == results["train_seconds"]
        assert record["test_accuracy"] == results["test_accuracy"]
    assert summary["every_seed_reached_target"] == all(
        r["test_accuracy"] >= 0.5 for r in summary["runs"])
    keras = summary["keras_reference"]
    for reference in keras["runs"]:
        # It stops at the first epoch whose test accuracy reaches the target.
        assert reference["test_accuracy"] >= 0.3 and reference["seconds"] is not None
        assert all(a < 0.3 for a in reference["test_accuracies"][:-1])
        assert math.isclose(reference["seconds"], sum(reference["epoch_seconds"]))
        assert len(reference["epoch_seconds"]) == reference["epochs"]
    assert math.isclose(keras["speedup"], keras["mean_seconds"] / summary["mean_train_seconds"])
    table = (study / "speedrun.md").read_text()
    assert table.count("\n| 0 |") == 2 and table.count("\n| 1 |") == 2  # speedrun + keras rows
    half = 1.96 * math.sqrt(summary["mean_test_accuracy"] * (1 - summary["mean_test_accuracy"])
                            / 200)
    assert f"Test-set sampling error: ±{half * 100:.2f} pt (95%, binomial, 200 test" in table

    # An interrupted seed resumes under the same name; a finished one is kept.
    (study / "seed1" / "results.json").unlink()
    second = run_module("speedrun", *args)
    assert second.returncode == 0, second.stderr
    assert "seed 0: finished before, skipped" in second.stdout
    assert "seed 1: resuming" in second.stdout
    again = json.loads((study / "speedrun.json").read_text())
    assert again["runs"][1]["test_accuracy"] == summary["runs"][1]["test_accuracy"]
    assert again["keras_reference"] is None  # not asked for this time


def test_bad_arguments_are_one_line(tmp_path):
    result = run_module("speedrun", "--seeds", "0", "--logdir", tmp_path)
    assert result.returncode == 2 and "--seeds must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr
