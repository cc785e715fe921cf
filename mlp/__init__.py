"""A low-level TensorFlow library for training MLPs on Fashion-MNIST with a hand-written loop.

The names below load on first use, so `mlp.config` and `mlp.cli` can check a command line
without waiting for TensorFlow to import.
"""

import importlib

from mlp import quiet_start

# TensorFlow's C++ start-up lines (CPU feature and CUDA probes) would hide the run's own first line.
quiet_start.install()

_EXPORTS = {
    "Config": "mlp.config", "ConfigError": "mlp.config",
    "BatchNorm": "mlp.layers", "Conv2D": "mlp.layers", "Dense": "mlp.layers",
    "Dropout": "mlp.layers", "MLP": "mlp.model", "ConvNet": "mlp.model",
    "EarlyStoppingRule": "mlp.rules", "PlateauRule": "mlp.rules",
    "l2_penalty": "mlp.l2",
    "Trainer": "mlp.training", "weights_digest": "mlp.training",
    "Evaluator": "mlp.evaluation", "build": "mlp.build", "Parts": "mlp.build",
    "Controller": "mlp.controller", "Checkpoints": "mlp.checkpointing",
    "train_and_evaluate": "mlp.run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mlp' has no attribute {name!r}")
