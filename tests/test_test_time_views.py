"""Test-time views: the shifted copies are the image moved, the evaluator averages over exactly
the views the recipe asks for, and experiments.test_time_views reproduces a run's accuracy with
the recipe's own views."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp.augment import evaluation_views, shift
from mlp.evaluation import Evaluator
from mlp.model import MLP
from tests.conftest import run_module
from tests.test_export import exported_model  # noqa: F401  (a finished run)


@settings(max_examples=60, deadline=None)
@given(row=st.integers(0, 27), column=st.integers(0, 27), rows=st.integers(-3, 3),
       columns=st.integers(-3, 3))
def test_a_shift_moves_each_pixel_and_drops_what_leaves_the_image(row, column, rows, columns):
    image = np.zeros((1, 28, 28), np.float32)
    image[0, row, column] = 1.0
    moved = shift(tf.constant(image.reshape(1, -1)), rows, columns).numpy().reshape(1, 28, 28)
    to = (row + rows, column + columns)
    if 0 <= to[0] < 28 and 0 <= to[1] < 28:
        assert moved.sum() == 1.0 and moved[0, to[0], to[1]] == 1.0
    else:
        assert moved.sum() == 0.0


def _numpy_views(images, flip, shifts):
    """The views, written again in numpy: each base view moved by whole pixels with np.roll,
    the wrapped-around edge zeroed."""
    square = images.reshape(-1, 28, 28)
    base = [square, square[:, :, ::-1]] if flip else [square]
    views = list(base)
    for distance in range(1, shifts + 1):
        for rows, columns in ((distance, 0), (-distance, 0), (0, distance), (0, -distance)):
            for view in base:
                moved = np.roll(view, (rows, columns), axis=(1, 2))
                if rows > 0:
                    moved[:, :rows] = 0
                elif rows < 0:
                    moved[:, rows:] = 0
                if columns > 0:
                    moved[:, :, :columns] = 0
                elif columns < 0:
                    moved[:, :, columns:] = 0
                views.append(moved)
    return [view.reshape(len(images), -1) for view in views]


@pytest.mark.parametrize("flip, shifts", [(False, 0), (True, 0), (False, 1), (True, 1), (True, 2)])
def test_the_evaluator_averages_the_probabilities_of_exactly_the_recipes_views(flip, shifts):
    model = MLP(hidden_sizes=(16,), seed=2)
    images = np.random.default_rng(3).random((40, 784)).astype(np.float32)
    labels = np.random.default_rng(4).integers(0, 10, 40).astype(np.int32)
    expected_views = _numpy_views(images, flip, shifts)
    assert len(evaluation_views(tf.constant(images), flip, shifts)) == len(expected_views) == \
        (2 if flip else 1) * (1 + 4 * shifts)
    probabilities = np.mean([tf.nn.softmax(model(tf.constant(view), training=False)).numpy()
                             for view in expected_views], axis=0)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    evaluator = Evaluator(model, test_time_flip=flip, test_time_shifts=shifts)
    result = evaluator.evaluate(dataset)
    np.testing.assert_allclose(np.exp(result["log_probabilities"].numpy()), probabilities,
                               rtol=1e-5, atol=1e-7)
    expected_loss = -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))
    assert float(result["loss"].numpy()) == pytest.approx(expected_loss, rel=1e-5)
    # single_view: the plain images alone, whatever the recipe's views.
    plain = tf.nn.softmax(model(tf.constant(images), training=False)).numpy()
    np.testing.assert_allclose(np.exp(evaluator.evaluate(dataset, single_view=True)
                                      ["log_probabilities"].numpy()), plain, rtol=1e-5, atol=1e-7)


def test_the_recipes_own_views_give_the_reported_accuracy(exported_model, tmp_path):  # noqa: F811
    results = json.loads((exported_model / "results.json").read_text())
    done = run_module("test_time_views", exported_model, "--split", "test")
    assert done.returncode == 0, done.stderr
    [row] = [line for line in done.stdout.splitlines() if line.startswith(f"| {exported_model}")]
    own, more, change = (cell.strip() for cell in row.split("|")[2:5])
    assert own == f"{results['test_accuracy']:.4f}"
    assert 0.0 <= float(more) <= 1.0 and change.endswith(" pt")

    too_far = run_module("test_time_views", exported_model, "--shifts", "28")
    assert too_far.returncode == 2 and "--shifts must be 0 to 27" in too_far.stderr
    assert "Traceback" not in too_far.stderr

    missing = run_module("test_time_views", tmp_path)
    assert missing.returncode != 0 and "not a run directory" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def _written(directory):
    return json.loads((directory / "results.json").read_text())


def test_a_run_evaluated_again_is_kept_as_a_run_the_records_take(exported_model,  # noqa: F811
                                                                   tmp_path):
    from experiments.results import correct_of, run_record

    original = json.loads((exported_model / "results.json").read_text())
    saved = np.load(exported_model / "test_predictions.npz")
    # The recipe has no test-time views: its own views again give its own predictions.
    same = run_module("test_time_views", exported_model, "--split", "test", "--shifts", "0",
                      "--write", tmp_path / "same")
    assert same.returncode == 0, same.stderr
    again = _written(tmp_path / "same" / exported_model.name)
    assert again["test_accuracy"] == pytest.approx(original["test_accuracy"], abs=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "same" / exported_model.name /
                                       "test_predictions.npz")["probabilities"],
                               saved["probabilities"], rtol=1e-5, atol=1e-6)
    assert again["evaluated_again"] == {"from": str(exported_model.resolve()),
                                        "test_time_flip": False, "test_time_shifts": 0}
    assert again["weights_digest"] == original["weights_digest"]

    # Shifted copies: the printed accuracy is the one kept, and the records read it as a run's.
    shifted = run_module("test_time_views", exported_model, "--split", "test", "--shifts", "1",
                         "--write", tmp_path / "shifted")
    assert shifted.returncode == 0, shifted.stderr
    [row] = [line for line in shifted.stdout.splitlines() if line.startswith(f"| {exported_model}")]
    run = tmp_path / "shifted" / exported_model.name
    kept = _written(run)
    assert f"{kept['test_accuracy']:.4f}" == row.split("|")[3].strip()
    assert kept["experiment_config"]["test_time_shifts"] == 1
    assert kept["experiment_config"]["seed"] == original["experiment_config"]["seed"]
    entry = run_record(run, "shifted")
    assert entry["seed"] == original["experiment_config"]["seed"]
    assert entry["test_accuracy"] == kept["test_accuracy"]
    assert correct_of(entry).mean() == pytest.approx(kept["test_accuracy"], abs=1e-6)

    # Nothing already written is replaced, and --write needs the test split.
    before = (run / "results.json").read_bytes()
    refused = run_module("test_time_views", exported_model, "--split", "test", "--write",
                         tmp_path / "shifted")
    assert refused.returncode == 2 and "exists" in refused.stderr
    assert "Traceback" not in refused.stderr and (run / "results.json").read_bytes() == before
    no_test = run_module("test_time_views", exported_model, "--write", tmp_path / "other")
    assert no_test.returncode == 2 and "--split test" in no_test.stderr
    assert not (tmp_path / "other").exists()
    (tmp_path / "a file").write_text("")
    unwritable = run_module("test_time_views", exported_model, "--split", "test", "--write",
                            tmp_path / "a file" / "views")
    assert unwritable.returncode == 1 and "cannot write" in unwritable.stderr
    assert "Traceback" not in unwritable.stderr
    assert len(unwritable.stderr.strip().splitlines()) == 1


def test_no_flip_leaves_the_mirror_out_of_a_flipping_recipes_views(exported_model,  # noqa: F811
                                                                   tmp_path):
    # The same weights with the recipe's test-time flip turned on: --no-flip --shifts 0 is the
    # plain image alone again, the run's own accuracy. The copy's results.json says an accuracy
    # no evaluation gives, which what is kept must not take.
    flipping = tmp_path / "flipping"
    shutil.copytree(exported_model, flipping)
    for name in ("config.json", "results.json"):
        saved = json.loads((flipping / name).read_text())
        (saved.get("experiment_config", saved))["test_time_flip"] = True
        if name == "results.json":
            saved["test_accuracy"] = -1.0
        (flipping / name).write_text(json.dumps(saved))
    original = json.loads((exported_model / "results.json").read_text())
    for flag, written in (("--no-flip", "plain"), (None, "mirrored")):
        done = run_module("test_time_views", flipping, "--split", "test", "--shifts", "0",
                          *([flag] if flag else []), "--write", tmp_path / written)
        assert done.returncode == 0, done.stderr
    plain, mirrored = (_written(tmp_path / written / "flipping")
                       for written in ("plain", "mirrored"))
    assert plain["test_accuracy"] == pytest.approx(original["test_accuracy"], abs=1e-6)
    assert plain["test_loss"] == pytest.approx(original["test_loss"], rel=1e-5)
    assert abs(mirrored["test_loss"] - plain["test_loss"]) > 1e-4  # the mirror averaged in
    assert plain["evaluated_again"]["test_time_flip"] is False
    assert plain["experiment_config"]["test_time_flip"] is False
    assert mirrored["experiment_config"]["test_time_flip"] is True
