"""The L2 penalty, computed explicitly rather than hidden in layers."""

import tensorflow as tf


def l2_penalty(kernels, l2):
    """l2 * sum over `kernels` of the squared entries, in float32 (0 when l2 is 0).

    Its gradient with respect to each kernel W is 2 * l2 * W.
    """
    if l2 == 0 or not kernels:
        return tf.constant(0.0, tf.float32)
    # tf.nn.l2_loss is sum(w^2) / 2 in one op, whose gradient is one op too.
    return (2.0 * l2) * tf.add_n([tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in kernels])
