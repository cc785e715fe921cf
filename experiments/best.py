"""The strongest pure MLP this repo trains here: wider, light augmentation, label smoothing, a
long cosine learning-rate schedule, and predictions averaged over each image and its mirror.
Every ingredient is a config switch; `python -m experiments.ablation --study best` turns each off.

    python -m experiments.best [--help]
"""

import dataclasses

from experiments.improved import CONFIG as IMPROVED
from mlp.cli import run_experiment

CONFIG = dataclasses.replace(
    IMPROVED,
    hidden_sizes=(1024, 512, 256),
    dropout=0.15,
    dropout_layers=3,
    l2=5e-5,
    lr_schedule="cosine",
    warmup_epochs=2.0,
    min_learning_rate=1e-6,
    epochs=300,
    precision="mixed_bfloat16",
    early_stopping=False,
    augment_flip=True,
    augment_shift=1,
    label_smoothing=0.1,
    test_time_flip=True,
)

if __name__ == "__main__":
    run_experiment("best", CONFIG, __doc__)
