"""Evaluate finished runs again with other test-time views: the recipe's own views (the image, its
mirror if the recipe flips at test time, and their shifted copies if it has test-time shifts),
against the same with copies shifted by 1 to --shifts pixels up, down, left and right instead
(0: none), and without the mirror under --no-flip, the class probabilities averaged over all of
them (mlp.augment.evaluation_views). Nothing is trained; the weights are the ones each run's
results.json reports.

    python -m experiments.test_time_views RUN_DIR... [--split validation|test] [--shifts N]
        [--no-flip] [--write DIR]

Choose on --split validation; the test split is for reading once. --write DIR keeps each run
evaluated again with the other views as a run directory DIR/<run> (results.json and
test_predictions.npz, its training figures the run's own), which `python -m experiments.results
collect` records like a trained run: what a test-time view adds, paired seed for seed on the
same weights.
"""

import argparse
import shutil
import sys
from pathlib import Path

from mlp.cli import Parser

PROG = "python -m experiments.test_time_views"

# What a run evaluated again keeps of its results.json: how it was trained, and its plain
# images' accuracy, the same weights on the same images whatever the views.
KEPT = ("best_epoch", "epochs_run", "kernels", "precision", "steps",
        "test_accuracy_single_view", "train_seconds", "weights_digest")


def evaluated(model, images, labels, test_time_flip, test_time_shifts):
    """The Evaluator's result for `model` on a split's `images` with `labels`, evaluated as a run
    evaluates (mlp.evaluation.Evaluator) with the given test-time views."""
    from mlp import data as data_lib
    from mlp.evaluation import Evaluator

    evaluator = Evaluator(model, test_time_flip=test_time_flip, test_time_shifts=test_time_shifts)
    return evaluator.evaluate(data_lib.evaluation_batches(images, labels))


def main(argv=None):
    parser = Parser(prog=PROG, description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="finished runs")
    parser.add_argument("--split", choices=("validation", "test"), default="validation",
                        help="which images to evaluate (default: validation)")
    parser.add_argument("--shifts", type=int, default=1,
                        help="copies shifted by 1 to N pixels each way in the views compared "
                        "with the recipe's (0: none; default: 1)")
    parser.add_argument("--no-flip", action="store_true",
                        help="leave each image's mirror out of the views compared with the "
                        "recipe's (default: the recipe's own test-time flip)")
    parser.add_argument("--write", metavar="DIR", type=Path,
                        help="keep each run evaluated again with those views as DIR/<run name> "
                        "(needs --split test; DIR/<run name> must not exist yet)")
    args = parser.parse_args(argv)
    if not 0 <= args.shifts < 28:
        parser.error(f"--shifts must be 0 to 27 pixels, got {args.shifts}")
    if args.write is not None and args.split != "test":
        parser.error("--write keeps the test split's predictions: add --split test")
    run_dirs = [Path(run) for run in args.run_dirs]
    if args.write is not None:
        taken = [args.write / run.name for run in run_dirs if (args.write / run.name).exists()]
        if taken:
            parser.error(f"{taken[0]} exists; remove it or choose another --write directory")
        if len({run.name for run in run_dirs}) < len(run_dirs):
            parser.error("two runs share a directory name; --write names each DIR/<run name>")

    from mlp.exits import run_guarded

    return run_guarded(PROG, _evaluate, run_dirs, args.split, args.shifts, not args.no_flip,
                       args.write)


def _evaluate(run_dirs, split, shifts, flip, write):
    from mlp import data as data_lib
    from mlp.trained import chosen_model

    print(f"| run | {split}: the recipe's views | with --shifts {shifts}"
          f"{'' if flip else ' --no-flip'} | change |")
    print("|---|---|---|---|")
    # A study's runs share their data: each (directory, checksums, validation size) is read once.
    loaded = {}
    for run_dir in run_dirs:
        model, config, results = chosen_model(run_dir)
        # The run's own data and split.
        source = (config.data_dir, config.verify_checksums, config.validation_size)
        if source not in loaded:
            loaded[source] = data_lib.load(*source)
        splits = loaded[source]
        images, labels = (getattr(splits, f"{split}_{part}") for part in ("images", "labels"))
        own = float(evaluated(model, images, labels, config.test_time_flip,
                              config.test_time_shifts)["accuracy"])
        test_time_flip = config.test_time_flip and flip
        other = evaluated(model, images, labels, test_time_flip, shifts)
        more = float(other["accuracy"])
        print(f"| {run_dir} | {own:.4f} | {more:.4f} | {100 * (more - own):+.2f} pt |",
              flush=True)
        if write is not None:
            validation = (evaluated(model, splits.validation_images, splits.validation_labels,
                                    test_time_flip, shifts)
                          if len(splits.validation_labels) else None)
            views = {"test_time_flip": test_time_flip, "test_time_shifts": shifts}
            _write_run(write / run_dir.name, run_dir, results, views, other, validation, splits)
    return 0


def _write_run(target, run_dir, results, views, test, validation, splits):
    """`target`, a run directory of `run_dir`'s weights evaluated with `views`: its results.json
    (the views in its experiment_config and under "evaluated_again") and test_predictions.npz,
    written in a scratch directory first, so that `target` appears whole or not at all."""
    from mlp.exits import CannotWrite
    from mlp.io import atomic_write_json
    from mlp.report import write_predictions

    scratch = target.parent / f".{target.name}.partial"
    try:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        write_predictions(scratch, test, splits)
        atomic_write_json(scratch / "results.json", {
            **{key: results[key] for key in KEPT if key in results},
            "evaluated_again": {"from": str(run_dir.resolve()), **views},
            "experiment_config": {**results["experiment_config"], **views},
            "test_accuracy": float(test["accuracy"]), "test_loss": float(test["loss"]),
            **({"validation_accuracy": float(validation["accuracy"]),
                "validation_loss": float(validation["loss"])} if validation is not None else {})})
        scratch.rename(target)
    except OSError as e:
        shutil.rmtree(scratch, ignore_errors=True)
        raise CannotWrite(f"{target}: {e.strerror or e}; free some space or choose another "
                          "--write directory") from None


if __name__ == "__main__":
    sys.exit(main())
