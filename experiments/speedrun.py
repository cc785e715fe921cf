"""The speedrun: the least training time to 0.900 test accuracy on every seed.

A fixed budget, chosen on validation accuracy beforehand, never by looking at the test set: ZCA
whitening of the input (its fitting counted as training time), a wide
two-layer MLP (1024-256) with batch norm, dropout and label smoothing, large batches (512) and a
short one-cycle schedule (1 epoch of linear warm-up, then a cosine decay to 0) over 5 epochs, in
the precision this machine computes fastest. Each seed is an ordinary run directory under
<logdir>/<name>/ (results.json reports train_seconds: the epochs' training steps plus the
whitening fit; validation and the final evaluation are not training).

--keras-reference also times the seed recipe (experiments.improved: 512-256-50, plateau LR
reduction, early stopping) with Keras model.fit, on the same seeds and machine: its training
time until its test accuracy first reaches 0.892 (the test set is evaluated after every epoch
for this, outside the timed part; validation is not counted either). Writes speedrun.json and
speedrun.md and prints the table. Re-running with the same --study-name continues an interrupted
speedrun (finished seeds are kept, an unfinished one resumes from its checkpoint).

    python -m experiments.speedrun [--seeds 3] [--keras-reference] [--help]
"""

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

from experiments.recipes import IMPROVED, SPEEDRUN
from experiments.study import (add_study_arguments, add_study_name_argument, correct_on_test,
                               refuse_renamed_flags, study_overrides)
from mlp.cli import Parser
from mlp.significance import binomial_half_width

PROG = "python -m experiments.speedrun"
TARGET = 0.900         # the speedrun's goal, on every seed
KERAS_TARGET = 0.892   # the seed recipe's own accuracy under model.fit


def summarize(runs, reference, target, keras_target):
    """The speedrun's figures: per seed and overall, and the ratio to the Keras reference."""
    times = [run["train_seconds"] for run in runs]
    summary = {
        "target": target, "seeds": [run["seed"] for run in runs], "runs": runs,
        "every_seed_reached_target": all(run["test_accuracy"] >= target for run in runs),
        "mean_test_accuracy": statistics.fmean(run["test_accuracy"] for run in runs),
        "mean_train_seconds": statistics.fmean(times), "max_train_seconds": max(times),
        "keras_reference": None,
    }
    if reference:
        reached = [r["seconds"] for r in reference if r["seconds"] is not None]
        mean = statistics.fmean(reached) if len(reached) == len(reference) else None
        summary["keras_reference"] = {
            "target": keras_target, "runs": reference, "mean_seconds": mean,
            "speedup": mean / summary["mean_train_seconds"] if mean else None}
    return summary


