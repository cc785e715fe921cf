"""ZCA whitening of the input: a fixed linear map, computed once from the training images, that
makes the pixels uncorrelated with unit variance (Bell & Sejnowski, 1997), as the model's first,
untrained dense layer.

With the training images' mean m and covariance C = U diag(s) U^T,

    whiten(x) = (x - m) @ W,   W = U diag(1 / sqrt(s + epsilon)) U^T.

W is symmetric ("zero-phase": of all whitening maps it moves the images least, so a whitened
image still looks like the image). `epsilon` damps the directions of variance below it: the
pixels' least-varying combinations are mostly noise, and scaling them up to unit variance would
let noise dominate. With epsilon = 0 the whitened training images have the identity covariance;
otherwise U diag(s / (s + epsilon)) U^T.
"""

import numpy as np
from threadpoolctl import threadpool_limits


def zca(images, epsilon):
    """(kernel, bias), float32, such that images @ kernel + bias is the ZCA whitening of
    `images` ([N, D]) with damping `epsilon` > 0; bias = -mean @ kernel."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    # On one BLAS thread: the bits are then the same whatever the machine's core count, and
    # beside other busy threads (TensorFlow's, another process's) the multithreaded
    # eigendecomposition took 7 s where one thread takes 0.1 s (docs/speed.md).
    with threadpool_limits(limits=1, user_api="blas"):
        images = np.asarray(images, np.float32)
        mean = images.mean(axis=0, dtype=np.float64)
        centered = images - mean.astype(np.float32)
        # The product in float32 (it is the costly part), the eigendecomposition in float64.
        covariance = (centered.T @ centered).astype(np.float64) / len(images)
        variances, directions = np.linalg.eigh(covariance)
        variances = np.maximum(variances, 0.0)  # round-off can make the smallest negative
        kernel = (directions / np.sqrt(variances + epsilon)) @ directions.T
    bias = -mean @ kernel
    return kernel.astype(np.float32), bias.astype(np.float32)
