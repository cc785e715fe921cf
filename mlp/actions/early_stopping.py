"""Stop when validation loss stops improving, and keep the best epoch's weights."""

import tensorflow as tf


class EarlyStoppingAction:
    """Decision action: feeds record["val_loss"] to a mlp.rules.EarlyStoppingRule, sets
    record["stop"] when it says so, keeps a copy of the best epoch's weights (checkpointed as
    `best_weights`), and puts them back in the model with `restore_best()` at the end."""
    name = "stopper"

    def __init__(self, model, rule):
        self.model = model
        self.rule = rule
        self.best_weights = [tf.Variable(v, trainable=False) for v in model.variables]

    def end_of_epoch(self, epoch, record):
        record["stop"] = self.rule.update(record["val_loss"])
        if self.rule.improved_at(epoch):
            for best, variable in zip(self.best_weights, self.model.variables):
                best.assign(variable)

    def restore_best(self):
        """Put the best epoch's weights in the model; returns that epoch (from 1), or None if no
        epoch was evaluated."""
        if self.rule.best is None:
            return None
        for best, variable in zip(self.best_weights, self.model.variables):
            variable.assign(best)
        return self.rule.best_epoch + 1

    def state(self):
        return self.rule.state()

    def load_state(self, state):
        self.rule.load_state(state)
