"""ZCA whitening (mlp/whitening.py) and the model's fixed input transform."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp import MLP
from mlp.config import Config, ConfigError
from mlp.whitening import zca


def correlated_data(n, d, seed):
    """[n, d] samples with a random covariance of eigenvalues in [0.25, 9] and a nonzero mean."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mixing = rotation * rng.uniform(0.5, 3.0, size=d)  # singular values in [0.5, 3]
    return (rng.normal(size=(n, d)) @ mixing + rng.normal(size=d)).astype(np.float32)


@settings(max_examples=30, deadline=None)
@given(d=st.integers(2, 12), seed=st.integers(0, 10**6),
       epsilon=st.floats(1e-3, 10.0))
def test_whitening_is_invertible_and_shrinks_the_covariance_to_c_over_c_plus_epsilon(d, seed,
                                                                                    epsilon):
    x = correlated_data(40 * d, d, seed)
    kernel, bias = zca(x, epsilon)
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-5 * np.abs(kernel).max())  # zero-phase
    white = x.astype(np.float64) @ kernel + bias
    np.testing.assert_allclose(white.mean(axis=0), 0, atol=1e-4 * max(1, np.abs(white).max()))
    # Independently of the eigendecomposition: W = (C + eps I)^(-1/2), so W C W = C (C + eps I)^-1.
    covariance = np.cov(x.astype(np.float64).T, bias=True)
    expected = covariance @ np.linalg.inv(covariance + epsilon * np.eye(d))
    np.testing.assert_allclose(np.cov(white.T, bias=True), expected, atol=2e-3)
    # Invertible: the images come back from their whitened form.
    recovered = (white - bias) @ np.linalg.inv(kernel.astype(np.float64))
    np.testing.assert_allclose(recovered, x, atol=2e-3 * max(1, np.abs(x).max()))


@settings(max_examples=15, deadline=None)
@given(d=st.integers(2, 10), seed=st.integers(0, 10**6))
def test_with_little_damping_the_pixels_come_out_uncorrelated_with_unit_variance(d, seed):
    x = correlated_data(60 * d, d, seed)
    kernel, bias = zca(x, 1e-6)
    white = x.astype(np.float64) @ kernel + bias
    np.testing.assert_allclose(np.cov(white.T, bias=True), np.eye(d), atol=1e-3)


def test_zca_refuses_a_nonpositive_epsilon():
    with pytest.raises(ValueError, match="epsilon"):
        zca(correlated_data(50, 3, 0), 0.0)


def test_the_model_applies_the_transform_first_and_never_trains_it():
    x = correlated_data(32, 6, 1)
    kernel, bias = zca(x, 0.1)
    whitened_model = MLP(hidden_sizes=(5,), input_size=6, seed=3, input_transform=(kernel, bias))
    plain_model = MLP(hidden_sizes=(5,), input_size=6, seed=3)
    np.testing.assert_allclose(whitened_model(x, training=False).numpy(),
                               plain_model(x @ kernel + bias, training=False).numpy(), atol=1e-5)
    transform = whitened_model.input_transform
    trainable = {id(v) for v in whitened_model.trainable_variables}
    assert id(transform.kernel) not in trainable and id(transform.bias) not in trainable
    assert any(v is transform.kernel for v in whitened_model.variables)  # checkpoints hold it
    assert all(k is not transform.kernel for k in whitened_model.kernels)  # no L2 on it
    # A model without whitening has no transform and the same variables as before.
    assert plain_model.input_transform is None
    assert len(plain_model.variables) == len(whitened_model.variables) - 2


def test_from_config_gives_an_identity_placeholder_and_a_config_checks_epsilon():
    config = Config(whitening="zca")
    model = MLP.from_config(config)
    np.testing.assert_array_equal(model.input_transform.kernel.numpy(), np.eye(784))
    assert MLP.from_config(Config()).input_transform is None
    with pytest.raises(ConfigError, match="--whitening-epsilon"):
        Config(whitening="zca", whitening_epsilon=0.0).validate()
    with pytest.raises(ConfigError, match="--whitening"):
        Config(whitening="pca").validate()


def test_build_fits_the_whitening_to_the_training_images_and_counts_its_time(small_data):
    from mlp.build import build

    config = Config(whitening="zca", whitening_epsilon=0.3, data_dir=str(small_data),
                    verify_checksums=False, validation_size=100, train_subset=300,
                    hidden_sizes=(8,))
    parts = build(config, precision="float32")
    kernel, bias = zca(parts.train_images, 0.3)
    np.testing.assert_allclose(parts.model.input_transform.kernel.numpy(), kernel, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(parts.model.input_transform.bias.numpy(), bias, rtol=1e-5,
                               atol=1e-4)
    assert len(parts.train_images) == 300  # fitted on the training images only
    assert parts.whitening_seconds > 0


def test_the_fit_gives_the_same_bits_whatever_the_blas_thread_count():
    # Many BLAS threads would make the kernel's last bits depend on the machine's core count.
    from threadpoolctl import threadpool_limits

    images = np.random.default_rng(0).integers(0, 256, (2000, 784)).astype(np.float32) / 255
    fits = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            fits.append(zca(images, 0.3))
    for one_thread, two_threads in zip(*fits):
        np.testing.assert_array_equal(one_thread, two_threads)
