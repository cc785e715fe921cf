"""The improved recipe: 512-256-50 with ReLU, He init, batch norm, dropout 0.2 after the first two
blocks, L2 on the kernels, Adam, learning-rate reduction on plateaus and early stopping.

    python -m experiments.improved [--help]
"""

from mlp.cli import run_experiment
from mlp.config import Config

CONFIG = Config()  # the defaults in mlp/config.py are this recipe

if __name__ == "__main__":
    run_experiment("improved", CONFIG, __doc__)
