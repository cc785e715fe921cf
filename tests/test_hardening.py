"""Damaged or foreign state: hand-edited config.json / results.json, names that are not plain,
damaged checkpoints. Each gives one line and an exit code, never a traceback, and loses nothing."""

import dataclasses
import json

import pytest

from mlp.config import Config, ConfigError
from tests.conftest import SMALL_RUN_FLAGS, run_experiment


def _saved_run(tmp_path, small_data, **changes):
    """A run directory whose config.json is a valid config, edited by `changes` (None deletes)."""
    run_dir = tmp_path / "edited"
    run_dir.mkdir()
    config = Config(data_dir=str(small_data), logdir=str(tmp_path), run_name="edited",
                    verify_checksums=False, validation_size=100, batch_size=50, epochs=1,
                    histograms=False).to_dict()
    for key, value in changes.items():
        if value is None:
            del config[key]
        else:
            config[key] = value
    (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


def _resume(tmp_path):
    return run_experiment("improved", "--logdir", tmp_path, "--run-name", "edited", "--resume")


def _one_line(done, code, *words):
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert all(word in lines[-1] for word in words), lines[-1]


@pytest.mark.parametrize("changes,words", [
    ({"learning_rat": 0.1}, ["unknown settings learning_rat"]),
    ({"l2": None}, ["missing settings l2"]),
    ({"epochs": "ten"}, ["--epochs", "must be int"]),
    ({"batch_norm": "yes"}, ["--batch-norm", "must be bool"]),
    ({"precision": "fp8"}, ["--precision", "must be one of"]),
    ({"lr_schedule": "linear"}, ["--lr-schedule", "must be one of"]),
    ({"initializer": "zeros"}, ["--initializer", "must be one of"]),
    ({"hidden_sizes": [64, "wide"]}, ["--hidden-sizes"]),
    ({"seed": -1}, ["--seed", "must be in"]),
])
def test_an_edited_config_is_one_line_and_exit_2(tmp_path, small_data, changes, words):
    run_dir = _saved_run(tmp_path, small_data, **changes)
    _one_line(_resume(tmp_path), 2, *words)
    assert not (run_dir / "checkpoints").exists()  # nothing started


def test_a_missing_setting_is_not_filled_from_a_default(tmp_path, small_data):
    # The improved recipe's default l2 is 1e-4: a missing l2 must not quietly become that.
    _saved_run(tmp_path, small_data, l2=None)
    _one_line(_resume(tmp_path), 2, "missing settings l2")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "", "\udcff"])
def test_an_unreadable_config_is_one_line_and_exit_2(tmp_path, small_data, content):
    run_dir = _saved_run(tmp_path, small_data)
    (run_dir / "config.json").write_text(content, errors="surrogateescape")
    _one_line(_resume(tmp_path), 2, "config.json")


@pytest.mark.parametrize("content", ["{not json", "{}", '{"test_accuracy": "high"}'])
def test_a_damaged_results_file_is_one_line_and_exit_2(tmp_path, small_data, content):
    run_dir = _saved_run(tmp_path, small_data)
    (run_dir / "results.json").write_text(content)
    _one_line(_resume(tmp_path), 2, "results.json")
    assert (run_dir / "results.json").read_text() == content  # left as it was


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "."])
def test_a_run_name_that_is_not_a_plain_name_is_refused_before_anything_is_read(tmp_path, name):
    outside = tmp_path / "x"
    outside.mkdir()
    (outside / "config.json").write_text("{not json")  # would be read if the name were used
    done = run_experiment("improved", "--logdir", tmp_path / "logs", "--run-name", name,
                          "--resume")
    _one_line(done, 2, "--run-name", "plain directory name")


@pytest.mark.parametrize("changes,flag", [
    ({"precision": "fp8"}, "--precision"), ({"batch_norm": 1}, "--batch-norm"),
    ({"initializer": "ones"}, "--initializer"), ({"seed": 2**31}, "--seed"),
    ({"epochs": 2.5}, "--epochs"), ({"hidden_sizes": (64, 0)}, "--hidden-sizes")])
def test_the_python_api_validates_like_the_command_line(changes, flag):
    with pytest.raises(ConfigError, match=flag):
        dataclasses.replace(Config(), **changes).validate()
