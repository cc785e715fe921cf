"""Sharpness: the power iteration finds a known Hessian's top eigenvalue, the epsilon-sharpness
finds a known worst perturbation, and neither changes the model it measures."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp import sharpness


def quadratic(eigenvalues, seed):
    """Variables of two shapes and the loss 1/2 w^T A w over all their entries, A symmetric
    with the given eigenvalues in a random basis."""
    rng = np.random.default_rng(seed)
    size = len(eigenvalues)
    basis, _ = np.linalg.qr(rng.standard_normal((size, size)))
    matrix = tf.constant(basis @ np.diag(eigenvalues) @ basis.T, tf.float32)
    first = tf.Variable(rng.standard_normal((2, 3)), dtype=tf.float32)
    second = tf.Variable(rng.standard_normal(size - 6), dtype=tf.float32)

    def loss():
        w = tf.concat([tf.reshape(first, [-1]), second], 0)
        return 0.5 * tf.tensordot(w, tf.linalg.matvec(matrix, w), 1)

    return loss, [first, second]


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(0.0, 5.0), min_size=9, max_size=14), st.floats(8.0, 50.0),
       st.integers(0, 1000))
def test_the_power_iteration_finds_the_top_eigenvalue_of_a_quadratic(rest, top, seed):
    # A gap of at least 3/5 between the top eigenvalue and the next, as at a trained minimum.
    loss, variables = quadratic(np.array([top, *rest]), seed)
    # A tolerance above float32's rounding (about 1e-7), so convergence can be reached.
    found, _, converged = sharpness.hessian_top_eigenvalue(loss, variables, iterations=100,
                                                           seed=seed, tolerance=1e-6)
    assert found == pytest.approx(top, rel=1e-3) and converged


def test_the_top_eigenvalue_is_the_largest_not_the_largest_in_magnitude():
    # A saddle: an eigenvalue of -9 outweighs the largest, 2, in magnitude.
    loss, variables = quadratic(np.array([-9.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.0, -1.0, -3.0]), 3)
    found, used, converged = sharpness.hessian_top_eigenvalue(loss, variables, iterations=200,
                                                              tolerance=1e-6)
    assert found == pytest.approx(2.0, rel=1e-3) and converged
    # Too few iterations to converge: said, not hidden.
    loss, variables = quadratic(np.array([5.0, 4.9, 4.8, 1, 1, 1, 1, 1, 1]), 3)
    _, used, converged = sharpness.hessian_top_eigenvalue(loss, variables, iterations=3,
                                                          tolerance=1e-9)
    assert used == 3 and not converged


def test_epsilon_sharpness_finds_the_worst_corner_of_the_box():
    # A linear loss c . w + 1 rises most at d = epsilon (|w| + 1) sign(c).
    c = tf.constant([3.0, -2.0, 0.5])
    w = tf.Variable([1.0, -4.0, 0.0])
    loss = lambda: tf.reduce_sum(c * w) + 20.0
    base = float(loss())
    rise = float(tf.reduce_sum(tf.abs(c) * 0.01 * (tf.abs(w) + 1.0)))
    measured = sharpness.epsilon_sharpness(loss, [w], epsilon=0.01)
    assert measured == pytest.approx(100 * rise / (1 + base), rel=1e-4)
    assert w.numpy().tolist() == [1.0, -4.0, 0.0]  # put back


def test_a_model_sharpness_leaves_the_model_as_it_was_and_sees_curvature():
    from mlp.config import Config
    from mlp.model import MLP

    config = Config(hidden_sizes=(16, 8), precision="float32")
    model = MLP.from_config(config, tf.bfloat16)
    rng = np.random.default_rng(0)
    images = rng.random((300, 784), dtype=np.float32)
    labels = rng.integers(0, 10, 300).astype(np.int32)
    before = [v.numpy().copy() for v in model.variables]
    measured = sharpness.sharpness(model, config, images, labels)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.variables))
    assert measured["examples"] == 300 and measured["epsilon"] == sharpness.EPSILON
    assert measured["hessian_top_eigenvalue"] > 0 and measured["epsilon_sharpness"] > 0
    # Logits four times as large make the loss surface sharper.
    model.logits_layer.kernel.assign(model.logits_layer.kernel * 4.0)
    sharper = sharpness.sharpness(model, config, images, labels)
    assert sharper["hessian_top_eigenvalue"] > measured["hessian_top_eigenvalue"]
