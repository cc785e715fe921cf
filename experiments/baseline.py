"""The plain baseline: 300-80-50 with ReLU and Glorot init, no batch norm, dropout or L2, Adam at
a constant learning rate for a fixed number of epochs.

    python -m experiments.baseline [--help]
"""

from experiments.recipes import BASELINE
from mlp.cli import run_experiment

if __name__ == "__main__":
    run_experiment("python -m experiments.baseline", "baseline", BASELINE, __doc__)
