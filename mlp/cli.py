"""The command line every experiment shares: flags from the Config, the run directory, --resume,
and turning failures into one clear line and an exit code instead of a traceback.

Exit codes: 0 done (or nothing left to do), 1 the run failed (data, divergence, disk, a lost
worker), 2 bad arguments (or the run directory is in use), 130 / 143 stopped by SIGINT / SIGTERM
after saving a checkpoint.
"""

import argparse
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

from mlp.config import Config, ConfigError, add_arguments, check_writable_dir, from_arguments
from mlp.distribute import StrategyError, WorkerRole, worker_role
from mlp.io import RunInUse, RunLock, atomic_write_json, read_json
from mlp.signals import Interrupted, SignalGuard


def build_parser(name, defaults, description):
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description)
    add_arguments(parser, defaults)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run named by --run-name (default: this experiment's "
                             "latest run in --logdir) from its last checkpoint; flags you give must "
                             "agree with the saved config, the others are taken from it")
    return parser


def explicit_fields(parser, argv):
    """The Config fields given on the command line (not left at their defaults)."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"resume"}


def prepare_run_dir(name, config, resume, explicit, role=WorkerRole()):
    """Return (config, run_dir, finished) for a new run or a resumed one, or raise ConfigError.

    A new run's directory is made here (so two runs never get the same default name); a worker
    that is not the chief only reads: the chief makes and writes the run directory."""
    logdir = Path(config.logdir)
    if config.strategy == "multi_worker" and not config.run_name:
        raise ConfigError("--run-name: multi_worker runs need one, the same on every worker")
    if not resume:
        run_name = config.run_name or _new_run_name(logdir, name)
        run_dir = logdir / run_name
        if role.is_chief and (run_dir / "config.json").exists():
            raise ConfigError(f"--run-name: {run_dir} already holds a run; pass --resume to "
                              "continue it or choose another --run-name")
        return dataclasses.replace(config, run_name=run_name), run_dir, False
    if config.run_name:
        run_dir = logdir / config.run_name
    else:
        candidates = sorted((p for p in logdir.glob(f"{name}-*") if (p / "config.json").exists()),
                            key=lambda p: (p / "config.json").stat().st_mtime)
        if not candidates:
            raise ConfigError(f"--resume: no run of {name} in {logdir} to resume")
        run_dir = candidates[-1]
    if not (run_dir / "config.json").exists():
        raise ConfigError(f"--resume: no run to resume in {run_dir}")
    saved = read_json(run_dir / "config.json")
    if not isinstance(saved, dict):
        raise ConfigError(f"{run_dir / 'config.json'}: not a JSON object of settings; restore "
                          "it or start a new run")
    saved["run_name"] = run_dir.name
    given = config.to_dict()
    differ = [key for key in sorted(explicit) if key in Config().result_fields()
              and given[key] != saved.get(key)]
    if differ:
        details = ", ".join(f"--{key.replace('_', '-')} {given[key]} (saved: {saved.get(key)})"
                            for key in differ)
        raise ConfigError(f"--resume: the run in {run_dir} was made with other settings: "
                          f"{details}; resume with its settings or start a new run")
    merged = {**saved, **{key: given[key] for key in explicit if key in given}}
    merged["logdir"] = config.logdir
    return (Config.from_dict(merged, run_dir / "config.json"), run_dir,
            (run_dir / "results.json").exists())


def finished_line(run_dir):
    """What to say about a finished run (its results.json read strictly)."""
    results = read_json(run_dir / "results.json")
    accuracy = results.get("test_accuracy") if isinstance(results, dict) else None
    if not isinstance(accuracy, (int, float)):
        raise ConfigError(f"{run_dir / 'results.json'}: has no test_accuracy; it was edited or "
                          "damaged: restore it, or delete it and resume to report again")
    return f"{run_dir} already finished (test accuracy {accuracy:.4f}); nothing to resume"


def _new_run_name(logdir, name):
    """<name>-<timestamp>, with -2, -3, ... when runs start in the same second: the directory is
    made here, and mkdir fails for all but one of the processes that race for a name."""
    stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    logdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        run_name = stem if attempt == 1 else f"{stem}-{attempt}"
        try:
            (logdir / run_name).mkdir()
            return run_name
        except FileExistsError:
            continue
    raise ConfigError(f"--run-name: too many runs named {stem}* in {logdir}; choose a --run-name")


def claim(config, run_dir, resume, role):
    """Check the run directory can be written, lock it for this process (the chief's), and write
    a new run's config.json. Returns the lock, or None for a worker that is not the chief."""
    if not role.is_chief:
        return None
    check_writable_dir(run_dir, "logdir")
    try:
        lock = RunLock(run_dir)
    except RunInUse as e:
        raise ConfigError(str(e)) from None
    remove_leftovers(run_dir)
    if not resume:
        atomic_write_json(run_dir / "config.json", config.to_dict())
    return lock


def remove_leftovers(run_dir):
    """Temporary files a killed process left in the run directory (half-written JSON, a
    checkpoint's unfinished temporary shards). Only call it holding the run's lock."""
    leftovers = [*run_dir.glob(".*.tmp"), *(run_dir / "checkpoints").glob("*_temp*")]
    for path in leftovers:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def execute(name, config, run_dir, resume=False, role=WorkerRole(), strategy=None, splits=None,
            out=sys.stdout, continue_with=None):
    """Train and report one prepared run. Returns (exit code, results or None); failures are
    printed as one line on stderr (see the module docstring for the codes). `continue_with`
    says how to continue after an interruption (default: this run's --resume command)."""
    prog = f"python -m experiments.{name}"
    hint = f"--resume --run-name {run_dir.name} --logdir {run_dir.parent}"
    continue_with = continue_with or f"the same command plus {hint}"
    with SignalGuard() as guard:  # from here on, a signal is one line and a clean exit
        import tensorflow as tf

        from mlp.controller import CheckpointError, NonFiniteLoss
        from mlp.data import DataError
        from mlp.distribute import setup
        from mlp.experiment import train_and_report

        try:
            guard.check("stopped before training started", continue_with)
            strategy = strategy or setup(config)
            return 0, train_and_report(config, run_dir, strategy, resume=resume, splits=splits,
                                       out=out, role=role, name=name, resume_hint=continue_with)
        except (ConfigError, StrategyError) as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2, None
        except DataError as e:
            print(f"{prog}: data error: {e}", file=sys.stderr)
            return 1, None
        except NonFiniteLoss as e:
            print(f"{prog}: diverged: {e}", file=sys.stderr)
            return 1, None
        except CheckpointError as e:
            print(f"{prog}: cannot resume: {e}", file=sys.stderr)
            return 1, None
        except Interrupted as e:
            print(f"{prog}: {e}", file=sys.stderr)
            return e.exit_code, None
        except tf.errors.OpError as e:
            # What a collective raises when a peer died or stopped sending heartbeats.
            peer_errors = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                           tf.errors.CancelledError, tf.errors.AbortedError, tf.errors.InternalError)
            if config.strategy == "multi_worker" and isinstance(e, peer_errors):
                print(f"{prog}: lost another worker ({type(e).__name__}: {_peer_line(e)}); the "
                      f"last checkpoint is in {run_dir / 'checkpoints'}: start every worker "
                      f"again with {continue_with}", file=sys.stderr)
                return 1, None
            return _cannot_write(prog, e, run_dir), None
        except OSError as e:
            return _cannot_write(prog, e, run_dir), None


