"""The plain baseline: 300-80-50 with ReLU and Glorot init, no batch norm, dropout or L2, Adam at
a constant learning rate for a fixed number of epochs.

    python -m experiments.baseline [--help]
"""

from mlp.cli import run_experiment
from mlp.config import recipe

CONFIG = recipe(
    hidden_sizes=(300, 80, 50),
    initializer="glorot_uniform",
    whitening="none",
    whitening_epsilon=0.1,  # unused without whitening
    batch_norm=False,
    dropout=0.0,
    dropout_layers=0,
    l2=0.0,
    epochs=20,
    batch_size=128,
    learning_rate=1e-3,
    lr_schedule="constant",
    warmup_epochs=0.0,
    # the plateau and early-stopping settings are unused (constant LR, no early stopping)
    plateau_factor=0.5,
    plateau_patience=2,
    plateau_min_delta=1e-4,
    plateau_cooldown=0,
    min_learning_rate=1e-6,
    early_stopping=False,
    early_stopping_patience=6,
    early_stopping_min_delta=0.0,
    early_stopping_start_epoch=0,
    label_smoothing=0.0,
    augment_shift=0,
    augment_flip=False,
    augment_erase=0.0,
    ema_decay=0.0,
    test_time_flip=False,
    precision="auto",
)


def variants():
    return {}


if __name__ == "__main__":
    run_experiment("baseline", CONFIG, __doc__)
