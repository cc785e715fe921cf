"""The improved recipe: 512-256-50 with ReLU, He init, batch norm, dropout 0.2 after the first two
blocks, L2 on the kernels, Adam, learning-rate reduction on plateaus and early stopping.

    python -m experiments.improved [--help]
"""

from experiments.recipes import IMPROVED
from mlp.cli import run_experiment

if __name__ == "__main__":
    run_experiment("python -m experiments.improved", "improved", IMPROVED, __doc__)