def _peer_line(error):
    """The line of a collective's error that says what happened to the peer."""
    lines = [line.strip() for line in (getattr(error, "message", "") or "").splitlines()]
    for marker in ("unhealthy", "timed out", "Deadline", "Connection", "aborted"):
        for line in lines:
            if marker in line:
                return line.split("] ")[-1][:200]
    return "a collective operation failed"


def _first_line(error):
    message = getattr(error, "message", None) or str(error)
    return message.splitlines()[0] if message else repr(error)


def _cannot_write(prog, error, run_dir):
    print(f"{prog}: cannot write: {_first_line(error)}; free space or fix permissions under "
          f"{run_dir}, then continue with --resume", file=sys.stderr)
    return 1


def main(name, defaults, description, argv=None):
    """Parse the command line, train, report. Returns the process exit code."""
    with SignalGuard() as guard:
        try:
            return _main(name, defaults, description, argv, guard)
        except Interrupted as e:
            print(f"python -m experiments.{name}: {e}", file=sys.stderr)
            return e.exit_code


def _main(name, defaults, description, argv, guard):
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(name, defaults, description)
    args = parser.parse_args(argv)
    explicit = explicit_fields(build_parser(name, defaults, description), argv)
    try:
        config = from_arguments(args)
        config.validate()  # the flags as given: a bad --run-name is refused before any reading
        role = worker_role(config.strategy)
        config, run_dir, finished = prepare_run_dir(name, config, args.resume, explicit, role)
        config.validate()  # again after merging a resumed run's saved config.json
        if finished:
            print(finished_line(run_dir))
            return 0
        guard.check("stopped before anything was written", "the same command")
        lock = claim(config, run_dir, args.resume, role)
    except (ConfigError, StrategyError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    code, results = execute(name, config, run_dir, args.resume, role)
    if lock:
        lock.release()
    if results is not None:
        print(f"done: {results['epochs_run']} epochs, best epoch {results['best_epoch']}; "
              f"accuracy train {results['train_accuracy']:.4f}, validation "
              f"{results['validation_accuracy']:.4f}, test {results['test_accuracy']:.4f}; "
              f"training {results['train_seconds']:.1f}s, this process "
              f"{time.perf_counter() - started:.1f}s; weights {results['weights_digest'][:16]}; "
              f"run dir {run_dir}")
    return code


class ToolError(Exception):
    """A tool cannot start; `exit_code` is 2 for bad arguments, 1 for missing or bad data."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def output_dir_and_data(logdir, prefix, data_dir):
    """For the tools (benchmark, profile): a fresh <logdir>/<prefix>-<timestamp>/ and the
    verified real data, or ToolError with the one line to print."""
    from mlp import data as data_lib

    out_dir = Path(logdir) / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        check_writable_dir(out_dir, "logdir")
        return out_dir, data_lib.load(data_dir)
    except ConfigError as e:
        raise ToolError(str(e), 2) from None
    except data_lib.DataError as e:
        raise ToolError(str(e), 1) from None


def run_experiment(name, defaults, description):
    exit_now(main(name, defaults, description))


def exit_now(code):
    """Exit with `code` once everything is written, without tearing down TensorFlow's runtime:
    its input-pipeline and collective threads can take minutes to join, and nothing is left for
    them to do."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
