"""The CNN that teaches best's MLP in distillation: two 3x3 convolution blocks (32 and 64
channels, each with ReLU, batch norm and 2x2 max pooling), one hidden layer of 256, best's
augmentation (1-pixel shifts, mirror images) and test-time mirror, a 20-epoch cosine schedule.
Not an MLP: it exists to teach one (`python -m experiments.distilled --teacher RUN_DIR`).

    python -m experiments.teacher [--help]
"""

from experiments.recipes import TEACHER
from mlp.cli import run_experiment

if __name__ == "__main__":
    run_experiment("python -m experiments.teacher", "teacher", TEACHER, __doc__)
