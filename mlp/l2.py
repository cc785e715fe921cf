"""The L2 term, l2 * sum of the kernels' squared entries, computed explicitly rather than hidden
in layers. `L2Term` is its one owner: its value (what the reports show) and its gradient, which
goes into the optimizer's update where the optimizer can take it and into the step's gradients
otherwise."""

import tensorflow as tf


def l2_penalty(kernels, l2):
    """l2 * sum over `kernels` of the squared entries, in float32 (0 when l2 is 0).

    Its gradient with respect to each kernel W is 2 * l2 * W.
    """
    if l2 == 0 or not kernels:
        return tf.constant(0.0, tf.float32)
    # tf.nn.l2_loss is sum(w^2) / 2 in one op, whose gradient is one op too.
    return (2.0 * l2) * tf.add_n([tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in kernels])


class L2Term:
    """The L2 term of a model's `kernels` with factor `l2`.

    The training step never differentiates it: its gradient 2 l2 W is added directly, by the
    optimizer's update when `attach` finds one that takes it (mlp.optim.FusedAdam folds it into
    its pass, and under loss scaling sees the unscaled gradients), else by `add_gradient` in the
    step. Its value is only reported (the training loss, Keras's val_loss)."""

    def __init__(self, kernels, l2):
        self.kernels = list(kernels)
        self.l2 = float(l2)
        self.in_optimizer = False

    def value(self):
        """The term for the kernels' current values, float32."""
        return l2_penalty(self.kernels, self.l2)

    def attach(self, optimizer):
        """Hand the gradient to `optimizer` (or the optimizer a LossScaleOptimizer wraps) if it
        has `add_l2_gradient`; returns whether it did."""
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        self.in_optimizer = bool(self.l2) and hasattr(inner, "add_l2_gradient")
        if self.in_optimizer:
            inner.add_l2_gradient(self.kernels, 2.0 * self.l2)
        return self.in_optimizer

    def add_gradient(self, gradients, variables, replicas=1, scale=None):
        """`gradients` of `variables` with this replica's share of the term's gradient,
        2 l2 W / replicas, added to the kernels' (scaled by `scale`, a loss scaler, if given);
        unchanged when the optimizer adds it or l2 is 0."""
        if not self.l2 or self.in_optimizer:
            return gradients
        factor = tf.constant(2.0 * self.l2 / replicas, tf.float32)
        if scale is not None:
            factor = scale(factor)
        kernels = {id(kernel) for kernel in self.kernels}
        return [g + factor * v if id(v) in kernels else g for g, v in zip(gradients, variables)]
