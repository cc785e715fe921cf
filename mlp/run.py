"""The controller of a run (Python between graph calls): the epoch loop with its progress,
plateau and early-stopping decisions, summaries, checkpoints, interruption, and the results.

Order of work at the end of an epoch, chosen so that a kill at any moment loses nothing:
evaluate -> decide (learning rate, stop, best weights) -> save checkpoint -> write summaries ->
print. A resumed run rewrites from the checkpoint's history any epoch whose summaries are missing.
"""

import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from mlp import data as data_lib
from mlp import report
from mlp.io import atomic_write_json
from mlp.model import MLP
from mlp.plateau import EarlyStopper, PlateauLRReducer
from mlp.optim import make_optimizer
from mlp.precision import COMPUTE_DTYPES, resolve
from mlp.augment import make_augment
from mlp.regularization import l2_penalty
from mlp.schedules import cosine_with_warmup
from mlp.summaries import Summaries, logged_epochs
from mlp.training import Trainer, weights_digest

PROGRESS_STEPS_PER_LOOP = 50


class NonFiniteLoss(RuntimeError):
    """Training diverged; the message names the epoch and step."""


class Interrupted(Exception):
    """SIGINT or SIGTERM: a checkpoint was saved; `exit_code` is 128 + the signal number."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class RunState:
    """The loop's own state, saved inside every checkpoint as JSON."""
    epochs_done: int = 0
    stopped_early: bool = False
    history: list = None  # one dict per finished epoch
    partial_epoch_seconds: float = 0.0  # training time already spent in the unfinished epoch
    plateau: dict = None
    stopper: dict = None

    def to_json(self):
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))


