"""The controller: Python between graph calls. It is given a trainer, its training stream and its
end-of-epoch actions, and owns only the cadence: steps per call, progress, interruption,
checkpoints, and the loop's state.

Order of work at the end of an epoch, chosen so that a kill at any moment loses nothing:
  decisions (validation, learning rate, early stopping with best weights; each an action)
  -> save the checkpoint -> records (summaries, the printed line; each an action).
A resumed run gives the records actions the finished epochs' history, so they can fill gaps.
"""

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from mlp.io import atomic_write_text
from mlp.signals import Interrupted, SignalGuard  # noqa: F401 (Interrupted: re-exported)

PROGRESS_STEPS_PER_LOOP = 50

# Training iterators kept until the process exits (see Controller's `keep_iterator`).
_KEPT_ITERATORS = []


class NonFiniteLoss(RuntimeError):
    """Training diverged; the message names the epoch and step."""


@dataclass
class RunState:
    """The loop's own state, saved inside every checkpoint as JSON."""
    epochs_done: int = 0
    stopped_early: bool = False
    history: list = field(default_factory=list)  # one dict per finished epoch
    partial_epoch_seconds: float = 0.0  # training time already spent in the unfinished epoch
    actions: dict = field(default_factory=dict)  # each decision action's state, by its name

    def to_json(self):
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))


class CheckpointError(RuntimeError):
    """No saved checkpoint of the run can be read; the message names the file."""


