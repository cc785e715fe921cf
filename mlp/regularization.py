"""The L2 penalty, computed explicitly rather than hidden in layers."""

import tensorflow as tf


def l2_penalty(kernels, l2):
    """l2 * sum over `kernels` of the squared entries, in float32 (0 when l2 is 0).

    Its gradient with respect to each kernel W is 2 * l2 * W.
    """
    if l2 == 0 or not kernels:
        return tf.constant(0.0, tf.float32)
    return l2 * tf.add_n([tf.reduce_sum(tf.square(tf.cast(k, tf.float32))) for k in kernels])
