"""The plateau and early-stopping rules make Keras's decisions, for any sequence and arguments."""


import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp import EarlyStoppingRule, PlateauRule

# Losses from a small grid so that ties and near-ties (the min_delta edge cases) are common.
losses = st.lists(st.integers(0, 40).map(lambda i: 1.0 - i * 0.0125), min_size=1, max_size=30)
deltas = st.sampled_from([0.0, 1e-4, 0.0125, 0.02, 0.05])


class _Holder:
    """What the callbacks need of a model: an optimizer, weights, and stop_training."""

    def __init__(self, lr):
        self.optimizer = keras.optimizers.Adam(lr)
        self.stop_training = False
        self.weights_at = 0

    def get_weights(self):
        return self.weights_at

    def set_weights(self, w):
        self.weights_at = w


@settings(max_examples=150, deadline=None)
@given(values=losses, factor=st.sampled_from([0.1, 0.5, 0.9]), patience=st.integers(0, 4),
       min_delta=deltas, cooldown=st.integers(0, 3), min_lr=st.sampled_from([0.0, 1e-4, 3e-4]),
       lr=st.sampled_from([1e-3, 5e-4]))
def test_plateau_reducer_matches_keras(values, factor, patience, min_delta, cooldown, min_lr, lr):
    holder = _Holder(lr)
    reference = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=factor,
                                                  patience=patience, min_delta=min_delta,
                                                  cooldown=cooldown, min_lr=min_lr)
    reference.set_model(holder)
    reference.on_train_begin()
    ours = PlateauRule(factor, patience, min_delta, cooldown, min_lr)
    our_lr = float(holder.optimizer.learning_rate.numpy())
    for epoch, value in enumerate(values):
        reference.on_epoch_end(epoch, {"val_loss": value})
        # Our loop stores the learning rate in the optimizer's float32 variable, as Keras does.
        our_lr = float(np.float32(ours.update(value, our_lr)))
        assert our_lr == float(holder.optimizer.learning_rate.numpy()), f"epoch {epoch}"
        assert (ours.wait, ours.cooldown_counter) == (reference.wait, reference.cooldown_counter)


@settings(max_examples=150, deadline=None)
@given(values=losses, patience=st.integers(0, 5), min_delta=deltas,
       start_from_epoch=st.integers(0, 4))
def test_early_stopper_matches_keras(values, patience, min_delta, start_from_epoch):
    holder = _Holder(1e-3)
    reference = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                              min_delta=min_delta,
                                              start_from_epoch=start_from_epoch,
                                              restore_best_weights=True)
    reference.set_model(holder)
    reference.on_train_begin()
    ours = EarlyStoppingRule(patience, min_delta, start_from_epoch, restore_best_weights=True)
    for epoch, value in enumerate(values):
        holder.weights_at = epoch
        reference.on_epoch_end(epoch, {"val_loss": value})
        stop = ours.update(value)
        assert stop == holder.stop_training, f"epoch {epoch}"
        if reference.best is not None:
            assert (ours.best, ours.best_epoch) == (reference.best, reference.best_epoch)
            assert ours.improved_at(epoch) == (reference.best_weights == epoch
                                               and reference.best_epoch == epoch)
        if stop:
            break


@settings(max_examples=50, deadline=None)
@given(values=losses, split=st.integers(0, 30))
def test_state_round_trip_continues_identically(values, split):
    """Saving the state mid-sequence and loading it into fresh objects changes no decision."""
    split = min(split, len(values))
    reducer, stopper = PlateauRule(0.5, 2, 1e-4, 1, 1e-5), EarlyStoppingRule(3, 0.0, 1)
    lr_a = lr_b = 1e-3
    for value in values[:split]:
        lr_a = reducer.update(value, lr_a)
        stopper.update(value)
    lr_b = lr_a
    reducer_b, stopper_b = PlateauRule(0.5, 2, 1e-4, 1, 1e-5), EarlyStoppingRule(3, 0.0, 1)
    reducer_b.load_state(reducer.state())
    stopper_b.load_state(stopper.state())
    for value in values[split:]:
        lr_a, lr_b = reducer.update(value, lr_a), reducer_b.update(value, lr_b)
        assert lr_a == lr_b and stopper.update(value) == stopper_b.update(value)


def test_plateau_reduces_after_patience_and_respects_min_lr():
    reducer = PlateauRule(factor=0.5, patience=2, min_delta=0.0, min_lr=0.3)
    lrs = [1.0]
    for value in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]:
        lrs.append(reducer.update(value, lrs[-1]))
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.3, 0.3, 0.3]


def test_plateau_rejects_factor_of_one_or_more():
    with pytest.raises(ValueError, match="factor"):
        PlateauRule(factor=1.0)


def test_early_stopper_waits_patience_epochs():
    stopper = EarlyStoppingRule(patience=2)
    decisions = [stopper.update(v) for v in [1.0, 0.9, 0.95, 0.95]]
    assert decisions == [False, False, False, True]
    assert (stopper.best, stopper.best_epoch) == (0.9, 1)
