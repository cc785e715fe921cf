import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp import MLP, BatchNorm, Dense, Dropout
from mlp.layers import initial_kernel

widths = st.integers(1, 64)
batches = st.integers(1, 33)


@settings(max_examples=25, deadline=None)
@given(batch=batches, fan_in=widths, fan_out=widths, relu=st.booleans())
def test_dense_shape_for_any_batch_and_width(batch, fan_in, fan_out, relu):
    layer = Dense(fan_in, fan_out, "relu" if relu else None)
    y = layer(tf.random.normal([batch, fan_in]))
    assert y.shape == (batch, fan_out)
    if relu:
        assert float(tf.reduce_min(y)) >= 0.0


@settings(max_examples=15, deadline=None)
@given(batch=batches, width=widths, seed=st.tuples(st.integers(0, 2**30), st.integers(0, 2**30)))
def test_a_plain_dense_layer_draws_nothing_from_training_or_seed(batch, width, seed):
    layer = Dense(5, width, "relu", "he_normal", seed=(1, 2))
    x = tf.random.stateless_normal([batch, 5], seed=(3, 4))
    np.testing.assert_array_equal(layer(x, True, seed), layer(x, False, None))


class _Recording(tf.Module):
    """A dense layer that records how the model calls it."""

    def __init__(self, layer, calls):
        super().__init__()
        self.layer, self.calls = layer, calls

    def __call__(self, x, training, seed):
        self.calls.append((self.layer.name, training, tuple(seed.numpy())))
        return self.layer(x, training, seed)


def test_each_dense_layer_is_given_training_and_a_seed_of_its_own_for_each_step():
    model = MLP(hidden_sizes=(6, 6), dropout=0.0, input_size=4, seed=9)
    calls = []
    model.hidden = [_Recording(layer, calls) for layer in model.hidden]
    model.logits_layer = _Recording(model.logits_layer, calls)
    images = tf.zeros([2, 4])
    for step in (7, 8, 7):
        model(images, training=step == 8, step=step)
    names = [name for name, _, _ in calls]
    assert names == ["dense_0", "dense_1", "logits"] * 3
    assert [training for _, training, _ in calls] == [False] * 3 + [True] * 3 + [False] * 3
    seeds = [seed for _, _, seed in calls]
    assert len(set(seeds[:6])) == 6  # one per layer and step
    assert seeds[6:] == seeds[:3]  # a function of (run seed, step, layer)


@settings(max_examples=15, deadline=None)
@given(batch=batches, hidden=st.lists(widths, min_size=1, max_size=4), training=st.booleans(),
       batch_norm=st.booleans())
def test_mlp_logits_shape_for_any_batch_and_widths(batch, hidden, training, batch_norm):
    model = MLP(hidden_sizes=hidden, batch_norm=batch_norm, dropout=0.3, input_size=20)
    logits = model(tf.random.normal([batch, 20]), training=training, step=3)
    assert logits.shape == (batch, 10) and logits.dtype == tf.float32
    assert len(model.kernels) == len(hidden) + 1


def test_dense_matches_keras_dense():
    ours = Dense(7, 5, "relu", "he_normal", seed=(1, 2))
    reference = keras.layers.Dense(5, activation="relu")
    reference.build((None, 7))
    reference.set_weights([ours.kernel.numpy(), np.linspace(-1, 1, 5).astype(np.float32)])
    ours.bias.assign(np.linspace(-1, 1, 5).astype(np.float32))
    x = np.random.default_rng(0).normal(size=(9, 7)).astype(np.float32)
    np.testing.assert_allclose(ours(tf.constant(x)), reference(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("initializer,fan_in,fan_out", [("he_normal", 400, 300),
                                                        ("glorot_uniform", 400, 300)])
def test_initializers_have_keras_distribution(initializer, fan_in, fan_out):
    ours = initial_kernel((fan_in, fan_out), initializer, seed=(0, 0)).numpy()
    reference = keras.initializers.get(initializer)((fan_in, fan_out)).numpy()
    assert ours.std() == pytest.approx(reference.std(), rel=0.03)
    assert abs(ours.mean()) < 0.1 * ours.std()
    # The shape of the distribution, not only its scale: the quantiles agree within 5% of a std.
    assert _quantile_gap(ours, reference) < 0.05
    # ...which a draw of another shape with the same std fails (the check can fail).
    other = np.random.default_rng(0).standard_normal(ours.size)
    if initializer == "he_normal":
        other = np.random.default_rng(0).uniform(-1, 1, ours.size)
    other *= ours.std() / other.std()
    assert _quantile_gap(other, reference) > 0.1


def _quantile_gap(sample, reference):
    """The largest gap between the samples' quantiles, in units of the reference's std."""
    q = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]
    return np.max(np.abs(np.quantile(sample, q) - np.quantile(reference, q))) / reference.std()


def _batch_norms(width, rng):
    """Our BatchNorm with random parameters and statistics, and a Keras one holding the same."""
    ours = BatchNorm(width)
    ours.gamma.assign(rng.uniform(0.5, 2, width).astype(np.float32))
    ours.beta.assign(rng.normal(size=width).astype(np.float32))
    ours.moving_mean.assign(rng.normal(size=width).astype(np.float32))
    ours.moving_variance.assign(rng.uniform(0.5, 2, width).astype(np.float32))
    reference = keras.layers.BatchNormalization(momentum=ours.momentum, epsilon=ours.epsilon)
    reference.build((None, width))
    reference.set_weights([v.numpy() for v in (ours.gamma, ours.beta, ours.moving_mean,
                                               ours.moving_variance)])
    return ours, reference


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(2, 40), width=st.integers(1, 16), seed=st.integers(0, 1000))
def test_batch_norm_training_and_evaluation_match_keras(batch, width, seed):
    rng = np.random.default_rng(seed)
    ours, reference = _batch_norms(width, rng)
    x = (rng.normal(size=(batch, width)) * 3 + 1).astype(np.float32)

    # Evaluation: moving statistics, and nothing changes.
    before = ours.moving_mean.numpy().copy()
    np.testing.assert_allclose(ours(tf.constant(x), training=False),
                               reference(x, training=False), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ours.moving_mean.numpy(), before)

    # Training: batch statistics, and the moving averages move toward them.
    np.testing.assert_allclose(ours(tf.constant(x), training=True),
                               reference(x, training=True), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.moving_mean, reference.moving_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.moving_variance, reference.moving_variance, rtol=1e-5,
                               atol=1e-6)
    expected_mean = 0.99 * before + 0.01 * x.mean(axis=0)
    np.testing.assert_allclose(ours.moving_mean, expected_mean, rtol=1e-5, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(2, 40), width=st.integers(1, 16), seed=st.integers(0, 1000))
