"""The improved recipe: 512-256-50 with ReLU, He init, batch norm, dropout 0.2 after the first two
blocks, L2 on the kernels, Adam, learning-rate reduction on plateaus and early stopping.

    python -m experiments.improved [--help]
"""

import dataclasses

from mlp.cli import run_experiment
from mlp.config import recipe

CONFIG = recipe(
    # model
    hidden_sizes=(512, 256, 50),
    initializer="he_normal",
    whitening="none",
    whitening_epsilon=0.1,  # unused without whitening
    batch_norm=True,
    dropout=0.2,
    dropout_layers=2,
    l2=1e-4,
    # optimization: Adam, halve the learning rate after 2 epochs without improvement, stop after 6
    epochs=60,
    batch_size=128,
    learning_rate=1e-3,
    lr_schedule="plateau",
    warmup_epochs=0.0,
    plateau_factor=0.5,
    plateau_patience=2,
    plateau_min_delta=1e-4,
    plateau_cooldown=0,
    min_learning_rate=1e-6,
    early_stopping=True,
    early_stopping_patience=6,
    early_stopping_min_delta=0.0,
    early_stopping_start_epoch=0,
    # none of best's extras
    label_smoothing=0.0,
    augment_shift=0,
    augment_flip=False,
    augment_erase=0.0,
    ema_decay=0.0,
    test_time_flip=False,
    precision="auto",
)


def variants():
    """The ablation study of this recipe: one technique taken out at a time, and the baseline."""
    from experiments.baseline import CONFIG as BASELINE

    return {
        "no batch norm": dataclasses.replace(CONFIG, batch_norm=False),
        "no dropout": dataclasses.replace(CONFIG, dropout=0.0),
        "no L2": dataclasses.replace(CONFIG, l2=0.0),
        "Glorot init": dataclasses.replace(CONFIG, initializer="glorot_uniform"),
        "constant LR": dataclasses.replace(CONFIG, lr_schedule="constant"),
        # fixed epochs: the recipe's maximum
        "no early stopping": dataclasses.replace(CONFIG, early_stopping=False),
        "baseline": BASELINE,
    }


if __name__ == "__main__":
    run_experiment("improved", CONFIG, __doc__)