def markdown(summary, machine, precisions):
    lines = [f"Speedrun to {summary['target']:.3f} test accuracy, {machine}, precision "
             f"{'/'.join(sorted(set(precisions)))}, {time.strftime('%Y-%m-%d')}.", "",
             "| seed | test accuracy | reached | training s | of which whitening s | epochs |",
             "|---|---|---|---|---|---|"]
    for run in summary["runs"]:
        lines.append(f"| {run['seed']} | {run['test_accuracy']:.4f} | "
                     f"{'yes' if run['test_accuracy'] >= summary['target'] else 'NO'} | "
                     f"{run['train_seconds']:.2f} | {run['whitening_seconds']:.2f} | "
                     f"{run['epochs_run']} |")
    lines.append(f"| mean | {summary['mean_test_accuracy']:.4f} | "
                 f"{'every seed' if summary['every_seed_reached_target'] else 'NOT every seed'}"
                 f" | {summary['mean_train_seconds']:.2f} | | |")
    examples = next((len(correct) for run in summary["runs"]
                     if (correct := correct_on_test(run)) is not None), None)
    if examples:
        half = binomial_half_width(summary["mean_test_accuracy"], examples)
        lines += ["", f"Test-set sampling error: ±{half * 100:.2f} pt (95%, binomial, "
                      f"{examples} test images at the mean accuracy)."]
    keras = summary["keras_reference"]
    if keras:
        lines += ["", f"Keras model.fit of the seed recipe (experiments.improved) to "
                      f"{keras['target']:.3f} test accuracy, same seeds, same machine:", "",
                  "| seed | training s to target | epochs | test accuracy then |",
                  "|---|---|---|---|"]
        for seed, run in zip(summary["seeds"], keras["runs"]):
            seconds = f"{run['seconds']:.2f}" if run["seconds"] is not None else "not reached"
            lines.append(f"| {seed} | {seconds} | {run['epochs']} | {run['test_accuracy']:.4f} |")
        if keras["speedup"]:
            lines += ["", f"Mean {keras['mean_seconds']:.1f} s against the speedrun's "
                          f"{summary['mean_train_seconds']:.1f} s: **{keras['speedup']:.1f}x** "
                          "less training time."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = Parser(prog=PROG, description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    parser.add_argument("--keras-reference", action="store_true",
                        help="also time Keras model.fit of the seed recipe to its 0.892 on the "
                             "same seeds (about ten times the speedrun's time)")
    add_study_name_argument(parser, "speedrun-<time>")
    refuse_renamed_flags(parser, {"--name": "--study-name NAME"})
    add_study_arguments(parser)
    parser.add_argument("--target", type=float, default=TARGET,
                        help=f"test accuracy every seed must reach (default: {TARGET}; other "
                             "values are for other data)")
    parser.add_argument("--keras-target", type=float, default=KERAS_TARGET,
                        help=f"the Keras reference's target (default: {KERAS_TARGET})")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    from mlp.exits import run_guarded
    from mlp.signals import SignalGuard

    with SignalGuard() as guard:
        return run_guarded(PROG, _speedrun, args, guard)


def plan_speedrun(args):
    """(the speedrun's directory, [("speedrun", seed, config), ...]); ConfigError for settings
    no run can take."""
    from mlp.config import check_writable_dir

    overrides = study_overrides(args)
    name = args.study_name or f"speedrun-{time.strftime('%Y%m%d-%H%M%S')}"
    study_dir = Path(args.logdir) / name
    check_writable_dir(study_dir, "logdir")
    plan = [("speedrun", seed, dataclasses.replace(
                SPEEDRUN, seed=seed, logdir=str(study_dir), run_name=f"seed{seed}",
                **overrides).validate())
            for seed in range(args.seeds)]
    return study_dir, plan


def _speedrun(args, guard):
    from experiments.study import run_plan
    from mlp import data as data_lib
    from mlp.io import atomic_write_json, atomic_write_text
    from mlp.machine import cpu_name

    study_dir, plan = plan_speedrun(args)
    continue_with = f"the same command with --study-name {study_dir.name}"
    code, records = run_plan(PROG, "speedrun", plan, study_dir, guard, continue_with)
    if code:
        return code
    runs = records.get("speedrun", [])
    if len(runs) < len(plan):
        print(f"{PROG}: only {len(runs)} of {len(plan)} seeds finished (others in use by "
              f"another process); run {continue_with} later", file=sys.stderr)
        return 1
    reference = []
    if args.keras_reference:
        from experiments.keras_reference import keras_time_to_accuracy

        config = plan[0][2]
        splits = data_lib.load(config.data_dir, config.verify_checksums, config.validation_size)
        for _, seed, _ in plan:
            guard.check("stopped during the Keras reference; the speedrun's runs are kept",
                        continue_with)
            print(f"keras reference, seed {seed}:", flush=True)
            reference.append(keras_time_to_accuracy(IMPROVED, splits, args.keras_target, seed))
    summary = summarize(runs, reference, args.target, args.keras_target)
    summary["machine"] = cpu_name()
    table = markdown(summary, summary["machine"], [run["precision"] for run in runs])
    atomic_write_json(study_dir / "speedrun.json", summary)
    atomic_write_text(study_dir / "speedrun.md", table)
    print("\n" + table)
    print(f"wrote {study_dir / 'speedrun.json'} and speedrun.md")
    return 0


if __name__ == "__main__":
    from mlp.cli import exit_now

    exit_now(main())
