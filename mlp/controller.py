"""The controller: Python between graph calls. It is given a trainer, its training stream, its
end-of-epoch actions (mlp/actions/) and its checkpoints (mlp/checkpointing.py), and owns only
the cadence: steps per call, progress, interruption, and when the actions run and the checkpoint
is saved.

Order of work at the end of an epoch, chosen so that a kill at any moment loses nothing:
  decisions (validation, learning rate, early stopping with best weights; each an action)
  -> save the checkpoint -> records (summaries, the printed line; each an action).
A resumed run gives the records actions the finished epochs' history, so they can fill gaps.
"""

import signal
import sys
import time

import tensorflow as tf

from mlp.checkpointing import RunState
from mlp.exits import NonFiniteLoss
from mlp.signals import Interrupted, SignalGuard

PROGRESS_STEPS_PER_LOOP = 50

# Training iterators kept until the process exits (see Controller's `keep_iterator`).
_KEPT_ITERATORS = []


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
      out: where progress lines go (default: stdout); a progress bar when it is a terminal.
      steps_per_loop: steps per graph call; 0: a whole epoch, or 50 with a progress bar.
      resume_hint: how to continue this run, for the interruption message (e.g. "the same
        command plus --resume").
      keep_iterator: never destroy the training iterator (multi-worker runs, which end the
        process without teardown): destroying a multi-worker distributed iterator was seen to
        block for a minute and more, while the other workers waited for this one in the final
        evaluation.
    """

    def __init__(self, trainer, batches, steps_per_epoch, epochs, checkpoints, decisions=(),
                 records=(), out=None, steps_per_loop=0, resume_hint="the same command",
                 keep_iterator=False):
        self.trainer = trainer
        self.batches = batches
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.checkpoints = checkpoints
        self.decisions = list(decisions)
        self.records = list(records)
        self.out = out or sys.stdout
        self.show_progress = self.out.isatty()
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
                    "start a new run with a lower --learning-rate, or with --precision float32")
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
