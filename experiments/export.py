"""Export a finished run as a TensorFlow SavedModel that runs without this repository.

The SavedModel takes uint8 images [N, 28, 28] (pixels as in the dataset: 0 background, 255
ink) and returns class probabilities [N, 10] and classes [N]; the weights are the ones the run's
results.json reports, and the inference path is the evaluator's: pixel scaling, whitening,
batch norm on its moving statistics, no dropout, the recipe's test-time views. Load it
anywhere with `tf.saved_model.load(DIR).signatures["serving_default"](images=...)`, or serve it
with TensorFlow Serving; `python -m experiments.predict DIR IMAGE...` classifies image files.

    python -m experiments.export RUN_DIR [--out DIR]
"""

import argparse
import sys
from pathlib import Path

from mlp.cli import Parser

PROG = "python -m experiments.export"


def main(argv=None):
    parser = Parser(prog=PROG, description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's directory")
    parser.add_argument("--out", default=None,
                        help="where the SavedModel goes; must not exist yet (default: "
                             "RUN_DIR/saved_model)")
    args = parser.parse_args(argv)

    from mlp.exits import run_guarded

    return run_guarded(PROG, _export, Path(args.run_dir),
                       Path(args.out) if args.out else Path(args.run_dir) / "saved_model")


def _export(run_dir, out_dir):
    from mlp.saved_model import export

    results = export(run_dir, out_dir)
    print(f"exported {run_dir} (test accuracy {results['test_accuracy']:.4f}, weights "
          f"{results['weights_digest'][:16]}) to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
