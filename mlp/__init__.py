"""A low-level TensorFlow library for training MLPs on Fashion-MNIST with a hand-written loop."""

import os

# TensorFlow's C++ start-up chatter (CPU feature and CUDA probes) hides the run's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mlp.config import Config, ConfigError  # noqa: E402
from mlp.layers import BatchNorm, Dense, Dropout  # noqa: E402
from mlp.model import MLP  # noqa: E402
from mlp.plateau import EarlyStopper, PlateauLRReducer  # noqa: E402
from mlp.regularization import l2_penalty  # noqa: E402
from mlp.training import Trainer, weights_digest  # noqa: E402

__all__ = ["Config", "ConfigError", "BatchNorm", "Dense", "Dropout", "MLP", "EarlyStopper",
           "PlateauLRReducer", "l2_penalty", "Trainer", "weights_digest"]