def test_batch_norm_gradients_match_keras(batch, width, seed):
    rng = np.random.default_rng(seed)
    ours, reference = _batch_norms(width, rng)
    x = tf.constant((rng.normal(size=(batch, width)) * 3 + 1).astype(np.float32))
    upstream = tf.constant(rng.normal(size=(batch, width)).astype(np.float32))

    def gradients(layer, weights):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * upstream)
        return tape.gradient(loss, [x, *weights])

    ours_grads = gradients(ours, [ours.gamma, ours.beta])
    keras_grads = gradients(reference, [reference.gamma.value, reference.beta.value])
    for a, b in zip(ours_grads, keras_grads):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_batch_norm_training_output_is_normalized_per_feature():
    ours = BatchNorm(4)
    x = tf.random.normal([256, 4]) * 5 + 3
    y = ours(x, training=True).numpy()
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=0), 1, atol=1e-3)


@settings(max_examples=20, deadline=None)
@given(rate=st.floats(0.0, 0.9), batch=batches, width=widths)
def test_dropout_is_identity_in_evaluation(rate, batch, width):
    x = tf.random.normal([batch, width])
    np.testing.assert_array_equal(Dropout(rate)(x, training=False), x)


@settings(max_examples=10, deadline=None)
@given(rate=st.floats(0.05, 0.8), seed=st.integers(0, 2**30))
def test_dropout_keeps_the_expected_value_in_training(rate, seed):
    x = tf.ones([400, 500])
    y = Dropout(rate)(x, training=True, seed=tf.constant([seed, 1], tf.int64)).numpy()
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1.0 / (1.0 - rate), rtol=1e-5)
    assert kept.mean() == pytest.approx(1 - rate, abs=0.01)
    assert y.mean() == pytest.approx(1.0, abs=0.03)


def test_dropout_mask_is_a_function_of_the_seed():
    x = tf.ones([50, 50])
    layer = Dropout(0.5)
    a = layer(x, True, tf.constant([1, 2], tf.int64))
    b = layer(x, True, tf.constant([1, 2], tf.int64))
    c = layer(x, True, tf.constant([1, 3], tf.int64))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_rejects_rate_outside_unit_interval():
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout rate"):
            Dropout(rate)


# Largest error of the logits against float32, relative to |logit| + 1: about twice the worst seen
# over 20 seeds (bfloat16 0.020, float16 0.0022); float32 against itself is exact.
MIXED_TOLERANCE = {tf.bfloat16: 0.04, tf.float16: 0.005, tf.float32: 0.0}


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16, tf.float32])
@pytest.mark.parametrize("seed", [0, 7])
def test_mixed_precision_keeps_float32_variables_and_logits(dtype, seed):
    model = MLP(hidden_sizes=(16, 8), compute_dtype=dtype, input_size=12, seed=seed)
    # Like with like: the same weights and statistics (same seed, nothing trained yet), the same
    # inputs, the same (inference) mode.
    reference = MLP(hidden_sizes=(16, 8), input_size=12, seed=seed)
    x = tf.random.stateless_normal([64, 12], seed=(seed, 1))
    tolerance = MIXED_TOLERANCE[dtype]
    np.testing.assert_allclose(model(x, False), reference(x, False), rtol=tolerance,
                               atol=tolerance)
    logits = model(x, training=True, step=0)
    assert logits.dtype == tf.float32
    assert all(v.dtype == tf.float32 for v in model.variables)
