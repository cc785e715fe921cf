"""Evaluation, in one graph call per dataset: loss (with and without the L2 term), accuracy, the
confusion matrix and every example's prediction, reduced across replicas under any strategy.
"""

import tensorflow as tf

from mlp.augment import evaluation_views
from mlp.l2 import L2Term
from mlp.training import NUM_CLASSES


def view_log_probabilities(model, images, test_time_flip=False, test_time_shifts=0):
    """Log of the mean, over the test-time views of `images` (mlp.augment.evaluation_views), of
    the model's class probabilities in evaluation mode (no dropout, batch norm on its moving
    statistics). The evaluator and the exported SavedModel both infer this way."""
    views = evaluation_views(images, test_time_flip, test_time_shifts)
    log_probs = [tf.nn.log_softmax(model(view, training=False)) for view in views]
    if len(views) == 1:
        return log_probs[0]
    return tf.reduce_logsumexp(tf.stack(log_probs), 0) - tf.math.log(float(len(views)))


class Evaluator(tf.Module):
    """Evaluates a model in inference mode (moving batch-norm statistics, no dropout).

    Args:
      model: the model (interface in mlp/model.py).
      l2: the training L2 factor (or the run's L2Term), so `loss_with_l2` is what Keras reports
        as val_loss: the data loss plus the L2 term of the current weights.
      test_time_flip: average the predicted probabilities of each image and its mirror image.
      test_time_shifts: average over copies of those views shifted by 1 to N pixels up, down,
        left and right too (mlp.augment.evaluation_views).
      strategy: the strategy the model's variables were made under (default: the current one);
        datasets given to `evaluate` are then distributed datasets cut by
        mlp.data.evaluation_batches, and the replicas' outputs are reduced in the graph.
    """

    def __init__(self, model, l2=0.0, test_time_flip=False, test_time_shifts=0, strategy=None):
        super().__init__(name="evaluator")
        self.model = model
        self.l2_term = l2 if isinstance(l2, L2Term) else L2Term(model.kernels, l2)
        self.test_time_flip = bool(test_time_flip)
        self.test_time_shifts = int(test_time_shifts)
        self.strategy = strategy or tf.distribute.get_strategy()

    def log_probabilities(self, images, single_view=False):
        """Log of the predicted class probabilities in evaluation mode: of the mean of the test-time
        views' probabilities, or of the image's alone if `single_view`."""
        if single_view:
            return tf.nn.log_softmax(self.model(images, training=False))
        return view_log_probabilities(self.model, images, self.test_time_flip,
                                      self.test_time_shifts)

    def _replica_step(self, batch, single_view):
        images, labels = batch
        log_probs = self.log_probabilities(images, single_view)
        loss_sum = -tf.reduce_sum(tf.cast(tf.gather(log_probs, labels, batch_dims=1), tf.float64))
        predicted = tf.argmax(log_probs, 1, output_type=tf.int32)
        confusion = tf.math.confusion_matrix(labels, predicted, NUM_CLASSES, dtype=tf.int64)
        return loss_sum, confusion, predicted, tf.exp(tf.reduce_max(log_probs, 1)), log_probs

    @tf.function(autograph=False)  # its loop is the dataset's reduce, as Trainer.train_loop's
    def evaluate(self, dataset, single_view=False):
        """Over `dataset` of (images, labels) batches: "loss" (mean data loss), "loss_with_l2",
        "accuracy", "confusion" (rows: true class), and each example's "predictions",
        "confidences" and "log_probabilities" [N, 10] in the dataset's order. `single_view` (a
        Python bool) evaluates the plain images alone, without the other test-time views."""
        strategy = self.strategy
        total = lambda value: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
        rows = lambda dtype: tf.TensorArray(dtype, size=0, dynamic_size=True, infer_shape=False)

        def add_batch(state, batch):
            index, loss_sum, confusion, predictions, confidences, log_probabilities = state
            parts = strategy.run(lambda b: self._replica_step(b, single_view), args=(batch,))
            # The replicas hold consecutive rows of the batch: gathered in replica order they
            # are the batch's rows in order.
            return (index + 1, loss_sum + total(parts[0]), confusion + total(parts[1]),
                    predictions.write(index, strategy.gather(parts[2], axis=0)),
                    confidences.write(index, strategy.gather(parts[3], axis=0)),
                    log_probabilities.write(index, strategy.gather(parts[4], axis=0)))

        _, loss_sum, confusion, predictions, confidences, log_probabilities = dataset.reduce(
            (tf.constant(0, tf.int32), tf.constant(0.0, tf.float64),
             tf.zeros([NUM_CLASSES, NUM_CLASSES], tf.int64), rows(tf.int32), rows(tf.float32),
             rows(tf.float32)), add_batch)
        examples = tf.cast(tf.reduce_sum(confusion), tf.float64)
        loss = loss_sum / examples
        penalty = tf.cast(self.l2_term.value(), tf.float64)
        return {"loss": loss,
                "loss_with_l2": loss + penalty,
                "accuracy": tf.cast(tf.linalg.trace(confusion), tf.float64) / examples,
                "confusion": confusion,
                "predictions": predictions.concat(),
                "confidences": confidences.concat(),
                "log_probabilities": log_probabilities.concat()}
