"""The layers of an MLP (and of the CNN teacher) as small `tf.Module`s that own their variables.

Variables are float32 always. Under mixed precision a layer computes in the dtype of its input
(float16 or bfloat16 for the matrix products) but batch-norm statistics are taken in float32,
where a half-precision variance would lose too much.
"""

import math

import tensorflow as tf

from mlp.config import INITIALIZERS


def initial_kernel(shape, initializer, seed):
    """A kernel drawn from `initializer`, reproducibly from the int pair `seed`.

    he_normal: truncated normal with std sqrt(2 / fan_in), the variance that keeps activations'
    scale through ReLU layers (He et al., 2015). glorot_uniform: uniform on +-sqrt(6 / (fan_in +
    fan_out)), for layers without ReLU (Glorot & Bengio, 2010). Both as Keras defines them.
    """
    fan_in, fan_out = shape
    if initializer == "he_normal":
        # Keras divides by the std of a normal truncated at 2 std so the kept std is the target.
        std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
        return tf.random.stateless_truncated_normal(shape, seed=seed, stddev=std)
    if initializer == "glorot_uniform":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return tf.random.stateless_uniform(shape, seed=seed, minval=-limit, maxval=limit)
    raise ValueError(f"unknown initializer {initializer!r}; choose one of "
                     f"{', '.join(INITIALIZERS)}")


def affine(x, kernel, bias):
    """x @ kernel + bias in x's dtype (float32 variables cast to it)."""
    # bias_add, not +: grappler's remapper fuses MatMul + BiasAdd (+ Relu) into one kernel.
    return tf.nn.bias_add(tf.matmul(x, tf.cast(kernel, x.dtype)), tf.cast(bias, x.dtype))


class Dense(tf.Module):
    """y = activation(x @ kernel + bias).

    Args:
      input_size, output_size: widths.
      activation: "relu" or None (the identity, for the logits layer).
      initializer: the kernel's initializer (see `initial_kernel`); the bias starts at zero.
      seed: an int pair that fixes the initial kernel.

    Called as the model calls every layer, `layer(x, training, seed)`: a plain dense layer draws
    nothing, so it reads neither. A variant that perturbs its weights in training (weight noise,
    DropConnect) changes only this class: it draws from a stream of its own,
    `tf.random.experimental.stateless_fold_in(seed, k)`, as the block's dropout draws from `seed`.
    """

    def __init__(self, input_size, output_size, activation=None, initializer="glorot_uniform",
                 seed=(0, 0), name=None):
        super().__init__(name=name)
        if activation not in (None, "relu"):
            raise ValueError(f"unknown activation {activation!r}")
        self.activation = activation
        self.kernel = tf.Variable(initial_kernel((input_size, output_size), initializer, seed),
                                  name="kernel")
        self.bias = tf.Variable(tf.zeros([output_size]), name="bias")

    def __call__(self, x, training=False, seed=None):
        y = affine(x, self.kernel, self.bias)
        return tf.nn.relu(y) if self.activation == "relu" else y


class Conv2D(tf.Module):
    """y = relu(conv(x, kernel) + bias): a `size` x `size` convolution with stride 1 and zero
    padding that keeps the image's size, over images [batch, height, width, channels]. The kernel
    is drawn as a dense kernel of fan-in size * size * in_channels (what He's initialization
    reads), then shaped [size, size, in_channels, out_channels]."""

    def __init__(self, in_channels, out_channels, size=3, initializer="he_normal", seed=(0, 0),
                 name=None):
        super().__init__(name=name)
        self.out_channels = out_channels
        kernel = initial_kernel((size * size * in_channels, out_channels), initializer, seed)
        self.kernel = tf.Variable(tf.reshape(kernel, [size, size, in_channels, out_channels]),
                                  name="kernel")
        self.bias = tf.Variable(tf.zeros([out_channels]), name="bias")

    def __call__(self, x):
        y = tf.nn.conv2d(x, tf.cast(self.kernel, x.dtype), strides=1, padding="SAME")
        return tf.nn.relu(tf.nn.bias_add(y, tf.cast(self.bias, x.dtype)))


class FixedLinear(tf.Module):
    """y = x @ kernel + bias with a kernel and bias that training never changes (not trainable,
    but saved in checkpoints): a fixed transform of the input such as ZCA whitening."""

    def __init__(self, kernel, bias, name=None):
        super().__init__(name=name)
        self.kernel = tf.Variable(kernel, trainable=False, dtype=tf.float32, name="kernel")
        self.bias = tf.Variable(bias, trainable=False, dtype=tf.float32, name="bias")

    def __call__(self, x):
        return affine(x, self.kernel, self.bias)


