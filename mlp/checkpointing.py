"""Checkpoints of a run: the trainer, the actions' variables and the loop's own state in one
tf.train.Checkpoint, kept by a tf.train.CheckpointManager; restoring falls back past damaged
files instead of silently starting again.
"""

import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from mlp.exits import CannotWrite, CheckpointError
from mlp.io import atomic_write_text

# What TensorFlow raises when a file cannot be written (not a full list of its errors: a lost
# peer's, for one, must reach the multi-worker handling as it is).
WRITE_ERRORS = (tf.errors.FailedPreconditionError, tf.errors.PermissionDeniedError,
                tf.errors.NotFoundError, tf.errors.ResourceExhaustedError,
                tf.errors.DataLossError, tf.errors.UnknownError)


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


class Checkpoints:
    """One tf.train.Checkpoint of the trainer, the actions' variables and the loop's state, kept
    in `directory` (the last two). Under multi-worker training every worker saves (TensorFlow's
    rule); a worker that is not the chief writes into a temporary directory that it removes
    again, and restores from the chief's `directory`.

    Restoring does not trust the `checkpoint` index file (a damaged one would make TensorFlow
    see no checkpoint at all, and the run silently start again): it tries the ckpt-N files
    present, newest first, and falls back past damaged ones, saying so through `warn`. The
    newest may also be a save the process was killed in (TensorFlow writes ckpt-N.index in
    place); the `checkpoint` file tells that apart from damage, and when it was the first save
    the run starts from the beginning.
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
                # Every object given here must be in the file; the file may hold more (a reader
                # such as mlp/saved_model.py asks for the model's weights only).
                self.checkpoint.restore(prefix).expect_partial().assert_existing_objects_matched()
                state = RunState.from_json(self.state_text.numpy().decode())
            except Exception as error:  # a damaged file can fail in many ways; none is fatal yet
                failures.append((prefix, _reason(error)))
                continue
            for failed, reason in failures:
                self.warn(self._unreadable(failed, reason, f"continuing from the previous one, "
                                                           f"{prefix}"))
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
        if len(failures) == 1 and self._unfinished(newest):
            self.warn(self._unreadable(newest, reason, "starting from the beginning"))
            return None
        raise CheckpointError(f"cannot read checkpoint {newest} ({reason}) nor any older one in "
                              f"{self.directory}; restore the files or start a new run")

    def _unfinished(self, prefix):
        """Whether `prefix`, the newest checkpoint here, is a save that never ended: the
        manager records a save in the `checkpoint` file only once its files are whole, so it is
        one when that file names an older checkpoint as the latest, or does not exist yet (the
        first save). A `checkpoint` file that cannot be read proves nothing."""
        index = self.directory / "checkpoint"
        if not index.exists():
            return True
        latest = re.search(r'^model_checkpoint_path: "(?:.*/)?ckpt-(\d+)"$',
                           index.read_text(errors="replace"), re.MULTILINE)
        return latest is not None and int(latest.group(1)) < _number(prefix)

    def _unreadable(self, prefix, reason, then):
        """What a restore says of a checkpoint it cannot read, and what it does instead."""
        if prefix == self.saved()[0] and self._unfinished(prefix):
            return (f"checkpoint {prefix} was never finished (the process ended while writing "
                    f"it: {reason}); {then}")
        return f"checkpoint {prefix} is damaged ({reason}); {then}"

    def save(self, state, number):
        """Save `state` and the trackables as checkpoint `number`; CannotWrite when the files
        cannot be written (what a lost peer raises passes through)."""
        self.state_text.assign(state.to_json())
        try:
            if self.is_chief:
                self.manager.save(checkpoint_number=number)
                return
            scratch = tempfile.mkdtemp(prefix="mlp-worker-checkpoint-")
            try:
                self.checkpoint.write(os.path.join(scratch, "ckpt"))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        except (OSError, *WRITE_ERRORS) as error:
            raise CannotWrite(f"{self.directory}: {_reason(error)}; free space or fix "
                              "permissions, then continue with --resume") from None


def _number(prefix):
    return int(Path(prefix).name[len("ckpt-"):])


def _reason(error):
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    message = re.sub(r"\{\{[^}]*\}\}\s*", "", message).strip()  # TensorFlow's op-node prefix
    return message.splitlines()[0][:200] if message else type(error).__name__
