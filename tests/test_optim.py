import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp import fused as fused_lib
from mlp.optim import FusedAdam, make_optimizer


@pytest.fixture(scope="module")
def ops():
    return fused_lib.load()


@pytest.mark.parametrize("kernels", ["tensorflow", "fused"])
@settings(max_examples=10, deadline=None)
@given(learning_rate=st.sampled_from([1e-3, 1e-2, 0.1]), steps=st.integers(1, 30),
       seed=st.integers(0, 1000))
def test_fused_adam_follows_keras_adam_step_for_step(ops, kernels, learning_rate, steps, seed):
    rng = np.random.default_rng(seed)
    start = [rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    ours, theirs = [tf.Variable(w) for w in start], [tf.Variable(w) for w in start]
    fused = FusedAdam(learning_rate, fused_ops=ops if kernels == "fused" else None)
    reference = keras.optimizers.Adam(learning_rate)
    fused.build(ours)
    reference.build(theirs)

    @tf.function
    def step(optimizer, variables):
        optimizer.apply([tf.sin(3.0 * v) for v in variables], variables)

    for _ in range(steps):
        step(fused, ours)
        step(reference, theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    for a, b in zip(fused.variables, reference.variables):  # same slots, same values
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    assert int(fused.iterations.numpy()) == steps


def test_make_optimizer_wraps_only_float16_in_loss_scaling():
    assert isinstance(make_optimizer("float32", 1e-3), FusedAdam)
    assert isinstance(make_optimizer("mixed_bfloat16", 1e-3), FusedAdam)
    scaled = make_optimizer("mixed_float16", 1e-3)
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    assert isinstance(scaled.inner_optimizer, FusedAdam)
    assert float(scaled.learning_rate.numpy()) == pytest.approx(1e-3)


def _adam_steps(optimizer, start, gradient_fn, steps, l2_factor=None):
    """Variables from `start` after `steps` steps of `optimizer` with gradients gradient_fn(v)
    (and, with `l2_factor`, the L2 gradient left to the optimizer); the variables and slots."""
    variables = [tf.Variable(w) for w in start]
    if l2_factor is not None:
        optimizer.add_l2_gradient(variables, l2_factor)
    optimizer.build(variables)

    @tf.function
    def step():
        optimizer.apply([gradient_fn(v) for v in variables], variables)

    for _ in range(steps):
        step()
    return [v.numpy() for v in variables], [np.asarray(s) for s in optimizer.variables]


@settings(max_examples=15, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=2), min_size=1,
                       max_size=3),
       factor=st.sampled_from([0.0, 1e-4, 0.02, 1.5]), learning_rate=st.sampled_from([1e-3, 0.1]),
       steps=st.integers(1, 8), seed=st.integers(0, 1000))
def test_the_fused_update_with_the_l2_gradient_is_tensorflows_bit_for_bit(
        ops, shapes, factor, learning_rate, steps, seed):
    # MlpApplyAdam adding factor * w to the gradient in its pass, against ResourceApplyAdam given
    # gradient + factor * w made by TensorFlow's ops: the same arithmetic, so the same bits.
    rng = np.random.default_rng(seed)
    start = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    gradient = lambda v: tf.sin(3.0 * v) * 0.1  # noqa: E731
    ours = _adam_steps(FusedAdam(learning_rate, fused_ops=ops), start, gradient, steps, factor)
    expected = _adam_steps(FusedAdam(learning_rate), start, lambda v: gradient(v) + factor * v,
                           steps)
    for a, b in zip(ours[0] + ours[1], expected[0] + expected[1]):  # variables, then slots
        np.testing.assert_array_equal(a, b)


def test_the_l2_gradient_reaches_only_the_variables_named(ops):
    start = [np.ones((3, 2), np.float32), np.ones(2, np.float32)]
    for fused_ops in (ops, None):
        optimizer = FusedAdam(0.1, fused_ops=fused_ops)
        variables = [tf.Variable(w) for w in start]
        optimizer.add_l2_gradient(variables[:1], 4.0)
        optimizer.build(variables)
        # A zero data gradient: only the L2 term's moves a variable (Adam's first step moves
        # each element by the learning rate, against the gradient's sign).
        optimizer.apply([tf.zeros_like(v) for v in variables], variables)
        np.testing.assert_allclose(variables[0].numpy(), 0.9, rtol=1e-5)
        np.testing.assert_array_equal(variables[1].numpy(), 1.0)


def test_a_value_read_before_the_fused_update_keeps_its_value(ops):
    # The variable's buffer is still held by the read: the kernel must copy it, not write in it.
    variable = tf.Variable(np.ones((4, 3), np.float32))
    optimizer = FusedAdam(0.5, fused_ops=ops)
    optimizer.build([variable])
    held = variable.read_value()
    optimizer.apply([tf.ones_like(variable)], [variable])
    np.testing.assert_array_equal(held.numpy(), 1.0)
    np.testing.assert_allclose(variable.numpy(), 0.5, rtol=1e-5)


def test_the_fused_update_rejects_bad_inputs(ops):
    w, m, v = (tf.Variable(tf.zeros([3, 2])) for _ in range(3))
    scalars = [tf.constant(x) for x in (1e-3, 0.1, 0.001, 1e-7, 0.0)]
    with pytest.raises(tf.errors.InvalidArgumentError, match="shape"):
        ops.mlp_apply_adam(w.handle, m.handle, v.handle, tf.zeros([2, 3]), *scalars)
    with pytest.raises(tf.errors.InvalidArgumentError, match="three different variables"):
        ops.mlp_apply_adam(w.handle, w.handle, v.handle, tf.zeros([3, 2]), *scalars)
    with pytest.raises(tf.errors.InvalidArgumentError, match="scalar"):
        ops.mlp_apply_adam(w.handle, m.handle, v.handle, tf.zeros([3, 2]), *scalars[:4],
                           tf.zeros([2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="float32"):
        d = tf.Variable(tf.zeros([3, 2], tf.float64))
        ops.mlp_apply_adam(d.handle, m.handle, v.handle, tf.zeros([3, 2]), *scalars)