class BatchNorm(tf.Module):
    """Batch normalization over the batch axis, with a learned scale (gamma) and offset (beta).

    In training it normalizes with the batch's own mean and (biased) variance and moves the moving
    statistics toward them: moving = momentum * moving + (1 - momentum) * batch. In evaluation it
    normalizes with the moving statistics and changes nothing. Same defaults as Keras
    (momentum 0.99, epsilon 1e-3, moving mean 0 and variance 1 to start).

    Under a tf.distribute strategy "the batch" is each replica's part of it, and the moving
    statistics move toward the replicas' mean batch statistic; unless `synchronized`: then the
    statistics (and the gradient's sums) are all-reduced across replicas, so K replicas compute
    what one device computes on the whole global batch.
    """

    def __init__(self, size, momentum=0.99, epsilon=1e-3, synchronized=False, name=None):
        super().__init__(name=name)
        self.momentum = momentum
        self.epsilon = epsilon
        self.synchronized = synchronized
        self.gamma = tf.Variable(tf.ones([size]), name="gamma")
        self.beta = tf.Variable(tf.zeros([size]), name="beta")
        # Under several replicas an update is averaged over them (one all-reduce), so every
        # replica and worker keeps the same moving statistics; on one device it is a plain assign.
        self.moving_mean = tf.Variable(tf.zeros([size]), trainable=False, name="moving_mean",
                                       aggregation=tf.VariableAggregation.MEAN)
        self.moving_variance = tf.Variable(tf.ones([size]), trainable=False,
                                           name="moving_variance",
                                           aggregation=tf.VariableAggregation.MEAN)

    def __call__(self, x, training):
        x32 = tf.cast(x, tf.float32)
        if not training:
            y = (x32 - self.moving_mean) * (self.gamma * tf.math.rsqrt(self.moving_variance
                                                                      + self.epsilon)) + self.beta
            return tf.cast(y, x.dtype)
        normalize = _normalize_global_batch if self.synchronized else _normalize_batch
        y, mean, variance = normalize(x32, self.gamma, self.beta, self.epsilon)
        self.update_moving_statistics(mean, variance)
        return tf.cast(y, x.dtype)

    def update_moving_statistics(self, mean, variance):
        """Move the moving statistics toward a training batch's `mean` and `variance`."""
        self.moving_mean.assign(self.momentum * self.moving_mean + (1 - self.momentum) * mean)
        self.moving_variance.assign(
            self.momentum * self.moving_variance + (1 - self.momentum) * variance)


@tf.custom_gradient
def _normalize_batch(x, gamma, beta, epsilon):
    """Batch normalization with batch statistics, and its gradient written out.

    The closed-form gradient takes about half the element-wise passes over the batch that
    differentiating tf.nn.moments and tf.nn.batch_normalization op by op does.
    """
    mean = tf.reduce_mean(x, axis=0)
    centered = x - mean
    variance = tf.reduce_mean(tf.square(centered), axis=0)
    inv_std = tf.math.rsqrt(variance + epsilon)
    scale = gamma * inv_std
    y = centered * scale + beta

    def gradient(dy, _dmean, _dvariance):
        # Moving statistics are not differentiated: only dy flows back.
        count = tf.cast(tf.shape(x)[0], x.dtype)
        dbeta = tf.reduce_sum(dy, axis=0)
        dgamma = tf.reduce_sum(dy * centered, axis=0) * inv_std
        dx = _input_gradient(dy, centered, scale, inv_std, dbeta, dgamma, count)
        return dx, dgamma, dbeta, tf.zeros_like(epsilon)

    return (y, mean, variance), gradient


def _input_gradient(dy, centered, scale, inv_std, dbeta, dgamma, count):
    """Batch norm's dx = scale * (dy - (dbeta + normalized * dgamma) / count), from the sums dbeta
    and dgamma over the `count` rows of the batch. Regrouped so that every per-feature factor is
    computed on [features] vectors: the batch-sized tensors see two multiplies and two adds."""
    return dy * scale + (centered * (-scale * inv_std * dgamma / count) - scale * dbeta / count)


def _all_replicas_sum(value):
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


@tf.custom_gradient
def _normalize_global_batch(x, gamma, beta, epsilon):
    """`_normalize_batch` over the global batch: each replica holds rows of it, and every sum over
    rows is all-reduced across replicas. The returned dgamma and dbeta are this replica's parts:
    the optimizer sums gradients across replicas."""
    count = _all_replicas_sum(tf.cast(tf.shape(x)[0], x.dtype))
    mean = _all_replicas_sum(tf.reduce_sum(x, axis=0)) / count
    centered = x - mean
    variance = _all_replicas_sum(tf.reduce_sum(tf.square(centered), axis=0)) / count
    inv_std = tf.math.rsqrt(variance + epsilon)
    scale = gamma * inv_std
    y = centered * scale + beta

    def gradient(dy, _dmean, _dvariance):
        dbeta = tf.reduce_sum(dy, axis=0)
        dgamma = tf.reduce_sum(dy * centered, axis=0) * inv_std
        global_dbeta, global_dgamma = tf.unstack(_all_replicas_sum(tf.stack([dbeta, dgamma])))
        dx = _input_gradient(dy, centered, scale, inv_std, global_dbeta, global_dgamma, count)
        return dx, dgamma, dbeta, tf.zeros_like(epsilon)

    return (y, mean, variance), gradient


class Dropout(tf.Module):
    """Zeroes each unit with probability `rate` in training and scales the rest by 1 / (1 - rate),
    so the expected value is unchanged; the identity in evaluation.

    The mask is drawn with stateless random ops from `seed` (an int pair the caller derives from
    the run's seed and the step), so a step's mask is the same however the run got there.
    """

    def __init__(self, rate, name=None):
        super().__init__(name=name)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate

    def __call__(self, x, training, seed=None):
        if not training or self.rate == 0.0:
            return x
        keep = tf.random.stateless_uniform(tf.shape(x), seed=seed) >= self.rate
        # One multiply forward and one backward, rather than a select and its gradient.
        return x * (tf.cast(keep, x.dtype) * tf.cast(1.0 / (1.0 - self.rate), x.dtype))
