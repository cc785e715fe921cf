"""Run by tests/test_distribute.py in its own process (logical CPU devices must be configured
before TensorFlow starts): the same training steps and evaluation on one device and under
MirroredStrategy over 2 logical CPU devices, from the same initial weights and global batches,
with batch norm synchronized across the replicas and with each replica's own statistics. Prints
one JSON line: {"sync": differences, "local": differences}."""

import dataclasses
import json
import sys

import numpy as np

from mlp import data as data_lib
from mlp.config import Config
from mlp.distribute import make_strategy, split_cpu

split_cpu(2)
import tensorflow as tf  # noqa: E402

from mlp.build import build  # noqa: E402

data_dir, steps = sys.argv[1], int(sys.argv[2])
config = Config(hidden_sizes=(32, 16), dropout=0.0, batch_size=64, validation_size=100,
                verify_checksums=False, histograms=False, l2=1e-3,
                lr_schedule="constant", augment_shift=1, augment_flip=True, data_dir=data_dir)
splits = data_lib.load(data_dir, verify_checksums=False, validation_size=100)


def train(strategy, sync=False):
    parts = build(dataclasses.replace(config, strategy="one_device" if strategy is None
                                      else "mirrored", sync_batch_norm=sync), strategy, splits)
    iterator = iter(parts.training_batches())
    parts.trainer.train_loop(iterator, tf.constant(steps))
    evaluation = parts.evaluator.evaluate(parts.evaluation_batches(splits.test_images,
                                                                   splits.test_labels))
    return ([v.numpy() for v in parts.model.variables], parts.trainer.epoch_means(),
            {k: v.numpy() for k, v in evaluation.items()}, parts.replicas)


def differences(one_run, mirrored_run):
    (one, one_means, one_eval, _), (mirrored, mirrored_means, mirrored_eval, replicas) = (
        one_run, mirrored_run)
    return {
        "replicas": replicas,
        "max_weight_difference": max(float(np.max(np.abs(a - b))) for a, b in zip(one, mirrored)),
        "max_weight_change": max(float(np.max(np.abs(a))) for a in one),
        "loss_difference": abs(one_means["loss"] - mirrored_means["loss"]),
        "accuracy_difference": abs(one_means["accuracy"] - mirrored_means["accuracy"]),
        "eval_loss_difference": abs(float(one_eval["loss_with_l2"] - mirrored_eval["loss_with_l2"])),
        "eval_confusion_equal": bool(np.array_equal(one_eval["confusion"], mirrored_eval["confusion"])),
        "eval_predictions_equal": bool(np.array_equal(one_eval["predictions"],
                                                      mirrored_eval["predictions"])),
        "eval_confidence_difference": float(np.max(np.abs(one_eval["confidences"]
                                                          - mirrored_eval["confidences"]))),
    }


one_device = train(None)
strategy = make_strategy("mirrored")
print(json.dumps({"sync": differences(one_device, train(strategy, sync=True)),
                  "local": differences(one_device, train(strategy, sync=False))}))
