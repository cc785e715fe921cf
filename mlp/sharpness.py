"""How sharp the minimum a run ended in is, two ways, on a fixed set of training examples in
evaluation mode (moving batch-norm statistics, no dropout), for the data loss (mean
cross-entropy, without the L2 term, so recipes with and without L2 are measured alike):

- the Hessian's top (largest algebraic) eigenvalue, by power iteration on Hessian-vector
  products (two nested gradient tapes in one graph call), as in Yao et al. 2020 (PyHessian),
  shifted where the eigenvalue of largest magnitude is negative; whether it converged is
  recorded beside it;
- the epsilon-sharpness of Keskar et al. 2017: the largest loss increase, in percent of
  1 + loss, over perturbations d with |d_i| <= epsilon (|w_i| + 1) for every weight, found by a
  few projected sign-gradient ascent steps.

Jiang et al. 2020 found measures of this kind the best predictors of the generalization gap.
"""

import numpy as np
import tensorflow as tf

EXAMPLES = 2048  # training examples the loss is measured on: the first ones of the run's set
EPSILON = 1e-3  # Keskar et al.'s smaller box
ASCENT_STEPS = 5
POWER_ITERATIONS = 100  # the runs measured so far converged within 64


def _dot(a, b):
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(a, b)])


def hessian_top_eigenvalue(loss_fn, variables, iterations=POWER_ITERATIONS, seed=0,
                           tolerance=1e-4):
    """The largest (algebraic) eigenvalue of the Hessian of `loss_fn()` (a scalar of
    `variables`). Power iteration from a seeded random vector finds the eigenvalue of largest
    magnitude, stopping when it changes by less than `tolerance` relatively; where that one is
    negative (a saddle, or a run stopped away from a minimum), a second power iteration on the
    shifted H - mu I, whose eigenvalues are all >= 0, finds lambda_max - mu. Returns
    (eigenvalue, iterations used, whether every power iteration converged within
    `iterations`)."""

    @tf.function(autograph=False)  # no tensor-dependent control flow to rewrite
    def hessian_vector_product(vector):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = loss_fn()
            gradients = inner.gradient(loss, variables)
            projection = _dot(gradients, vector)
        return outer.gradient(projection, variables)

    def power_iteration(shift):
        """(the dominant eigenvalue of H - shift I, iterations, converged)."""
        rng = np.random.default_rng(seed)
        vector = [tf.constant(rng.standard_normal(v.shape), tf.float32) for v in variables]
        eigenvalue = None
        for iteration in range(1, iterations + 1):
            norm = tf.sqrt(_dot(vector, vector))
            vector = [v / norm for v in vector]
            product = [p - shift * v for p, v in zip(hessian_vector_product(vector), vector)]
            estimate = float(_dot(vector, product))
            vector = product
            if eigenvalue is not None and abs(estimate - eigenvalue) <= tolerance * abs(estimate):
                return estimate, iteration, True
            eigenvalue = estimate
        return eigenvalue, iterations, False

    dominant, used, converged = power_iteration(0.0)
    if dominant >= 0:
        return dominant, used, converged
    shifted, more, shifted_converged = power_iteration(dominant)
    return shifted + dominant, used + more, converged and shifted_converged


def epsilon_sharpness(loss_fn, variables, epsilon=EPSILON, steps=ASCENT_STEPS):
    """100 (max L(w + d) - L(w)) / (1 + L(w)) over |d_i| <= epsilon (|w_i| + 1), by `steps`
    projected sign-gradient ascent steps of half the box; the variables are left as they were."""
    original = [tf.identity(v) for v in variables]
    bounds = [epsilon * (tf.abs(w) + 1.0) for w in original]

    @tf.function(autograph=False)
    def loss_and_gradients():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        return loss, tape.gradient(loss, variables)

    base, gradients = loss_and_gradients()
    highest = base
    delta = [tf.zeros_like(w) for w in original]
    try:
        for _ in range(steps):
            delta = [tf.clip_by_value(d + 0.5 * b * tf.sign(g), -b, b)
                     for d, b, g in zip(delta, bounds, gradients)]
            for v, w, d in zip(variables, original, delta):
                v.assign(w + d)
            loss, gradients = loss_and_gradients()
            highest = tf.maximum(highest, loss)
    finally:
        for v, w in zip(variables, original):
            v.assign(w)
    return float(100.0 * (highest - base) / (1.0 + base))


def sharpness(model, config, images, labels):
    """{"hessian_top_eigenvalue" (with "power_iterations" and "power_iteration_converged"),
    "epsilon_sharpness", "epsilon", "examples", "loss"} of
    `model`'s weights on the first EXAMPLES of `images`, `labels`, measured on a float32 copy of
    the model (the run's own may compute in half precision or hold distributed variables)."""
    from mlp.model import from_config

    copy = from_config(config, tf.float32)
    if [v.shape for v in copy.variables] != [v.shape for v in model.variables]:
        raise ValueError("sharpness: the model does not have the variables its config describes")
    for target, source in zip(copy.variables, model.variables):
        target.assign(tf.convert_to_tensor(source))
    images = tf.constant(images[:EXAMPLES])
    labels = tf.constant(labels[:EXAMPLES])

    def loss_fn():
        logits = copy(images, training=False)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

    variables = copy.trainable_variables
    eigenvalue, iterations, converged = hessian_top_eigenvalue(loss_fn, variables)
    return {"hessian_top_eigenvalue": eigenvalue, "power_iterations": iterations,
            "power_iteration_converged": converged,
            "epsilon_sharpness": epsilon_sharpness(loss_fn, variables), "epsilon": EPSILON,
            "examples": int(images.shape[0]), "loss": float(loss_fn())}
