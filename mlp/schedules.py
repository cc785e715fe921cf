"""Learning-rate schedules computed in the graph from the step, so they cost no retracing."""

import math

import tensorflow as tf


def cosine_with_warmup(base_lr, total_steps, warmup_steps=0, min_lr=0.0):
    """step -> learning rate: linear from 0 to `base_lr` over `warmup_steps`, then a half cosine
    down to `min_lr` at `total_steps`."""
    decay_steps = max(total_steps - warmup_steps, 1)

    def learning_rate(step):
        step = tf.cast(step, tf.float32)
        warm = base_lr * (step + 1.0) / max(warmup_steps, 1)
        progress = tf.clip_by_value((step - warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = min_lr + 0.5 * (base_lr - min_lr) * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < warmup_steps, warm, cosine)

    return learning_rate
