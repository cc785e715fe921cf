"""The speedrun: the least training time to 0.900 test accuracy on every seed.

A fixed budget, chosen on validation accuracy beforehand, never by looking at the test set: ZCA
whitening of the input (fitted in about half a second; counted as training time), a wide
two-layer MLP (1024-256) with batch norm, dropout and label smoothing, large batches (512) and a
short one-cycle schedule (1 epoch of linear warm-up, then a cosine decay to 0) over 5 epochs, in
the precision this machine computes fastest. Each seed is an ordinary run directory under
<logdir>/<name>/ (results.json reports train_seconds: the epochs' training steps plus the
whitening fit; validation and the final evaluation are not training).

--keras-reference also times the seed recipe (experiments.improved: 512-256-50, plateau LR
reduction, early stopping) with Keras model.fit, on the same seeds and machine: its training
time until its test accuracy first reaches 0.892 (the test set is evaluated after every epoch
for this, outside the timed part; validation is not counted either). Writes speedrun.json and
speedrun.md and prints the table. Re-running with the same --name continues an interrupted
speedrun (finished seeds are kept, an unfinished one resumes from its checkpoint).

    python -m experiments.speedrun [--seeds 3] [--keras-reference] [--help]
"""

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

from experiments.runs import add_study_arguments, study_overrides
from mlp.config import recipe

CONFIG = recipe(
    # model: whitened input, then 1024-256 with batch norm and dropout 0.2 after both blocks
    whitening="zca",
    whitening_epsilon=0.3,
    hidden_sizes=(1024, 256),
    initializer="he_normal",
    batch_norm=True,
    dropout=0.2,
    dropout_layers=2,
    l2=1e-4,
    # optimization: a fixed budget of 5 epochs; Adam at 5e-3 after 1 epoch of warm-up, cosine to 0
    epochs=5,
    batch_size=512,
    learning_rate=5e-3,
    lr_schedule="cosine",
    warmup_epochs=1.0,
    min_learning_rate=0.0,
    early_stopping=False,
    # unused with the cosine schedule and no early stopping
    plateau_factor=0.5,
    plateau_patience=2,
    plateau_min_delta=1e-4,
    plateau_cooldown=0,
    early_stopping_patience=6,
    early_stopping_min_delta=0.0,
    early_stopping_start_epoch=0,
    # flips and shifts did not pay in budgets this short (README)
    label_smoothing=0.1,
    augment_shift=0,
    augment_flip=False,
    augment_erase=0.0,
    ema_decay=0.0,
    test_time_flip=False,
    precision="auto",
    histograms=False,
)

TARGET = 0.900         # the speedrun's goal, on every seed
KERAS_TARGET = 0.892   # the seed recipe's own accuracy under model.fit