class Checkpoints:
    """One tf.train.Checkpoint of the trainer, the actions' variables and the loop's state, kept
    in `directory` (the last two). Under multi-worker training every worker saves (TensorFlow's
    rule); a worker that is not the chief writes into a temporary directory that it removes
    again, and restores from the chief's `directory`.

    Restoring does not trust the `checkpoint` index file (a damaged one would make TensorFlow
    see no checkpoint at all, and the run silently start again): it tries the ckpt-N files
    present, newest first, and falls back past damaged ones, saying so through `warn`.
    """

    def __init__(self, directory, is_chief=True, warn=None, **trackables):
        self.directory = Path(directory)
        self.is_chief = is_chief
        self.warn = warn or (lambda message: print(message, file=sys.stderr, flush=True))
        self.state_text = tf.Variable("", dtype=tf.string, trainable=False)
        self.checkpoint = tf.train.Checkpoint(run_state=self.state_text, **trackables)
        # Made now rather than at the first save, so no restore leaves a value waiting for it.
        self.checkpoint.save_counter  # noqa: B018
        self.manager = self._manager()

    def _manager(self):
        return tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=2)

    def saved(self):
        """The checkpoint prefixes present in the directory, newest first."""
        numbers = []
        for index in self.directory.glob("ckpt-*.index"):
            number = index.name[len("ckpt-"):-len(".index")]
            if number.isdigit():
                numbers.append(int(number))
        return [str(self.directory / f"ckpt-{number}") for number in sorted(numbers, reverse=True)]

    def restore(self):
        """The saved RunState, or None when nothing was saved yet; CheckpointError when
        checkpoints exist but none can be read."""
        candidates = self.saved()
        if not candidates:
            if (self.directory / "checkpoint").exists():
                raise CheckpointError(f"{self.directory / 'checkpoint'} names checkpoints but no "
                                      "checkpoint files are left; restore them or start a new run")
            return None
        failures = []
        for prefix in candidates:
            try:
                self.checkpoint.restore(prefix).assert_existing_objects_matched()
                state = RunState.from_json(self.state_text.numpy().decode())
            except Exception as error:  # a damaged file can fail in many ways; none is fatal yet
                failures.append((prefix, _reason(error)))
                continue
            for failed, reason in failures:
                self.warn(f"checkpoint {failed} is damaged ({reason}); continuing from the "
                          f"previous one, {prefix}")
            if self.is_chief and tf.train.latest_checkpoint(str(self.directory)) != prefix:
                # Point the index at what was restored, so saving and pruning go on from it.
                kept = [p for p in reversed(candidates) if p not in dict(failures)]
                times = [os.path.getmtime(f"{p}.index") for p in kept]
                atomic_write_text(self.directory / "checkpoint", "".join(
                    [f'model_checkpoint_path: "{Path(prefix).name}"\n']
                    + [f'all_model_checkpoint_paths: "{Path(p).name}"\n' for p in kept]
                    + [f"all_model_checkpoint_timestamps: {t}\n" for t in times]
                    + [f"last_preserved_timestamp: {min(times) - 1}\n"]))
                self.manager = self._manager()
            return state
        newest, reason = failures[0]
        raise CheckpointError(f"cannot read checkpoint {newest} ({reason}) nor any older one in "
                              f"{self.directory}; restore the files or start a new run")

    def save(self, state, number):
        self.state_text.assign(state.to_json())
        if self.is_chief:
            self.manager.save(checkpoint_number=number)
            return
        scratch = tempfile.mkdtemp(prefix="mlp-worker-checkpoint-")
        try:
            self.checkpoint.write(os.path.join(scratch, "ckpt"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _reason(error):
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    message = re.sub(r"\{\{[^}]*\}\}\s*", "", message).strip()  # TensorFlow's op-node prefix
    return message.splitlines()[0][:200] if message else type(error).__name__


class Controller:
    """Trains epoch after epoch until `epochs`, or until a decision action stops it.

    Args:
      trainer: a Trainer (train_loop, step, epoch sums, learning rate).
      batches: function start_step -> the training stream (a dataset, or a distributed one).
      steps_per_epoch, epochs: the epoch length in global steps, and the maximum epochs.
      checkpoints: a Checkpoints.
      decisions: actions called at the end of each epoch, in order, before the checkpoint:
        `end_of_epoch(epoch, record)` adds to the epoch's record dict and may set
        record["stop"]; each has a `name`, and `state()` / `load_state()` saved in checkpoints.
        They run with the trainer's averaged weights in the model (if it keeps any).
      records: actions called after the checkpoint: `end_of_epoch(epoch, record)`, and
        `resumed(history)` once before training continues a restored run.
      out: where progress and epoch lines go; a progress bar when it is a terminal.
      steps_per_loop: steps per graph call; 0: a whole epoch, or 50 with a progress bar.
      resume_hint: how to continue this run, for the interruption message (e.g. "the same
        command plus --resume").
      keep_iterator: never destroy the training iterator (multi-worker runs, which end the
        process without teardown): destroying a multi-worker distributed iterator was seen to
        block for a minute and more, while the other workers waited for this one in the final
        evaluation.
    """

    def __init__(self, trainer, batches, steps_per_epoch, epochs, checkpoints, decisions=(),
                 records=(), out=sys.stdout, steps_per_loop=0, resume_hint="the same command",
                 keep_iterator=False):
        self.trainer = trainer
        self.batches = batches
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.checkpoints = checkpoints
        self.decisions = list(decisions)
        self.records = list(records)
        self.out = out
        self.show_progress = out.isatty()
        self.steps_per_loop = steps_per_loop or (
            PROGRESS_STEPS_PER_LOOP if self.show_progress else steps_per_epoch)
        self.resume_hint = resume_hint
        self.keep_iterator = keep_iterator
        self.state = RunState()

    def restore(self):
        """Continue from the latest checkpoint, if there is one; True if there was."""
        state = self.checkpoints.restore()
        if state is None:
            return False
        self.state = state
        for action in self.decisions:
            action.load_state(state.actions.get(action.name))
        return True

    def save_checkpoint(self):
        self.state.actions = {action.name: action.state() for action in self.decisions}
        self.checkpoints.save(self.state, int(self.trainer.step.numpy()))

    def train(self):
        """Train to the end (or a stop); returns the RunState."""
        if self.state.history:
            for action in self.records:
                action.resumed(self.state.history)
        iterator = iter(self.batches(int(self.trainer.step.numpy())))
        if self.keep_iterator:
            _KEPT_ITERATORS.append(iterator)
        with SignalGuard() as guard:
            try:
                while self.state.epochs_done < self.epochs and not self.state.stopped_early:
                    self._train_epoch(iterator, guard)
                    self._end_epoch()
                    if guard.signum is not None:
                        self._interrupted(guard.signum)
            except Interrupted:
                # The process is about to end: do not let the input pipeline's teardown (its
                # threads) stand between the saved checkpoint and the exit.
                _KEPT_ITERATORS.append(iterator)
                raise
        return self.state

    def _train_epoch(self, iterator, guard):
        epoch = self.state.epochs_done
        end_step = (epoch + 1) * self.steps_per_epoch
        started = time.perf_counter() - self.state.partial_epoch_seconds
        while (remaining := end_step - int(self.trainer.step.numpy())) > 0:
            self.trainer.train_loop(iterator, tf.constant(min(remaining, self.steps_per_loop)))
            bad_step = int(self.trainer.nonfinite_step.numpy())
            if bad_step >= 0:
                raise NonFiniteLoss(
                    f"loss is not finite at epoch {epoch + 1}, step {bad_step + 1} (global); "
                    f"the last good checkpoint is kept in {self.checkpoints.directory}; "
                    "lower --learning-rate or use float32")
            if self.show_progress:
                self._progress(epoch, end_step - int(self.trainer.step.numpy()))
            if guard.signum is not None and remaining > self.steps_per_loop:
                self.state.partial_epoch_seconds = time.perf_counter() - started
                self.save_checkpoint()
                self._interrupted(guard.signum)
        self.state.partial_epoch_seconds = time.perf_counter() - started
        if self.show_progress:
            self._print("\r" + " " * 79 + "\r", end="")

    def _end_epoch(self):
        epoch = self.state.epochs_done
        record = {"epoch": epoch + 1, **self.trainer.epoch_means(),
                  "learning_rate": self.trainer.learning_rate,
                  "seconds": self.state.partial_epoch_seconds}
        with self.trainer.averaged_weights():
            for action in self.decisions:
                action.end_of_epoch(epoch, record)
        self.state.stopped_early = bool(record.pop("stop", False))
        self.state.history.append(record)
        self.state.epochs_done += 1
        self.state.partial_epoch_seconds = 0.0
        self.trainer.reset_epoch_sums()
        self.save_checkpoint()
        for action in self.records:
            action.end_of_epoch(epoch, record)

    def _print(self, text="", end="\n"):
        print(text, end=end, file=self.out, flush=True)

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
                          f"{self.checkpoints.directory}; continue with {self.resume_hint}",
                          128 + signum)


# -- decision actions -----------------------------------------------------------------------------

class Validate:
    """Evaluates the validation set: record["val_loss"] (with the L2 term, as Keras's val_loss),
    "val_data_loss" and "val_accuracy"."""
    name = "validate"

    def __init__(self, evaluator, batches):
        self.evaluator = evaluator
        self.batches = batches

    def end_of_epoch(self, epoch, record):
        val = self.evaluator.evaluate(self.batches)
        record.update(val_loss=float(val["loss_with_l2"].numpy()),
                      val_data_loss=float(val["loss"].numpy()),
                      val_accuracy=float(val["accuracy"].numpy()))

    def state(self):
        return None

    def load_state(self, state):
        pass


class ReduceLROnPlateau:
    """Sets the trainer's learning rate from a PlateauLRReducer fed record["val_loss"]."""
    name = "plateau"

    def __init__(self, trainer, reducer):
        self.trainer = trainer
        self.reducer = reducer

    def end_of_epoch(self, epoch, record):
        self.trainer.learning_rate = self.reducer.update(record["val_loss"],
                                                         record["learning_rate"])

    def state(self):
        return self.reducer.state()

    def load_state(self, state):
        self.reducer.load_state(state)


class EarlyStopping:
    """Feeds record["val_loss"] to an EarlyStopper, keeps a copy of the best epoch's weights
    (checkpointed as `best_weights`), sets record["stop"], and `restore_best()` at the end."""
    name = "stopper"

    def __init__(self, model, stopper):
        self.model = model
        self.stopper = stopper
        self.best_weights = [tf.Variable(v, trainable=False) for v in model.variables]

    def end_of_epoch(self, epoch, record):
        record["stop"] = self.stopper.update(record["val_loss"])
        if self.stopper.improved_at(epoch):
            for best, variable in zip(self.best_weights, self.model.variables):
                best.assign(variable)

    def restore_best(self):
        """Put the best epoch's weights in the model; returns that epoch (from 1), or None if no
        epoch was evaluated."""
        if self.stopper.best is None:
            return None
        for best, variable in zip(self.best_weights, self.model.variables):
            variable.assign(best)
        return self.stopper.best_epoch + 1

    def state(self):
        return self.stopper.state()

    def load_state(self, state):
        self.stopper.load_state(state)


# -- record actions -------------------------------------------------------------------------------

class PrintEpoch:
    """One line per epoch."""

    def __init__(self, epochs, out=sys.stdout):
        self.epochs = epochs
        self.out = out

    def end_of_epoch(self, epoch, record):
        print(f"epoch {epoch + 1:3d}/{self.epochs}  loss {record['loss']:.4f} "
              f"(data {record['data_loss']:.4f} + l2 {record['l2_penalty']:.4f})  "
              f"acc {record['accuracy']:.4f}  val_loss {record['val_loss']:.4f}  "
              f"val_acc {record['val_accuracy']:.4f}  lr {record['learning_rate']:.2e}  "
              f"{record['seconds']:.2f}s", file=self.out, flush=True)

    def resumed(self, history):
        pass


class EpochSummaries:
    """Each epoch's scalars (train/, validation/) and weight histograms in TensorBoard. After a
    resume it writes the finished epochs that the event files lack."""

    def __init__(self, summaries, model, histograms=True):
        self.summaries = summaries
        self.model = model
        self.histograms = histograms

    def end_of_epoch(self, epoch, record, histograms=True):
        step = record["epoch"]
        self.summaries.scalars("train", step, {
            "loss": record["loss"], "data_loss": record["data_loss"],
            "l2_penalty": record["l2_penalty"], "accuracy": record["accuracy"],
            "learning_rate": record["learning_rate"], "epoch_seconds": record["seconds"]})
        self.summaries.scalars("validation", step, {
            "loss": record["val_loss"], "data_loss": record["val_data_loss"],
            "accuracy": record["val_accuracy"]})
        if histograms and self.histograms:
            self.summaries.histograms(step, self.model.histogram_variables())
        self.summaries.flush()

    def resumed(self, history):
        from mlp.summaries import logged_epochs

        logged = logged_epochs(self.summaries.run_dir)
        last = history[-1]["epoch"]
        for record in history:
            if record["epoch"] not in logged:
                # Only the last finished epoch's weights are at hand for its histograms.
                self.end_of_epoch(record["epoch"] - 1, record, histograms=record["epoch"] == last)
