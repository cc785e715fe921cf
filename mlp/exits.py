"""How a program of this repo ends when something goes wrong: one line on stderr naming what is
wrong and what to do, and an exit code, from one table that every entry point uses
(`run_guarded`). No TensorFlow here, so a command line can be checked before it loads.

Exit codes: 0 done (or nothing left to do); 1 the run failed (data, divergence, an unreadable
checkpoint, disk, a lost worker); 2 bad arguments, or the run directory is in use; 128 + N
stopped by signal N (130 SIGINT, 143 SIGTERM) after saving what there was to save.
"""

import sys

from mlp.config import ConfigError
from mlp.distribute import StrategyError
from mlp.lock import DirectoryInUse
from mlp.signals import Interrupted


class DataError(Exception):
    """The data is missing or not what it should be; the message says which file and why."""


class NonFiniteLoss(RuntimeError):
    """Training diverged; the message names the epoch and step."""


class CheckpointError(RuntimeError):
    """No saved checkpoint of the run can be read; the message names the file."""


class LostWorker(RuntimeError):
    """Another worker of a multi-worker run died or stopped answering."""


class CannotWrite(RuntimeError):
    """A file of the run could not be written (disk full, permissions)."""


class RunFailed(RuntimeError):
    """TensorFlow failed for another reason (out of memory, say); the message is its own."""


# What went wrong -> (exit code, the words that start the line after the program's name).
EXITS = {
    ConfigError: (2, "error"),
    StrategyError: (2, "error"),
    DirectoryInUse: (2, "error"),
    DataError: (1, "data error"),
    NonFiniteLoss: (1, "diverged"),
    CheckpointError: (1, "cannot resume"),
    LostWorker: (1, "lost another worker"),
    CannotWrite: (1, "cannot write"),
    RunFailed: (1, "failed"),
}
HANDLED = (*EXITS, Interrupted)


def exit_code(prog, error):
    """Print `error`'s one line on stderr and return its exit code (`error` one of HANDLED)."""
    if isinstance(error, Interrupted):
        code, line = error.exit_code, str(error)
    else:
        code, words = next(entry for kind, entry in EXITS.items() if isinstance(error, kind))
        line = f"{words}: {error}"
    print(f"{prog}: {line}", file=sys.stderr, flush=True)
    return code


def run_guarded(prog, function, *args, **kwargs):
    """`function(*args, **kwargs)`, or the exit code of the HANDLED error it raised (its line
    printed)."""
    try:
        return function(*args, **kwargs)
    except HANDLED as error:
        return exit_code(prog, error)


def from_tensorflow_error(error, multi_worker, run_dir, continue_with):
    """The HANDLED error a TensorFlow OpError or OSError of a running run stands for: under
    multi-worker training, what collectives raise when a peer died or stopped sending heartbeats
    is a lost worker; an OSError failed to write the run's files (the checkpoints say so
    themselves, mlp/checkpointing.py); any other TensorFlow error is reported as it is."""
    import tensorflow as tf

    peer_errors = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                   tf.errors.CancelledError, tf.errors.AbortedError, tf.errors.InternalError)
    if multi_worker and isinstance(error, peer_errors):
        return LostWorker(f"{type(error).__name__}: {_peer_line(error)}; the last checkpoint is "
                          f"in {run_dir / 'checkpoints'}: start every worker again with "
                          f"{continue_with}")
    if isinstance(error, OSError):
        return CannotWrite(f"{_first_line(error)}; free space or fix permissions under "
                           f"{run_dir}, then continue with --resume")
    return RunFailed(f"{type(error).__name__}: {_first_line(error)}; the last checkpoint is in "
                     f"{run_dir / 'checkpoints'}: continue with {continue_with}")


def _peer_line(error):
    """The line of a collective's error that says what happened to the peer."""
    lines = [line.strip() for line in (getattr(error, "message", "") or "").splitlines()]
    for marker in ("unhealthy", "timed out", "Deadline", "Connection", "aborted"):
        for line in lines:
            if marker in line:
                return line.split("] ")[-1][:200]
    return "a collective operation failed"


def _first_line(error):
    """The first line of an error's message that says what went wrong. An error raised inside a
    tf.function opens with "Graph execution error:" and where the failing op was defined; its
    cause comes after them."""
    message = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in message.splitlines()]
    if lines[:1] == ["Graph execution error:"]:
        lines = [line for line in lines[1:]
                 if line and not line.startswith(("Detected at node", "File ", "[["))] or lines
    return (lines or [repr(error)])[0]
