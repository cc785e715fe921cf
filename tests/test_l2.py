import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlp import MLP, l2_penalty

kernel_lists = st.lists(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=8),
               elements=st.floats(-10, 10, width=32)), min_size=1, max_size=4)


@settings(max_examples=50, deadline=None)
@given(kernels=kernel_lists, l2=st.floats(0, 1))
def test_l2_is_factor_times_sum_of_squares_for_any_weights(kernels, l2):
    expected = l2 * sum(float(np.sum(k.astype(np.float64) ** 2)) for k in kernels)
    value = float(l2_penalty([tf.constant(k) for k in kernels], l2))
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-6)


@given(kernels=kernel_lists)
def test_l2_is_zero_when_factor_is_zero(kernels):
    assert float(l2_penalty([tf.constant(k) for k in kernels], 0.0)) == 0.0


@settings(max_examples=30, deadline=None)
@given(kernels=kernel_lists, l2=st.floats(1e-6, 1))
def test_l2_gradient_is_two_l2_w(kernels, l2):
    variables = [tf.Variable(k) for k in kernels]
    with tf.GradientTape() as tape:
        penalty = l2_penalty(variables, l2)
    for gradient, kernel in zip(tape.gradient(penalty, variables), kernels):
        np.testing.assert_allclose(gradient, 2 * l2 * kernel, rtol=1e-5, atol=1e-6)


def test_l2_covers_kernels_only():
    model = MLP(hidden_sizes=(6, 4), batch_norm=True, input_size=5)
    kernel_ids = {id(k) for k in model.kernels}
    others = [v for v in model.trainable_variables if id(v) not in kernel_ids]
    assert len(model.kernels) == 3
    assert {v.name.split(":")[0] for v in others} == {"bias", "gamma", "beta"}
    with tf.GradientTape() as tape:
        penalty = l2_penalty(model.kernels, 0.1)
    gradients = tape.gradient(penalty, others)
    assert all(g is None for g in gradients)
