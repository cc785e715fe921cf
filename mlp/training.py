"""The graph side of training: the train step on a GradientTape, many steps per tf.function call,
under any tf.distribute strategy. Python decides between calls (see mlp/controller.py);
evaluation is mlp/evaluation.py.
"""

import contextlib
import hashlib

import numpy as np
import tensorflow as tf

from mlp.config import NUM_CLASSES
from mlp.l2 import L2Term

# Columns of the per-epoch training sums, summed over examples: loss (data loss + L2 term),
# data loss, L2 term (the value at the end of each graph call, times its examples), correct
# predictions, examples.
TRAIN_SUMS = ("loss", "data_loss", "l2_penalty", "correct", "examples")


class Trainer(tf.Module):
    """Owns everything a training step changes: model, optimizer, the step counter and this
    epoch's running sums. Checkpointing this module (with the loop's small Python state) is
    enough to continue a run exactly. Create it, and the model and optimizer, inside
    `strategy.scope()`.

    Args:
      model: an MLP, or any model with the interface written down in mlp/model.py.
      optimizer: a Keras optimizer; wrap it in keras.optimizers.LossScaleOptimizer for float16.
      l2: factor of the L2 penalty on the model's kernels, or the run's L2Term
        (mlp/l2.py), which then also tells the optimizer about it.
      label_smoothing: mixes the one-hot targets with the uniform distribution by this much.
      schedule: optional function step -> learning rate, applied in the graph before each step.
      ema_decay: if > 0, keep an exponential moving average of all model variables, updated
        after each step with decay min(ema_decay, (1 + step) / (10 + step)) (see
        `averaged_weights`).
      sam_rho: if > 0, sharpness-aware minimization (Foret et al., 2021): each step's gradient
        is taken at the weights moved by rho * g / ||g|| (g the data loss's gradient) and
        applied to the weights themselves (see `_sharpness_aware`). One replica only.
      lookahead_steps, lookahead_alpha: if steps > 0, Lookahead (Zhang et al., 2019): a slow
        copy of the trainable weights; after every `lookahead_steps` optimizer steps it moves
        `lookahead_alpha` of the way toward the weights reached, and training goes on from it.
        The optimizer's moments carry on through the sync, as in the paper.
      teacher: distillation (Hinton et al., 2015): a function images -> a teacher's logits (its
        inference on the step's batch, augmented as the student sees it, never differentiated).
        The data loss is then (1 - teacher_weight) * the cross-entropy with the labels +
        teacher_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)), with T the
        `teacher_temperature`; T^2 keeps the term's gradients at the labels' scale as T grows.
      strategy: the tf.distribute strategy the variables were made under (default: the current
        one). Each replica's loss is its examples' summed loss over the *global* batch's size,
        plus the L2 penalty / replicas, so that the optimizer's sum of the replicas' gradients is
        the gradient of the global batch's mean loss plus the penalty once.
    """

    def __init__(self, model, optimizer, l2=0.0, label_smoothing=0.0, schedule=None,
                 ema_decay=0.0, sam_rho=0.0, lookahead_steps=0, lookahead_alpha=0.5,
                 teacher=None, teacher_weight=0.5, teacher_temperature=4.0, strategy=None):
        super().__init__(name="trainer")
        self.strategy = strategy or tf.distribute.get_strategy()
        self.model = model
        self.optimizer = optimizer
        self.l2_term = l2 if isinstance(l2, L2Term) else L2Term(model.kernels, l2)
        self.label_smoothing = float(label_smoothing)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch_sums = tf.Variable(tf.zeros([len(TRAIN_SUMS)], tf.float64), trainable=False,
                                      name="epoch_sums")
        # The step whose loss was not finite, or -1.
        self.nonfinite_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                          name="nonfinite_step")
        self.schedule = schedule
        self.ema_decay = float(ema_decay)
        self.sam_rho = float(sam_rho)
        if self.sam_rho and self.strategy.num_replicas_in_sync > 1:
            raise ValueError("sam_rho: sharpness-aware minimization runs on one replica")
        # A plain function, not a tracked module: the teacher's weights are not this run's to
        # train or checkpoint.
        self.teacher = teacher
        self.teacher_weight = float(teacher_weight)
        self.teacher_temperature = float(teacher_temperature)
        self.ema_variables = ([tf.Variable(v, trainable=False, name="ema") for v in model.variables]
                              if ema_decay else [])
        self.lookahead_steps = int(lookahead_steps)
        self.lookahead_alpha = float(lookahead_alpha)
        self.slow_weights = ([tf.Variable(v, trainable=False, name="slow")
                              for v in model.trainable_variables] if lookahead_steps else [])
        self.optimizer.build(self.model.trainable_variables)
        self.loss_scaling = (hasattr(optimizer, "scale_loss")
                             and hasattr(optimizer, "inner_optimizer"))
        self.l2_in_optimizer = self.l2_term.attach(optimizer)

    @property
    def learning_rate(self):
        return float(self.optimizer.learning_rate.numpy())

    @learning_rate.setter
    def learning_rate(self, value):
        # Assigns the optimizer's variable: nothing retraces.
        self.optimizer.learning_rate.assign(value)

    def data_loss(self, logits, labels, teacher_logits=None):
        """Per-example softmax cross-entropy from float32 logits, against int labels or, for
        mixed batches (mlp.augment.make_mix), target distributions [batch, classes]; with
        `teacher_logits`, mixed with the distillation term (see the class's docstring)."""
        if self.label_smoothing == 0.0 and labels.dtype.is_integer:
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        else:
            targets = tf.one_hot(labels, NUM_CLASSES) if labels.dtype.is_integer else labels
            targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / NUM_CLASSES
            loss = tf.nn.softmax_cross_entropy_with_logits(targets, logits)
        if teacher_logits is None:
            return loss
        temperature = self.teacher_temperature
        teacher_log_probs = tf.nn.log_softmax(teacher_logits / temperature)
        student_log_probs = tf.nn.log_softmax(logits / temperature)
        divergence = tf.reduce_sum(tf.exp(teacher_log_probs)
                                   * (teacher_log_probs - student_log_probs), axis=1)
        return ((1.0 - self.teacher_weight) * loss
                + self.teacher_weight * temperature ** 2 * divergence)

    def _train_step(self, batch):
        """One replica's step on its part of the global batch: (images, labels) on one replica,
        (images, labels, global batch size) on several. Returns its float64 sums (TRAIN_SUMS)."""
        images, labels, *global_size = batch
        replicas = self.strategy.num_replicas_in_sync
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        global_count = tf.cast(global_size[0], tf.float32) if global_size else count
        replica = (tf.distribute.get_replica_context().replica_id_in_sync_group
                   if replicas > 1 else None)
        variables = self.model.trainable_variables
        teacher_logits = (None if self.teacher is None else
                          tf.stop_gradient(tf.cast(self.teacher(images), tf.float32)))

        def forward_and_backward():
            with tf.GradientTape() as tape:
                logits = self.model(images, training=True, step=self.step, replica=replica)
                losses = self.data_loss(logits, labels, teacher_logits)
                if replicas == 1:
                    data_loss = tf.reduce_mean(losses)
                else:
                    data_loss = tf.reduce_sum(losses) / global_count
                target = self.optimizer.scale_loss(data_loss) if self.loss_scaling else data_loss
            return logits, data_loss, tape.gradient(target, variables)

        logits, data_loss, gradients = forward_and_backward()
        if self.sam_rho:
            gradients = self._sharpness_aware(gradients, variables, forward_and_backward)
        # The gradient of data loss + the L2 term, without the term's value each step (it is
        # only reported; see train_loop).
        scale_loss = self.optimizer.scale_loss if self.loss_scaling else None
        gradients = self.l2_term.add_gradient(gradients, variables, replicas, scale_loss)
        self.optimizer.apply(gradients, variables)
        if not labels.dtype.is_integer:  # a mixed batch: right is the class it holds most of
            labels = tf.argmax(labels, 1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32),
                                                 labels), tf.float64))
        # Summed over the global batch, the data loss times the global batch size; the L2 term's
        # columns are filled in once per graph call.
        data_sum = tf.cast(data_loss, tf.float64) * tf.cast(global_count, tf.float64)
        return tf.stack([data_sum, data_sum, tf.constant(0.0, tf.float64), correct,
                         tf.cast(count, tf.float64)])

    def _sharpness_aware(self, gradients, variables, forward_and_backward):
        """The gradient at w + rho * g / ||g||, for the gradient `gradients` (g) at the weights w;
        the weights are w again on return. The loss and accuracy reported stay those at w. The
        second pass draws the same dropout masks (the same step) and moves batch norm's moving
        statistics a second time, as most implementations of SAM do."""
        norm = tf.linalg.global_norm(gradients)  # a loss scale cancels in g / ||g||
        # A non-finite gradient (an overflowing loss scale) moves nothing: its step is skipped.
        scale = tf.where(tf.math.is_finite(norm) & (norm > 0), self.sam_rho / norm, 0.0)
        weights = [tf.identity(variable) for variable in variables]  # w itself, not w + m - m
        for variable, gradient in zip(variables, gradients):
            variable.assign_add(tf.cast(gradient, variable.dtype) * scale)
        _, _, gradients = forward_and_backward()
        for variable, weight in zip(variables, weights):
            variable.assign(weight)
        return gradients

    def _lookahead_sync(self):
        """slow += alpha * (fast - slow); fast = slow."""
        for slow, fast in zip(self.slow_weights, self.model.trainable_variables):
            slow.assign_add(self.lookahead_alpha * (fast - slow))  # copies: the same dtype
            fast.assign(slow)
        return tf.no_op()

    def _update_averages(self):
        # Early on the average forgets faster, so it is not dominated by the initial weights.
        step = tf.cast(self.step, tf.float32)
        decay = tf.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))
        for average, variable in zip(self.ema_variables, self.model.variables):
            average.assign(decay * average + (1.0 - decay) * variable)

    # The loop is the graph's while loop written out, not left to AutoGraph: its rewriting of
    # the loop (and of the step, model, loss and optimizer, whose control flow is all Python's)
    # took from half a second to seconds of every process's start.
    @tf.function(autograph=False)
    def train_loop(self, iterator, num_steps):
        """Run up to `num_steps` optimizer steps on batches from `iterator` (a distributed
        iterator under several replicas), in one graph call.

        Stops early at a step whose loss is not finite, recording it in `nonfinite_step`.
        Returns the number of steps run.
        """
        def step(done, sums, _):
            batch = next(iterator)
            if self.schedule is not None:
                self.optimizer.learning_rate.assign(self.schedule(self.step))
            step_sums = self.strategy.reduce(
                tf.distribute.ReduceOp.SUM, self.strategy.run(self._train_step, args=(batch,)),
                axis=None)
            if self.ema_variables:
                self._update_averages()
            self.step.assign_add(1)
            if self.slow_weights:
                tf.cond(self.step % self.lookahead_steps == 0, self._lookahead_sync, tf.no_op)
            finite = tf.math.is_finite(step_sums[0])
            # A step whose loss is not finite is the last of the call, its sums left out.
            self.nonfinite_step.assign(tf.where(finite, self.nonfinite_step, self.step - 1))
            return done + 1, tf.where(finite, sums + step_sums, sums), finite

        done, sums, _ = tf.while_loop(
            lambda done, sums, finite: finite & (done < num_steps), step,
            (tf.constant(0, tf.int32), tf.zeros([len(TRAIN_SUMS)], tf.float64),
             tf.constant(True)))
        # The L2 term, reported with the weights at the end of this call for every example of it
        # (one pass over the kernels per call, not per step).
        penalty = tf.cast(self.l2_term.value(), tf.float64) * sums[4]
        self.epoch_sums.assign_add(sums + tf.stack([penalty, 0.0, penalty, 0.0, 0.0]))
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


def weights_digest(model):
    """SHA-256 over the bytes of the model's variables, in the module's fixed order."""
    digest = hashlib.sha256()
    for variable in model.variables:
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()
