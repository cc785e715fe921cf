"""Run by tests/test_distribute.py in its own process (logical CPU devices must be configured
before TensorFlow starts): the same training steps and evaluation on one device and under
MirroredStrategy over 2 logical CPU devices, from the same initial weights and global batches,
with batch norm synchronized across the replicas and with each replica's own statistics, and
synchronized with a CNN teacher (distillation), and synchronized with Lookahead syncing its slow
weights within the steps. Then, in the same process (its start-up is most of a small run's
time), each further argument's command line of `python -m experiments.improved` (a JSON list),
as the command line runs it. Prints one JSON line: {"sync": differences, "local": differences,
"teacher": differences, "teacher_effect": the largest weight difference the teacher makes on one
device, "lookahead": differences, "lookahead_effect": the same for Lookahead, "commands":
[{"returncode", "stdout", "stderr"} of each command line]}."""

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from mlp import data as data_lib
from mlp.config import Config
from mlp.distribute import make_strategy, split_cpu

split_cpu(2)
import tensorflow as tf  # noqa: E402

from mlp.build import build  # noqa: E402
from mlp.run import train_and_evaluate  # noqa: E402
from mlp.run_directory import save_config  # noqa: E402
from tests.conftest import run_in_process  # noqa: E402

data_dir, steps, commands = sys.argv[1], int(sys.argv[2]), [json.loads(a) for a in sys.argv[3:]]
config = Config(hidden_sizes=(32, 16), dropout=0.0, batch_size=64, validation_size=100,
                verify_checksums=False, histograms=False, l2=1e-3,
                lr_schedule="constant", augment_shift=1, augment_flip=True, data_dir=data_dir)
splits = data_lib.load(data_dir, verify_checksums=False, validation_size=100)


def train(strategy, sync=False, **changes):
    parts = build(dataclasses.replace(config, strategy="one_device" if strategy is None
                                      else "mirrored", sync_batch_norm=sync, **changes),
                  strategy, splits)
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
        "eval_loss_difference": abs(float(one_eval["loss_with_l2"]
                                          - mirrored_eval["loss_with_l2"])),
        "eval_confusion_equal": bool(np.array_equal(one_eval["confusion"],
                                                    mirrored_eval["confusion"])),
        "eval_predictions_equal": bool(np.array_equal(one_eval["predictions"],
                                                      mirrored_eval["predictions"])),
        "eval_confidence_difference": float(np.max(np.abs(one_eval["confidences"]
                                                          - mirrored_eval["confidences"]))),
    }


teacher_dir = Path(tempfile.mkdtemp()) / "teacher"
teacher_config = dataclasses.replace(config, conv_channels=(4,), hidden_sizes=(8,), epochs=1,
                                     corruptions=False, logdir=str(teacher_dir.parent))
teacher_dir.mkdir()
save_config(teacher_dir, teacher_config)
train_and_evaluate(teacher_config, teacher_dir, splits=splits, out=sys.stderr)

one_device = train(None)
strategy = make_strategy("mirrored")
taught = train(None, teacher=str(teacher_dir))
# Every 2 steps: the slow weights move and the fast ones are reset within the 3 steps.
lookahead = {"lookahead_steps": 2, "lookahead_alpha": 0.5}
looked_ahead = train(None, **lookahead)
report = {"sync": differences(one_device, train(strategy, sync=True)),
          "local": differences(one_device, train(strategy, sync=False)),
          "teacher": differences(taught, train(strategy, sync=True, teacher=str(teacher_dir))),
          "teacher_effect": max(float(np.max(np.abs(a - b)))
                                for a, b in zip(one_device[0], taught[0])),
          "lookahead": differences(looked_ahead, train(strategy, sync=True, **lookahead)),
          "lookahead_effect": max(float(np.max(np.abs(a - b)))
                                  for a, b in zip(one_device[0], looked_ahead[0]))}
report["commands"] = []
for argv in commands:
    # Each MirroredStrategy numbers its collectives from the class's key base, so a second one
    # in a process would reuse the first one's keys with other shapes; TensorFlow's own tests
    # move the base for each (a run in a process of its own needs nothing of the kind).
    tf.distribute.MirroredStrategy._collective_key_base += 100000
    report["commands"].append(vars(run_in_process("improved", argv)))
print(json.dumps(report))
