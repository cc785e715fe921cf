"""The strongest pure MLP this repo trains: ZCA-whitened input, wider layers (1024-512-256), light
augmentation (1-pixel shifts, mirror images), a 300-epoch cosine learning-rate schedule, and
predictions averaged over each image and its mirror. Every ingredient is a config switch;
`python -m experiments.ablation --recipe best` turns each off (docs/results.md).

    python -m experiments.best [--help]
"""

from experiments.recipes import BEST
from mlp.cli import run_experiment

if __name__ == "__main__":
    run_experiment("python -m experiments.best", "best", BEST, __doc__)
