"""The optimizer: Keras's Adam, with its per-variable update done by one fused kernel.

Keras's `Adam.update_step` spells the update out as about twenty element-wise ops per variable,
each a pass over memory: on a 2-core CPU a large part of an epoch (docs/speed.md). `FusedAdam` keeps
everything of Keras's Adam (its slots, learning-rate variable, iteration counter, checkpoint
layout, and the same formula:
    m += (g - m)(1 - beta_1);  v += (g^2 - v)(1 - beta_2)
    w -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon))
and only hands the arithmetic to one kernel per variable: with the fused kernels (mlp/fused.py),
MlpApplyAdam, one pass over the variable and its slots; else TensorFlow's ResourceApplyAdam, which
takes three. Both round alike, bit for bit. tests/test_optim.py checks it against
keras.optimizers.Adam step for step.

The L2 term's gradient can be left to it too (`add_l2_gradient`): g + factor * w is then formed
inside MlpApplyAdam's pass, instead of in a pass of its own before the update.
"""

import keras
import tensorflow as tf


class FusedAdam(keras.optimizers.Adam):
    """keras.optimizers.Adam with one kernel per variable update; `fused_ops`: the fused
    kernels' ops module (mlp.fused.load()), or None for TensorFlow's ResourceApplyAdam."""

    def __init__(self, learning_rate=0.001, fused_ops=None, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.fused_ops = fused_ops
        self._l2_factors = {}  # variable key -> factor of its L2 term's gradient

    def add_l2_gradient(self, variables, factor):
        """From now on, the update of each of `variables` adds `factor` times the variable to the
        gradient it is given: the gradient of an L2 term factor / 2 * sum(w^2). The factor is the
        whole term's, applied once to the gradient summed over the replicas."""
        for variable in variables:
            self._l2_factors[self._var_key(variable)] = float(factor)

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        # Keras calls this once per step, after summing the replicas' gradients; the step's
        # scalars (bias-corrected powers, learning rate) are made here once, not once per
        # variable as Keras's update_step does: each is an op to dispatch.
        step = tf.cast(self.iterations + 1, tf.float32)
        beta1_power = tf.pow(tf.constant(self.beta_1, tf.float32), step)
        beta2_power = tf.pow(tf.constant(self.beta_2, tf.float32), step)
        lr = tf.cast(learning_rate, tf.float32)
        if self.fused_ops is not None:
            # ResourceApplyAdam's alpha, computed as its kernel does.
            scalars = (lr * tf.sqrt(1.0 - beta2_power) / (1.0 - beta1_power),
                       1.0 - tf.constant(self.beta_1, tf.float32),
                       1.0 - tf.constant(self.beta_2, tf.float32),
                       tf.constant(self.epsilon, tf.float32))
        else:
            scalars = {"beta1_power": beta1_power, "beta2_power": beta2_power,
                       "beta1": tf.constant(self.beta_1, tf.float32),
                       "beta2": tf.constant(self.beta_2, tf.float32),
                       "epsilon": tf.constant(self.epsilon, tf.float32), "lr": lr}

        def update(variable, gradient):
            factor = self._l2_factors.get(self._var_key(variable), 0.0)
            if self.amsgrad or variable.dtype != tf.float32:
                if factor:
                    gradient = gradient + tf.cast(factor, variable.dtype) * variable
                return self.update_step(gradient, variable, learning_rate)
            index = self._get_variable_index(variable)
            slots = self._momentums[index].value.handle, self._velocities[index].value.handle
            gradient = tf.cast(gradient, tf.float32)
            if self.fused_ops is not None:
                return self.fused_ops.mlp_apply_adam(variable.handle, *slots, gradient, *scalars,
                                                     tf.constant(factor, tf.float32))
            if factor:
                gradient = gradient + tf.constant(factor, tf.float32) * variable
            return tf.raw_ops.ResourceApplyAdam(var=variable.handle, m=slots[0], v=slots[1],
                                                grad=gradient, **scalars)

        for gradient, variable in grads_and_vars:
            distribution.extended.update(variable, update, args=(gradient,), group=False)


def make_optimizer(precision, learning_rate, fused_ops=None):
    """Adam (with the fused kernels' update if `fused_ops`), wrapped in Keras's
    LossScaleOptimizer for dynamic loss scaling under mixed_float16."""
    optimizer = FusedAdam(learning_rate, fused_ops=fused_ops)
    if precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
