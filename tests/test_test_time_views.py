"""Test-time views: the shifted copies are the image moved, the evaluator averages over exactly
the views the recipe asks for, and experiments.test_time_views reproduces a run's accuracy with
the recipe's own views."""

import json

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
