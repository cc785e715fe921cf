"""Evaluate finished runs again with more test-time views: the recipe's own views (the image,
and its mirror if the recipe flips at test time) and the same again for the four copies shifted
by one pixel up, down, left and right, the class probabilities averaged over all of them. Nothing
is trained; the weights are the ones each run's results.json reports.

    python -m experiments.test_time_views RUN_DIR... [--split validation|test]

Choose on --split validation; the test split is for reading once.
"""

import argparse
import sys
from pathlib import Path

PROG = "python -m experiments.test_time_views"
SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # (rows, columns), background filling the edge


def shifted(images, rows, columns):
    """Images [N, 28, 28] moved by (rows, columns) pixels, the uncovered edge left at 0."""
    import numpy as np

    moved = np.zeros_like(images)
    height, width = images.shape[1:]
    source = images[:, max(0, -rows):height - max(0, rows), max(0, -columns):width - max(0, columns)]
    moved[:, max(0, rows):max(0, rows) + source.shape[1],
          max(0, columns):max(0, columns) + source.shape[2]] = source
    return moved


def view_accuracies(model, test_time_flip, images, labels):
    """(with the recipe's views, with the shifted views added) accuracy of `model` on `images`
    [N, 28, 28] in [0, 1] with `labels`."""
    import numpy as np
    import tensorflow as tf

    from mlp.export import view_probabilities

    def probabilities(batch):
        pixels = tf.constant(batch.reshape(len(batch), -1))
        return view_probabilities(model, pixels, test_time_flip).numpy()

    def accuracy(views):
        total = sum(np.concatenate([probabilities(view[i:i + 1000])
                                    for i in range(0, len(view), 1000)]) for view in views)
        return float(np.mean(total.argmax(axis=1) == labels))

    return (accuracy([images]),
            accuracy([images, *(shifted(images, *shift) for shift in SHIFTS)]))


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="finished runs")
    parser.add_argument("--split", choices=("validation", "test"), default="validation",
                        help="which images to evaluate (default: validation)")
    args = parser.parse_args(argv)

    from mlp.exits import run_guarded

    return run_guarded(PROG, _evaluate, [Path(run) for run in args.run_dirs], args.split)


def _evaluate(run_dirs, split):
    import numpy as np

    from mlp import data as data_lib
    from mlp.export import chosen_model

    print(f"| run | {split}: the recipe's views | with the four 1-pixel shifts | change |")
    print("|---|---|---|---|")
    for run_dir in run_dirs:
        model, config, _ = chosen_model(run_dir)
        # The run's own data and split.
        splits = data_lib.load(config.data_dir, config.verify_checksums, config.validation_size)
        images = np.asarray(getattr(splits, f"{split}_images"), np.float32).reshape(-1, 28, 28)
        own, more = view_accuracies(model, config.test_time_flip, images,
                                    getattr(splits, f"{split}_labels"))
        print(f"| {run_dir} | {own:.4f} | {more:.4f} | {100 * (more - own):+.2f} pt |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
