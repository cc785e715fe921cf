"""The command line every experiment shares: flags from the Config, the run directory, --resume,
and turning failures into one clear line and an exit code instead of a traceback.

Exit codes: 0 done (or nothing left to do), 1 the run failed (data, divergence, disk),
2 bad arguments, 130 / 143 stopped by SIGINT / SIGTERM after saving a checkpoint.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from mlp.config import Config, ConfigError, add_arguments, check_writable_dir, from_arguments
from mlp.io import atomic_write_json


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


def prepare_run_dir(name, config, resume, explicit):
    """Return (config, run_dir, finished) for a new run or a resumed one, or raise ConfigError."""
    logdir = Path(config.logdir)
    if not resume:
        run_name = config.run_name or f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = logdir / run_name
        if (run_dir / "config.json").exists():
            raise ConfigError(f"--run-name: {run_dir} already holds a run; pass --resume to "
                              "continue it or choose another --run-name")
        config = dataclasses.replace(config, run_name=run_name)
        return config, run_dir, False
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
    saved = json.loads((run_dir / "config.json").read_text())
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
    merged["hidden_sizes"] = tuple(merged["hidden_sizes"])
    merged["logdir"] = config.logdir
    return Config(**merged), run_dir, (run_dir / "results.json").exists()


def main(name, defaults, description, argv=None):
    """Parse the command line, train, report. Returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(name, defaults, description)
    args = parser.parse_args(argv)
    explicit = explicit_fields(build_parser(name, defaults, description), argv)
    prog = parser.prog
    try:
        config = from_arguments(args)
        config, run_dir, finished = prepare_run_dir(name, config, args.resume, explicit)
        config.validate()
        if finished:
            results = json.loads((run_dir / "results.json").read_text())
            print(f"{run_dir} already finished (test accuracy {results['test_accuracy']:.4f}); "
                  "nothing to resume")
            return 0
        check_writable_dir(run_dir, "logdir")
        if not args.resume:
            atomic_write_json(run_dir / "config.json", config.to_dict())
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2

    import tensorflow as tf  # only now: bad arguments are answered without waiting for it

    from mlp.data import DataError
    from mlp.run import Interrupted, NonFiniteLoss, Run

    try:
        started = time.perf_counter()
        run = Run(config, run_dir, resume=args.resume)
        verb = "resuming" if args.resume and run.state.history else "training"
        print(f"{verb} {name} -> {run_dir} ({run.precision}, {len(run.train_labels)} training "
              f"images, {run.steps_per_epoch} steps per epoch)", flush=True)
        results = run.train()
    except DataError as e:
        print(f"{prog}: data error: {e}", file=sys.stderr)
        return 1
    except NonFiniteLoss as e:
        print(f"{prog}: diverged: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return e.exit_code
    except (OSError, tf.errors.OpError) as e:
        message = getattr(e, "message", None) or str(e)
        print(f"{prog}: cannot write: {message.splitlines()[0] if message else e!r}; free space or "
              f"fix permissions under {run_dir}, then continue with --resume", file=sys.stderr)
        return 1
    print(f"done: {results['epochs_run']} epochs, best epoch {results['best_epoch']}; accuracy "
          f"train {results['train_accuracy']:.4f}, validation {results['validation_accuracy']:.4f}, "
          f"test {results['test_accuracy']:.4f}; training {results['train_seconds']:.1f}s, this "
          f"process {time.perf_counter() - started:.1f}s; run dir {run_dir}")
    return 0


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
    sys.exit(main(name, defaults, description))