def keras_time_to_accuracy(config, splits, target, seed, out=sys.stdout):
    """Train `config`'s model (the seed recipe) with Keras model.fit as the recipe was written:
    Adam, ReduceLROnPlateau and EarlyStopping on validation loss. Returns {"seconds": training
    time until the test accuracy first reached `target` (None if it never did), "epochs",
    "test_accuracy": at that epoch (else the last), "epoch_seconds", "test_accuracies"}. The time is the epochs'
    training steps only: the validation passes and the per-epoch test evaluation are not
    counted."""
    import keras

    from experiments.benchmark import keras_model

    keras.utils.set_random_seed(seed)
    model = keras_model(config)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    record = {"seconds": None, "epochs": 0, "test_accuracy": None, "epoch_seconds": [],
              "test_accuracies": []}

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started, self.stopped = time.perf_counter(), None

        def on_test_begin(self, logs=None):  # fit's validation pass begins
            self.stopped = self.stopped or time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            record["epoch_seconds"].append((self.stopped or time.perf_counter()) - self.started)
            _, accuracy = self.model.evaluate(splits.test_images, splits.test_labels,
                                              batch_size=1000, verbose=0)
            record.update(epochs=epoch + 1, test_accuracy=float(accuracy))
            record["test_accuracies"].append(float(accuracy))
            print(f"    keras fit epoch {epoch + 1}: test {accuracy:.4f}, training "
                  f"{sum(record['epoch_seconds']):.1f}s", file=out, flush=True)
            if accuracy >= target:
                record["seconds"] = sum(record["epoch_seconds"])
                self.model.stop_training = True

    model.fit(splits.train_images, splits.train_labels, batch_size=config.batch_size,
              epochs=config.epochs, shuffle=True, verbose=0,
              validation_data=(splits.validation_images, splits.validation_labels),
              callbacks=[keras.callbacks.ReduceLROnPlateau(
                             factor=config.plateau_factor, patience=config.plateau_patience,
                             min_delta=config.plateau_min_delta, min_lr=config.min_learning_rate),
                         keras.callbacks.EarlyStopping(
                             patience=config.early_stopping_patience, restore_best_weights=True),
                         Clock()])
    return record


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
    keras = summary["keras_reference"]
    if keras:
        lines += ["", f"Keras model.fit of the seed recipe (experiments.improved) to "
                      f"{keras['target']:.3f} test accuracy, same seeds, same machine:", "",
                  "| seed | training s to target | epochs | test accuracy then |", "|---|---|---|---|"]
        for seed, run in zip(summary["seeds"], keras["runs"]):
            seconds = f"{run['seconds']:.2f}" if run["seconds"] is not None else "not reached"
            lines.append(f"| {seed} | {seconds} | {run['epochs']} | {run['test_accuracy']:.4f} |")
        if keras["speedup"]:
            lines += ["", f"Mean {keras['mean_seconds']:.1f} s against the speedrun's "
                          f"{summary['mean_train_seconds']:.1f} s: **{keras['speedup']:.1f}x** "
                          "less training time."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.speedrun", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default: 3)")
    parser.add_argument("--keras-reference", action="store_true",
                        help="also time Keras model.fit of the seed recipe to its 0.892 on the "
                             "same seeds (40-75 s each here)")
    parser.add_argument("--name", default=None,
                        help="the speedrun's directory under --logdir (default: speedrun-<time>); "
                             "the same name continues an interrupted speedrun")
    add_study_arguments(parser)
    parser.add_argument("--target", type=float, default=TARGET,
                        help=f"test accuracy every seed must reach (default: {TARGET}; other "
                             "values are for other data)")
    parser.add_argument("--keras-target", type=float, default=KERAS_TARGET,
                        help=f"the Keras reference's target (default: {KERAS_TARGET})")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.name is not None and (not args.name or "/" in args.name or args.name in (".", "..")):
        parser.error(f"--name must be a plain directory name, got {args.name!r}")

    from mlp.config import ConfigError, check_writable_dir

    overrides = study_overrides(args)
    name = args.name or f"speedrun-{time.strftime('%Y%m%d-%H%M%S')}"
    study_dir = Path(args.logdir) / name
    try:
        check_writable_dir(study_dir, "logdir")
        plan = [("speedrun", seed, dataclasses.replace(
                    CONFIG, seed=seed, logdir=str(study_dir), run_name=f"seed{seed}",
                    **overrides).validate())
                for seed in range(args.seeds)]
    except ConfigError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2

    from mlp.signals import Interrupted, SignalGuard

    with SignalGuard() as guard:
        try:
            return _speedrun(args, parser.prog, plan, study_dir, guard)
        except Interrupted as e:
            print(f"{parser.prog}: {e}", file=sys.stderr)
            return e.exit_code


def _speedrun(args, prog, plan, study_dir, guard):
    from experiments.runs import run_plan
    from mlp import data as data_lib
    from mlp.io import atomic_write_json, atomic_write_text
    from mlp.precision import cpu_model

    continue_with = f"the same command with --name {study_dir.name}"
    code, records = run_plan("speedrun", plan, study_dir, guard, continue_with)
    if code:
        return code
    runs = records.get("speedrun", [])
    if len(runs) < len(plan):
        print(f"{prog}: only {len(runs)} of {len(plan)} seeds finished (others in use by "
              f"another process); run {continue_with} later", file=sys.stderr)
        return 1
    reference = []
    if args.keras_reference:
        from experiments.improved import CONFIG as SEED_RECIPE

        config = plan[0][2]
        splits = data_lib.load(config.data_dir, config.verify_checksums, config.validation_size)
        for _, seed, _ in plan:
            guard.check("stopped during the Keras reference; the speedrun's runs are kept",
                        continue_with)
            print(f"keras reference, seed {seed}:", flush=True)
            reference.append(keras_time_to_accuracy(SEED_RECIPE, splits, args.keras_target, seed))
    summary = summarize(runs, reference, args.target, args.keras_target)
    summary["machine"] = cpu_model()
    table = markdown(summary, summary["machine"], [run["precision"] for run in runs])
    atomic_write_json(study_dir / "speedrun.json", summary)
    atomic_write_text(study_dir / "speedrun.md", table)
    print("\n" + table)
    print(f"wrote {study_dir / 'speedrun.json'} and speedrun.md")
    return 0


if __name__ == "__main__":
    from mlp.cli import exit_now

    exit_now(main())
