"""The decision rules of learning-rate reduction on plateaus and of early stopping, as plain
state machines: each takes a number and returns a decision. Applying a decision to a trainer
(setting its learning rate, keeping and restoring the best weights) is the job of the actions in
mlp/actions/.

They watch validation loss (lower is better) and make exactly the decisions of Keras's
`ReduceLROnPlateau` and `EarlyStopping` callbacks for the same sequence and arguments; the tests
drive both side by side. As in Keras, "improved" means beating the best value by more than
`min_delta`, and that comparison is made in float32 (Keras compares through its float32 ops).
Their whole state is `state()` / `load_state()`, so a checkpoint can carry it.
"""

import numpy as np


def _improves(value, best, min_delta):
    """Keras's test for a lower-is-better monitor: value + min_delta < best, in float32."""
    return best is None or bool(np.float32(value + abs(min_delta)) < np.float32(best))


class PlateauRule:
    """Multiply the learning rate by `factor` after `patience` epochs without improvement.

    After a reduction, `cooldown` epochs pass before the wait counts again; the learning rate
    never goes below `min_lr`.
    """

    def __init__(self, factor=0.1, patience=10, min_delta=1e-4, cooldown=0, min_lr=0.0):
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.factor = factor
        self.patience = patience
        self.min_delta = min_delta
        self.cooldown = cooldown
        self.min_lr = min_lr
        self.best = None
        self.wait = 0
        self.cooldown_counter = 0

    def update(self, value, lr):
        """Take this epoch's validation loss and the current learning rate; return the new one."""
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if _improves(value, self.best, self.min_delta):
            self.best = value
            self.wait = 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience and lr > np.float32(self.min_lr):
                lr = max(lr * self.factor, self.min_lr)
                self.cooldown_counter = self.cooldown
                self.wait = 0
        return lr

    def state(self):
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def load_state(self, state):
        self.best, self.wait, self.cooldown_counter = (
            state["best"], state["wait"], state["cooldown_counter"])


class EarlyStoppingRule:
    """Say stop once `patience` epochs have passed without improvement.

    Epochs before `start_from_epoch` are ignored. `best` and `best_epoch` (0-based) tell which
    epoch's weights to restore when `restore_best_weights`; the restoring is the loop's job.
    """

    def __init__(self, patience=0, min_delta=0.0, start_from_epoch=0, restore_best_weights=False):
        self.patience = patience
        self.min_delta = min_delta
        self.start_from_epoch = start_from_epoch
        self.restore_best_weights = restore_best_weights
        self.best = None
        self.best_epoch = 0
        self.wait = 0
        self.epoch = 0  # epochs seen so far, including ignored ones

    def update(self, value):
        """Take this epoch's validation loss; return True when training should stop now."""
        epoch = self.epoch
        self.epoch += 1
        if epoch < self.start_from_epoch:
            return False
        self.wait += 1
        if _improves(value, self.best, self.min_delta):
            self.best = value
            self.best_epoch = epoch
            self.wait = 0
            return False
        return self.wait >= self.patience and epoch > 0

    def improved_at(self, epoch):
        """Whether `epoch` set the current best (the loop snapshots weights then)."""
        return self.best is not None and self.best_epoch == epoch

    def state(self):
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "epoch": self.epoch}

    def load_state(self, state):
        self.best, self.best_epoch, self.wait, self.epoch = (
            state["best"], state["best_epoch"], state["wait"], state["epoch"])
