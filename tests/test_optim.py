import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp.optim import FusedAdam, make_optimizer


@settings(max_examples=10, deadline=None)
@given(learning_rate=st.sampled_from([1e-3, 1e-2, 0.1]), steps=st.integers(1, 30),
       seed=st.integers(0, 1000))
def test_fused_adam_follows_keras_adam_step_for_step(learning_rate, steps, seed):
    rng = np.random.default_rng(seed)
    start = [rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    ours, theirs = [tf.Variable(w) for w in start], [tf.Variable(w) for w in start]
    fused, reference = FusedAdam(learning_rate), keras.optimizers.Adam(learning_rate)
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
