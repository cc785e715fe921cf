"""The plain baseline: 300-80-50 with ReLU and Glorot init, no batch norm, dropout or L2, Adam at
a constant learning rate for a fixed number of epochs.

    python -m experiments.baseline [--help]
"""

import dataclasses

from experiments.improved import CONFIG as IMPROVED
from mlp.cli import run_experiment

CONFIG = dataclasses.replace(
    IMPROVED,
    hidden_sizes=(300, 80, 50),
    initializer="glorot_uniform",
    batch_norm=False,
    dropout=0.0,
    l2=0.0,
    lr_schedule="constant",
    early_stopping=False,
    epochs=20,
)

if __name__ == "__main__":
    run_experiment("baseline", CONFIG, __doc__)
