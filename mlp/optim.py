"""The optimizer: Keras's Adam, with its per-variable update done by one fused kernel.

Keras's `Adam.update_step` spells the update out as about twenty element-wise ops per variable,
each a pass over memory; on a 2-core CPU that was 0.38 s of a 1.3 s epoch. `FusedAdam` keeps
everything of Keras's Adam (its slots, learning-rate variable, iteration counter, checkpoint
layout, and the same formula:
    m += (g - m)(1 - beta_1);  v += (g^2 - v)(1 - beta_2)
    w -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon))
and only hands the arithmetic to TensorFlow's ResourceApplyAdam kernel, one pass per variable.
tests/test_optim.py checks it against keras.optimizers.Adam step for step.
"""

import keras
import tensorflow as tf


class FusedAdam(keras.optimizers.Adam):
    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        # Keras calls this once per step, after summing the replicas' gradients; the step's
        # scalars (bias-corrected powers, learning rate) are made here once, not once per
        # variable as Keras's update_step does: each is an op to dispatch.
        step = tf.cast(self.iterations + 1, tf.float32)
        scalars = {"beta1_power": tf.pow(tf.constant(self.beta_1, tf.float32), step),
                   "beta2_power": tf.pow(tf.constant(self.beta_2, tf.float32), step),
                   "beta1": tf.constant(self.beta_1, tf.float32),
                   "beta2": tf.constant(self.beta_2, tf.float32),
                   "epsilon": tf.constant(self.epsilon, tf.float32),
                   "lr": tf.cast(learning_rate, tf.float32)}

        def update(variable, gradient):
            if self.amsgrad or variable.dtype != tf.float32:
                return self.update_step(gradient, variable, learning_rate)
            index = self._get_variable_index(variable)
            return tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=self._momentums[index].value.handle,
                v=self._velocities[index].value.handle, grad=tf.cast(gradient, tf.float32),
                **scalars)

        for gradient, variable in grads_and_vars:
            distribution.extended.update(variable, update, args=(gradient,), group=False)


def make_optimizer(precision, learning_rate):
    """Adam, wrapped in Keras's LossScaleOptimizer for dynamic loss scaling under mixed_float16."""
    optimizer = FusedAdam(learning_rate)
    if precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
