"""The command line every experiment shares: one flag per Config field plus --resume, then the
run: its directory (mlp/run_directory.py), training and the report (mlp/run.py's
train_and_evaluate), and any failure as one line and an exit code (mlp/exits.py), applied once,
in `main`. The caller names itself: `prog` is how the user started it (e.g. "python -m
experiments.improved"), `name` the prefix of its runs' directory names.
"""

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from mlp import run_directory
from mlp.config import add_arguments, check_writable_dir, from_arguments
from mlp.distribute import WorkerRole, worker_role
from mlp.exits import from_tensorflow_error, run_guarded
from mlp.signals import SignalGuard


class Parser(argparse.ArgumentParser):
    """argparse's parser with one-line errors: argparse prints the whole usage before its error,
    forty lines for an experiment's flags, which hide the line that says what is wrong."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(prog, defaults, description):
    parser = Parser(prog=prog, description=description)
    add_arguments(parser, defaults)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run named by --run-name (default: this experiment's "
                             "latest run in --logdir) from its last checkpoint; flags you give "
                             "must agree with the saved config, the others are taken from it")
    return parser


def explicit_fields(parser, argv):
    """The Config fields given on the command line (not left at their defaults)."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"resume"}


def train_run(name, config, run_dir, resume=False, role=WorkerRole(), strategy=None, splits=None,
              out=None, continue_with=None, extra_records=(), labels=None):
    """Train and report one prepared run (mlp.run.train_and_evaluate) in `config.strategy`;
    returns the results. Raises what stops it: an error of mlp/exits.py (a TensorFlow error
    turned into one), Interrupted, or whatever an `extra_records` action raises; the caller's
    edge (`run_guarded`) prints it as one line. `out` takes the progress and epoch lines
    (default: stdout); `continue_with` says how to continue after an interruption (default:
    this run's --resume command); `extra_records` and `labels` are mlp.run.assemble's."""
    import tensorflow as tf

    from mlp.distribute import setup
    from mlp.run import train_and_evaluate

    hint = f"--resume --run-name {run_dir.name} --logdir {run_dir.parent}"
    continue_with = continue_with or f"the same command plus {hint}"
    try:
        return train_and_evaluate(
            config, run_dir, strategy or setup(config), resume=resume, splits=splits, out=out,
            role=role, name=name, resume_hint=continue_with, extra_records=extra_records,
            labels=labels)
    except (tf.errors.OpError, OSError) as error:
        raise from_tensorflow_error(error, config.strategy == "multi_worker", run_dir,
                                    continue_with) from None


def main(prog, name, defaults, description, argv=None, before_training=None):
    """Parse the command line, train, report. Returns the process exit code.

    `before_training(config, run_dir)`, if given, runs holding the run directory, after a new
    run's config.json is written and before the run trains (or resumes), and returns the config
    to train (experiments.distilled trains its teacher there)."""
    with SignalGuard() as guard:
        return run_guarded(prog, _main, prog, name, defaults, description, argv, guard,
                           before_training)


def _main(prog, name, defaults, description, argv, guard, before_training):
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(prog, defaults, description)
    args = parser.parse_args(argv)
    explicit = explicit_fields(build_parser(prog, defaults, description), argv)
    config = from_arguments(args)
    config.validate()  # the flags as given: a bad --run-name is refused before any reading
    role = worker_role(config.strategy)
    config, run_dir, finished = run_directory.prepare(name, config, args.resume, explicit, role)
    config.validate()  # again after merging a resumed run's saved config.json
    if finished:
        print(run_directory.finished_line(run_dir))
        return 0
    if not args.resume and config.kernels == "fused":
        from mlp import fused

        fused.resolve("fused")  # refused before the run directory holds anything
    guard.check("stopped before anything was written", "the same command")
    started = time.perf_counter()
    # The chief owns the run directory; the other workers of a multi-worker run only train.
    with run_directory.claim(run_dir) if role.is_chief else contextlib.nullcontext():
        if role.is_chief and not args.resume:
            run_directory.save_config(run_dir, config)
        if before_training is not None:
            config = before_training(config, run_dir)
        results = train_run(name, config, run_dir, args.resume, role)
    if results is not None:
        teacher = results.get("teacher")
        teacher_seconds = (f" (+ the teacher's {teacher['train_seconds']:.1f}s)"
                           if teacher and teacher.get("train_seconds") is not None else "")
        print(f"done: {results['epochs_run']} epochs, best epoch {results['best_epoch']}; "
              f"accuracy train {results['train_accuracy']:.4f}, validation "
              f"{results['validation_accuracy']:.4f}, test {results['test_accuracy']:.4f}; "
              f"training {results['train_seconds']:.1f}s{teacher_seconds}, this process "
              f"{time.perf_counter() - started:.1f}s; weights {results['weights_digest'][:16]}; "
              f"run dir {run_dir}")
    return 0


def output_dir_and_data(logdir, prefix, data_dir):
    """For the tools (benchmark, profile): a fresh <logdir>/<prefix>-<timestamp>/ and the
    verified real data; ConfigError or DataError otherwise."""
    from mlp import data as data_lib

    out_dir = Path(logdir) / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_writable_dir(out_dir, "logdir")
    return out_dir, data_lib.load(data_dir)


def run_experiment(prog, name, defaults, description):
    """The whole program of an experiment: main, then exit with its code."""
    exit_now(main(prog, name, defaults, description))


def exit_now(code):
    """Exit with `code` once everything is written, without tearing down TensorFlow's runtime:
    its input-pipeline and collective threads can take minutes to join, and nothing is left for
    them to do. Of the exit handlers this skips, the one that matters is done here: removing
    the Python sources autograph wrote to the temporary directory for this process's
    tf.functions."""
    for name, module in list(sys.modules.items()):
        if name.startswith("__autograph_generated_file"):
            try:
                os.remove(module.__file__)
            except (OSError, TypeError, AttributeError):
                pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