class _SignalGuard:
    """First SIGINT/SIGTERM: remember it, so the loop stops at the next step boundary it sees.
    Second: exit at once."""

    def __init__(self):
        self.signum = None
        self.previous = {}

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            print(f"\nsecond {signal.Signals(signum).name}: exiting without saving", file=sys.stderr,
                  flush=True)
            os._exit(128 + signum)
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping at the next step boundary "
              "(again to exit at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class Run:
    """Everything one run owns, built from a Config; `train()` does the rest."""

    def __init__(self, config, run_dir, resume=False, splits=None, out=sys.stdout):
        self.config = config
        self.run_dir = Path(run_dir)
        self.out = out
        self.precision = resolve(config.precision)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.splits = splits or data_lib.load(config.data_dir, config.verify_checksums,
                                              config.validation_size)
        train_images, train_labels = self.splits.train_images, self.splits.train_labels
        if config.train_subset:
            train_images = train_images[:config.train_subset]
            train_labels = train_labels[:config.train_subset]
        self.train_images, self.train_labels = train_images, train_labels
        self.steps_per_epoch = math.ceil(len(train_images) / config.batch_size)

        self.model = MLP.from_config(config, COMPUTE_DTYPES[self.precision])
        schedule = None
        if config.lr_schedule == "cosine":
            schedule = cosine_with_warmup(config.learning_rate, config.epochs * self.steps_per_epoch,
                                          round(config.warmup_epochs * self.steps_per_epoch),
                                          config.min_learning_rate)
        self.trainer = Trainer(self.model, make_optimizer(self.precision, config.learning_rate),
                               l2=config.l2, label_smoothing=config.label_smoothing,
                               schedule=schedule, ema_decay=config.ema_decay,
                               test_time_flip=config.test_time_flip)
        self.augment = make_augment(config.seed, config.augment_shift, config.augment_flip,
                                    config.augment_erase)
        self.best_weights = [tf.Variable(v, trainable=False) for v in self.model.variables]
        self.state = RunState(history=[])
        self.plateau = PlateauLRReducer(config.plateau_factor, config.plateau_patience,
                                        config.plateau_min_delta, config.plateau_cooldown,
                                        config.min_learning_rate)
        self.stopper = EarlyStopper(config.early_stopping_patience, config.early_stopping_min_delta,
                                    config.early_stopping_start_epoch, restore_best_weights=True)
        self._state_text = tf.Variable("", dtype=tf.string, trainable=False)
        self.checkpoint = tf.train.Checkpoint(trainer=self.trainer, best_weights=self.best_weights,
                                              run_state=self._state_text)
        self.checkpoints = tf.train.CheckpointManager(self.checkpoint, str(self.run_dir / "checkpoints"),
                                                      max_to_keep=2)
        if resume and self.checkpoints.latest_checkpoint:
            self.checkpoint.restore(self.checkpoints.latest_checkpoint).assert_existing_objects_matched()
            self.state = RunState.from_json(self._state_text.numpy().decode())
            self.plateau.load_state(self.state.plateau)
            self.stopper.load_state(self.state.stopper)

    # -- checkpoints -----------------------------------------------------------------------------

    def save_checkpoint(self):
        self.state.plateau = self.plateau.state()
        self.state.stopper = self.stopper.state()
        self._state_text.assign(self.state.to_json())
        self.checkpoints.save(checkpoint_number=int(self.trainer.step.numpy()))

    # -- the loop --------------------------------------------------------------------------------

    def _print(self, text="", end="\n"):
        print(text, end=end, file=self.out, flush=True)

    def train(self):
        """Train to the end (or early stop) and return the results dict."""
        config = self.config
        summaries = Summaries(self.run_dir)
        self._backfill_summaries(summaries)
        show_progress = self.out.isatty()
        steps_per_loop = config.steps_per_loop or (
            PROGRESS_STEPS_PER_LOOP if show_progress else self.steps_per_epoch)
        batches = data_lib.training_batches(self.train_images, self.train_labels, config.batch_size,
                                            config.seed, start_step=int(self.trainer.step.numpy()),
                                            augment=self.augment)
        iterator = iter(batches)
        validation = data_lib.evaluation_batches(self.splits.validation_images,
                                                 self.splits.validation_labels)
        with _SignalGuard() as guard:
            while self.state.epochs_done < config.epochs and not self.state.stopped_early:
                self._train_epoch(iterator, steps_per_loop, show_progress, guard)
                self._end_epoch(validation, summaries)
                if guard.signum is not None:
                    self._interrupted(guard.signum)
        results = self._finish(summaries)
        summaries.close()
        return results

    def _train_epoch(self, iterator, steps_per_loop, show_progress, guard):
        epoch = self.state.epochs_done
        end_step = (epoch + 1) * self.steps_per_epoch
        started = time.perf_counter() - self.state.partial_epoch_seconds
        while (remaining := end_step - int(self.trainer.step.numpy())) > 0:
            self.trainer.train_loop(iterator, tf.constant(min(remaining, steps_per_loop)))
            bad_step = int(self.trainer.nonfinite_step.numpy())
            if bad_step >= 0:
                raise NonFiniteLoss(
                    f"loss is not finite at epoch {epoch + 1}, step {bad_step + 1} (global); "
                    f"the last good checkpoint is kept in {self.run_dir / 'checkpoints'}; "
                    "lower --learning-rate or use float32")
            if show_progress:
                self._progress(epoch, end_step - int(self.trainer.step.numpy()))
            if guard.signum is not None and remaining > steps_per_loop:
                self.state.partial_epoch_seconds = time.perf_counter() - started
                self.save_checkpoint()
                self._interrupted(guard.signum)
        self.state.partial_epoch_seconds = time.perf_counter() - started
        if show_progress:
            self._print("\r" + " " * 79 + "\r", end="")

    def _progress(self, epoch, remaining):
        done = self.steps_per_epoch - remaining
        width = 30
        filled = width * done // self.steps_per_epoch
        means = self.trainer.epoch_means()
        self._print(f"\repoch {epoch + 1:3d} [{'=' * filled}{'.' * (width - filled)}] "
                    f"{done}/{self.steps_per_epoch}  loss {means['loss']:.4f}  "
                    f"acc {means['accuracy']:.4f}", end="")

    def _interrupted(self, signum):
        name = signal.Signals(signum).name
        raise Interrupted(f"{name}: checkpoint saved at step {int(self.trainer.step.numpy())} in "
                          f"{self.run_dir}; continue with the same command plus "
                          f"--resume --run-name {self.run_dir.name} --logdir {self.run_dir.parent}",
                          128 + signum)

    def _end_epoch(self, validation, summaries):
        epoch = self.state.epochs_done
        train = self.trainer.epoch_means()
        with self.trainer.averaged_weights():
            val = self.trainer.evaluate(validation)
            penalty = float(l2_penalty(self.model.kernels, self.config.l2).numpy())
            val_loss = float(val["loss"].numpy()) + penalty  # what Keras reports as val_loss
            if self.config.early_stopping:
                self.state.stopped_early = self.stopper.update(val_loss)
                if self.stopper.improved_at(epoch):
                    for best, variable in zip(self.best_weights, self.model.variables):
                        best.assign(variable)
        learning_rate = self.trainer.learning_rate
        record = {"epoch": epoch + 1, "loss": train["loss"], "data_loss": train["data_loss"],
                  "l2_penalty": train["l2_penalty"], "accuracy": train["accuracy"],
                  "val_loss": val_loss, "val_data_loss": float(val["loss"].numpy()),
                  "val_accuracy": float(val["accuracy"].numpy()), "learning_rate": learning_rate,
                  "seconds": self.state.partial_epoch_seconds}
        if self.config.lr_schedule == "plateau":
            self.trainer.learning_rate = self.plateau.update(val_loss, learning_rate)
        self.state.history.append(record)
        self.state.epochs_done += 1
        self.state.partial_epoch_seconds = 0.0
        self.trainer.reset_epoch_sums()
        self.save_checkpoint()
        self._write_epoch_summaries(summaries, record)
        self._print(f"epoch {epoch + 1:3d}/{self.config.epochs}  loss {record['loss']:.4f} "
                    f"(data {record['data_loss']:.4f} + l2 {record['l2_penalty']:.4f})  "
                    f"acc {record['accuracy']:.4f}  val_loss {val_loss:.4f}  "
                    f"val_acc {record['val_accuracy']:.4f}  lr {learning_rate:.2e}  "
                    f"{record['seconds']:.2f}s")

    def _write_epoch_summaries(self, summaries, record, histograms=True):
        epoch = record["epoch"]
        summaries.scalars("train", epoch, {
            "loss": record["loss"], "data_loss": record["data_loss"],
            "l2_penalty": record["l2_penalty"], "accuracy": record["accuracy"],
            "learning_rate": record["learning_rate"], "epoch_seconds": record["seconds"]})
        summaries.scalars("validation", epoch, {
            "loss": record["val_loss"], "data_loss": record["val_data_loss"],
            "accuracy": record["val_accuracy"]})
        if histograms and self.config.histograms:
            summaries.histograms(epoch, self.model)
        summaries.flush()

    def _backfill_summaries(self, summaries):
        """After a resume: write the summaries of finished epochs that the event files lack."""
        if not self.state.history:
            return
        logged = logged_epochs(self.run_dir)
        last = self.state.history[-1]["epoch"]
        for record in self.state.history:
            if record["epoch"] not in logged:
                # Only the last finished epoch's weights are at hand for its histograms.
                self._write_epoch_summaries(summaries, record, histograms=record["epoch"] == last)

    def _finish(self, summaries):
        config = self.config
        history = self.state.history
        if config.early_stopping and self.stopper.best is not None:
            for best, variable in zip(self.best_weights, self.model.variables):
                variable.assign(best)
            best_epoch = self.stopper.best_epoch + 1
        else:
            best_epoch = len(history)
            self.trainer.use_averaged_weights()
        train = self.trainer.evaluate(data_lib.evaluation_batches(self.train_images, self.train_labels))
        validation = self.trainer.evaluate(data_lib.evaluation_batches(
            self.splits.validation_images, self.splits.validation_labels))
        test_batches = data_lib.evaluation_batches(self.splits.test_images, self.splits.test_labels)
        test = self.trainer.evaluate(test_batches)
        single_view = (self.trainer.evaluate(test_batches, single_view=True)
                       if config.test_time_flip else test)
        confusion = test["confusion"].numpy()
        per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
        epoch_seconds = [record["seconds"] for record in history]
        train_seconds = float(sum(epoch_seconds))
        results = {
            "experiment_config": config.to_dict(),
            "precision": self.precision,
            "test_accuracy": float(test["accuracy"].numpy()),
            "test_loss": float(test["loss"].numpy()),
            "validation_accuracy": float(validation["accuracy"].numpy()),
            "validation_loss": float(validation["loss"].numpy()),
            "train_accuracy": float(train["accuracy"].numpy()),
            # What the same weights score on the test set without test-time flipping.
            "test_accuracy_single_view": float(single_view["accuracy"].numpy()),
            "best_epoch": best_epoch,
            "epochs_run": len(history),
            "stopped_early": self.state.stopped_early,
            "train_seconds": train_seconds,
            "epoch_seconds": epoch_seconds,
            "samples_per_second": (len(self.train_labels) * len(history) / train_seconds
                                   if train_seconds else 0.0),
            "steps": int(self.trainer.step.numpy()),
            "weights_digest": weights_digest(self.model),
            "confusion_matrix": confusion.tolist(),
            "per_class_accuracy": dict(zip(data_lib.CLASS_NAMES, map(float, per_class))),
            "history": history,
        }
        final_step = max(len(history), 1)
        summaries.scalars("test", final_step, {"accuracy": results["test_accuracy"],
                                               "loss": results["test_loss"]})
        summaries.image("test", "confusion_matrix", report.confusion_image(confusion), final_step,
                        "rows: true class, columns: predicted, in the order of the class names")
        summaries.text("test", "confusion_matrix_table", report.confusion_markdown(confusion), final_step)
        grid, listing = report.mistakes_grid(
            self.splits.test_images, self.splits.test_labels, test["predictions"].numpy(),
            test["confidences"].numpy())
        summaries.image("test", "most_confident_mistakes", grid, final_step,
                        "row by row; the text most_confident_mistakes_list names their classes")
        # Distinct tags: TensorBoard's fast loader drops a tag written by two plugins.
        summaries.text("test", "most_confident_mistakes_list", listing, final_step)
        summaries.hparams(config.to_dict(), {
            "hparams/test_accuracy": results["test_accuracy"],
            "hparams/validation_accuracy": results["validation_accuracy"],
            "hparams/test_loss": results["test_loss"],
            "hparams/epochs_run": results["epochs_run"],
            "hparams/train_seconds": results["train_seconds"]}, final_step)
        summaries.flush()
        atomic_write_json(self.run_dir / "results.json", results)
        return results
