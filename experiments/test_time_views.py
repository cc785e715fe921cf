"""Evaluate finished runs again with other test-time views: the recipe's own views (the image, its
mirror if the recipe flips at test time, and their shifted copies if it has test-time shifts),
against the same with copies shifted by 1 to --shifts pixels up, down, left and right instead
(0: none), the class probabilities averaged over all of them (mlp.augment.evaluation_views).
Nothing is trained; the weights are the ones each run's results.json reports.

    python -m experiments.test_time_views RUN_DIR... [--split validation|test] [--shifts N]

Choose on --split validation; the test split is for reading once.
"""

import argparse
import sys
from pathlib import Path

from mlp.cli import Parser

PROG = "python -m experiments.test_time_views"


def view_accuracy(model, images, labels, test_time_flip, test_time_shifts):
    """Accuracy of `model` on a split's `images` with `labels`, evaluated as a run evaluates
    (mlp.evaluation.Evaluator) with the given test-time views."""
    from mlp import data as data_lib
    from mlp.evaluation import Evaluator

    evaluator = Evaluator(model, test_time_flip=test_time_flip, test_time_shifts=test_time_shifts)
    return float(evaluator.evaluate(data_lib.evaluation_batches(images, labels))["accuracy"])


def main(argv=None):
    parser = Parser(prog=PROG, description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="finished runs")
    parser.add_argument("--split", choices=("validation", "test"), default="validation",
                        help="which images to evaluate (default: validation)")
    parser.add_argument("--shifts", type=int, default=1,
                        help="copies shifted by 1 to N pixels each way in the views compared "
                        "with the recipe's (0: none; default: 1)")
    args = parser.parse_args(argv)
    if not 0 <= args.shifts < 28:
        parser.error(f"--shifts must be 0 to 27 pixels, got {args.shifts}")

    from mlp.exits import run_guarded

    return run_guarded(PROG, _evaluate, [Path(run) for run in args.run_dirs], args.split,
                       args.shifts)


def _evaluate(run_dirs, split, shifts):
    from mlp import data as data_lib
    from mlp.trained import chosen_model

    print(f"| run | {split}: the recipe's views | with --shifts {shifts} | change |")
    print("|---|---|---|---|")
    for run_dir in run_dirs:
        model, config, _ = chosen_model(run_dir)
        # The run's own data and split.
        splits = data_lib.load(config.data_dir, config.verify_checksums, config.validation_size)
        images, labels = (getattr(splits, f"{split}_{part}") for part in ("images", "labels"))
        own = view_accuracy(model, images, labels, config.test_time_flip, config.test_time_shifts)
        more = view_accuracy(model, images, labels, config.test_time_flip, shifts)
        print(f"| {run_dir} | {own:.4f} | {more:.4f} | {100 * (more - own):+.2f} pt |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
