"""The graph side of training: the train step on a GradientTape, many steps per tf.function call,
and in-graph evaluation. Python decides between calls (see mlp/run.py).
"""

import contextlib
import hashlib

import numpy as np
import tensorflow as tf

from mlp.augment import mirror
from mlp.regularization import l2_penalty

NUM_CLASSES = 10
# Columns of the per-epoch training sums: summed over examples, so their means are exact however
# the epoch was split into calls.
TRAIN_SUMS = ("loss", "data_loss", "l2_penalty", "correct", "examples")


class Trainer(tf.Module):
    """Owns everything a training step changes: model, optimizer, the step counter and this
    epoch's running sums. Checkpointing this module (with the loop's small Python state) is
    enough to continue a run exactly.

    Args:
      model: an MLP (or any module called as model(images, training, step) -> float32 logits).
      optimizer: a Keras optimizer; wrap it in keras.optimizers.LossScaleOptimizer for float16.
      l2: factor of the L2 penalty on the model's kernels.
      label_smoothing: mixes the one-hot targets with the uniform distribution by this much.
      schedule: optional function step -> learning rate, applied in the graph before each step.
      ema_decay: if > 0, keep an exponential moving average of all model variables, updated
        after each step with decay min(ema_decay, (1 + step) / (10 + step)) (see
        `averaged_weights`).
      test_time_flip: `evaluate` averages the predicted probabilities of each image and its
        mirror image.
    """

    def __init__(self, model, optimizer, l2=0.0, label_smoothing=0.0, schedule=None,
                 ema_decay=0.0, test_time_flip=False):
        super().__init__(name="trainer")
        self.model = model
        self.optimizer = optimizer
        self.l2 = float(l2)
        self.label_smoothing = float(label_smoothing)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch_sums = tf.Variable(tf.zeros([len(TRAIN_SUMS)], tf.float64), trainable=False,
                                      name="epoch_sums")
        # The step whose loss was not finite, or -1.
        self.nonfinite_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="nonfinite_step")
        self.schedule = schedule
        self.test_time_flip = bool(test_time_flip)
        self.ema_decay = float(ema_decay)
        self.ema_variables = ([tf.Variable(v, trainable=False, name="ema") for v in model.variables]
                              if ema_decay else [])
        self.optimizer.build(self.model.trainable_variables)
        self.loss_scaling = hasattr(optimizer, "scale_loss") and hasattr(optimizer, "inner_optimizer")

    @property
    def learning_rate(self):
        return float(self.optimizer.learning_rate.numpy())

    @learning_rate.setter
    def learning_rate(self, value):
        # Assigns the optimizer's variable: nothing retraces.
        self.optimizer.learning_rate.assign(value)

    def data_loss(self, logits, labels):
        """Per-example softmax cross-entropy from float32 logits."""
        if self.label_smoothing == 0.0:
            return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        targets = tf.one_hot(labels, NUM_CLASSES)
        targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / NUM_CLASSES
        return tf.nn.softmax_cross_entropy_with_logits(targets, logits)

    def _train_step(self, images, labels):
        variables = self.model.trainable_variables
        if self.schedule is not None:
            self.optimizer.learning_rate.assign(self.schedule(self.step))
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True, step=self.step)
            data_loss = tf.reduce_mean(self.data_loss(logits, labels))
            penalty = l2_penalty(self.model.kernels, self.l2)
            loss = data_loss + penalty
            target = self.optimizer.scale_loss(loss) if self.loss_scaling else loss
        gradients = tape.gradient(target, variables)
        self.optimizer.apply(gradients, variables)
        if self.ema_variables:
            # Early on the average forgets faster, so it is not dominated by the initial weights.
            step = tf.cast(self.step, tf.float32)
            decay = tf.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))
            for average, variable in zip(self.ema_variables, self.model.variables):
                average.assign(decay * average + (1.0 - decay) * variable)
        self.step.assign_add(1)
        batch = tf.cast(tf.shape(labels)[0], tf.float64)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32),
                                                 labels), tf.float64))
        sums = tf.stack([tf.cast(loss, tf.float64) * batch, tf.cast(data_loss, tf.float64) * batch,
                         tf.cast(penalty, tf.float64) * batch, correct, batch])
        return loss, sums

    @tf.function
    def train_loop(self, iterator, num_steps):
        """Run up to `num_steps` optimizer steps on batches from `iterator`, in one graph call.

        Stops early at a step whose loss is not finite, recording it in `nonfinite_step`.
        Returns the number of steps run.
        """
        sums = tf.zeros([len(TRAIN_SUMS)], tf.float64)
        done = tf.constant(0, tf.int32)
        for _ in tf.range(num_steps):
            images, labels = next(iterator)
            loss, step_sums = self._train_step(images, labels)
            done += 1
            if not tf.math.is_finite(loss):
                self.nonfinite_step.assign(self.step - 1)
                break
            sums += step_sums
        self.epoch_sums.assign_add(sums)
        return done

    @contextlib.contextmanager
    def averaged_weights(self):
        """Within the block the model holds its moving-average weights (if EMA is on)."""
        self._swap_ema()
        try:
            yield
        finally:
            self._swap_ema()

    def use_averaged_weights(self):
        """Put the moving-average weights in the model for good (at the end of training)."""
        for average, variable in zip(self.ema_variables, self.model.variables):
            variable.assign(average)

    def _swap_ema(self):
        for average, variable in zip(self.ema_variables, self.model.variables):
            current = tf.identity(variable)
            variable.assign(average)
            average.assign(current)

    def reset_epoch_sums(self):
        self.epoch_sums.assign(tf.zeros_like(self.epoch_sums))

    def epoch_means(self):
        """This epoch's training metrics so far: mean loss, data loss, L2 term, accuracy."""
        sums = dict(zip(TRAIN_SUMS, self.epoch_sums.numpy()))
        n = max(sums["examples"], 1.0)
        return {"loss": sums["loss"] / n, "data_loss": sums["data_loss"] / n,
                "l2_penalty": sums["l2_penalty"] / n, "accuracy": sums["correct"] / n}

    def log_probabilities(self, images, single_view=False):
        """Log of the predicted class probabilities in evaluation mode (with `test_time_flip`
        and not `single_view`, of the mean of the image's and its mirror image's probabilities)."""
        log_probs = tf.nn.log_softmax(self.model(images, training=False))
        if self.test_time_flip and not single_view:
            mirrored = tf.nn.log_softmax(self.model(mirror(images), training=False))
            log_probs = tf.reduce_logsumexp(tf.stack([log_probs, mirrored]), 0) - tf.math.log(2.0)
        return log_probs

    @tf.function
    def evaluate(self, dataset, single_view=False):
        """Loss, accuracy, the confusion matrix (rows: true class) and every example's predicted
        class and confidence, accumulated in one graph call over `dataset`. `single_view` (a
        Python bool) turns test-time flipping off for this call."""
        loss_sum = tf.constant(0.0, tf.float64)
        confusion = tf.zeros([NUM_CLASSES, NUM_CLASSES], tf.int64)
        predictions = tf.TensorArray(tf.int32, size=0, dynamic_size=True, infer_shape=False)
        confidences = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False)
        index = 0
        for images, labels in dataset:
            log_probs = self.log_probabilities(images, single_view)
            loss_sum -= tf.reduce_sum(tf.cast(
                tf.gather(log_probs, labels, batch_dims=1), tf.float64))
            predicted = tf.argmax(log_probs, 1, output_type=tf.int32)
            confusion += tf.math.confusion_matrix(labels, predicted, NUM_CLASSES, dtype=tf.int64)
            predictions = predictions.write(index, predicted)
            confidences = confidences.write(index, tf.exp(tf.reduce_max(log_probs, 1)))
            index += 1
        examples = tf.reduce_sum(confusion)
        return {"loss": loss_sum / tf.cast(examples, tf.float64),
                "accuracy": tf.cast(tf.linalg.trace(confusion), tf.float64)
                / tf.cast(examples, tf.float64),
                "confusion": confusion,
                "predictions": predictions.concat(),
                "confidences": confidences.concat()}


def weights_digest(model):
    """SHA-256 over the bytes of the model's variables, in the module's fixed order."""
    digest = hashlib.sha256()
    for variable in model.variables:
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()
