"""A finished run's model, as its results.json reports it: what export, the test-time-views
study and distillation's teacher load.

    model, config, results = chosen_model(run_dir)
"""

from pathlib import Path

import tensorflow as tf

from mlp import model as model_lib
from mlp.checkpointing import Checkpoints
from mlp.config import Config, ConfigError, check_finished_run
from mlp.exits import CheckpointError
from mlp.io import read_json
from mlp.precision import COMPUTE_DTYPES
from mlp.training import weights_digest


def chosen_model(run_dir):
    """(the run's model holding the weights results.json reports, its Config, its results);
    ConfigError for a directory that is not a finished run or whose checkpoints do not hold
    those weights."""
    run_dir = Path(run_dir)
    check_finished_run(run_dir)
    config = Config.from_dict(read_json(run_dir / "config.json"), run_dir / "config.json")
    results = read_json(run_dir / "results.json")
    digest = results.get("weights_digest") if isinstance(results, dict) else None
    precision = results.get("precision") if isinstance(results, dict) else None
    accuracy = results.get("test_accuracy") if isinstance(results, dict) else None
    if (not isinstance(digest, str) or precision not in COMPUTE_DTYPES
            or not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool)):
        raise ConfigError(f"{run_dir / 'results.json'}: has no weights_digest, precision or "
                          "test_accuracy; it was edited or damaged")
    model = model_lib.from_config(config, COMPUTE_DTYPES[precision])

    def copies():
        return [tf.Variable(tf.zeros_like(v), trainable=False) for v in model.variables]

    candidates = {"last": model.variables}
    trainer = {"model": model}
    if config.ema_decay:
        candidates["moving average"] = trainer["ema_variables"] = copies()
    trackables = {"trainer": tf.train.Checkpoint(**trainer)}
    if config.early_stopping:
        candidates["best epoch"] = trackables["best_weights"] = copies()
    checkpoints = Checkpoints(run_dir / "checkpoints", is_chief=False, warn=lambda _: None,
                              **trackables)
    try:
        restored = checkpoints.restore()
    except CheckpointError as e:
        raise ConfigError(str(e)) from None
    if restored is None:
        raise ConfigError(f"{run_dir / 'checkpoints'}: no checkpoint to export from")
    saved = [v.numpy() for v in model.variables]
    for values in candidates.values():
        for variable, value in zip(model.variables, values):
            variable.assign(value)
        if weights_digest(model) == digest:
            return model, config, results
    for variable, value in zip(model.variables, saved):
        variable.assign(value)
    raise ConfigError(f"{run_dir / 'checkpoints'}: no weights in the last checkpoint have "
                          "the weights_digest results.json reports; the checkpoints were "
                          "changed after the run finished")
