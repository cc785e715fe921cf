"""Where the time of a training step goes: a tf.profiler trace of our loop on the real data.

Trains one warm-up epoch, then traces --steps steps into <logdir>/profile-<precision>-<time>/
(open it in TensorBoard's Profile tab: `pip install ".[profile]"`, then
`tensorboard --logdir tensorboard_logs`), and, when the xprof converter is installed, prints the
self time per op type per step.

    python -m experiments.profile [--precision float32] [--steps 200] [--help]
"""

import argparse
import collections
import dataclasses
import json
import sys
import time
from pathlib import Path

from mlp.cli import Parser


def op_breakdown(trace_dir, steps):
    """{op type: microseconds of self time per step}, from the trace, or None without xprof."""
    try:
        from xprof.convert import raw_to_tool_data
    except ImportError:
        return None
    files = [str(p) for p in Path(trace_dir).rglob("*.xplane.pb")]
    data, _ = raw_to_tool_data.xspace_to_tool_data(files, "framework_op_stats", {})
    table = json.loads(data)[0]
    columns = [c["id"] for c in table["cols"]]
    per_type = collections.Counter()
    for row in table["rows"]:
        values = dict(zip(columns, (cell["v"] for cell in row["c"])))
        if values["type"] != "IDLE":
            per_type[values["type"]] += values["total_self_time"] / steps
    return dict(per_type.most_common())


def main(argv=None):
    parser = Parser(prog="python -m experiments.profile", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="float32",
                        choices=["float32", "mixed_bfloat16", "mixed_float16"],
                        help="precision of the traced loop (default: float32)")
    parser.add_argument("--steps", type=int, default=200, help="steps to trace (default: 200)")
    parser.add_argument("--data-dir", default=None, help="directory of the four IDX files")
    parser.add_argument("--logdir", default="tensorboard_logs", help="(default: tensorboard_logs)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be positive")

    from mlp.exits import run_guarded

    return run_guarded(parser.prog, _main, args)


def _main(args):
    import tensorflow as tf

    from experiments.recipes import IMPROVED
    from mlp.build import build
    from mlp.cli import output_dir_and_data

    out_dir, splits = output_dir_and_data(args.logdir, f"profile-{args.precision}", args.data_dir)
    config = dataclasses.replace(IMPROVED, precision=args.precision, epochs=1, histograms=False,
                                 early_stopping=False, lr_schedule="constant")
    parts = build(config, splits=splits)
    iterator = iter(parts.training_batches())
    parts.trainer.train_loop(iterator, tf.constant(parts.steps_per_epoch))  # warm-up: tracing
    tf.profiler.experimental.start(str(out_dir))
    started = time.perf_counter()
    parts.trainer.train_loop(iterator, tf.constant(args.steps))
    parts.trainer.step.numpy()
    seconds = time.perf_counter() - started
    tf.profiler.experimental.stop()
    print(f"traced {args.steps} steps ({args.precision}) in {seconds:.2f}s, "
          f"{seconds / args.steps * 1e6:.0f} us/step under the profiler; trace in {out_dir}")
    breakdown = op_breakdown(out_dir, args.steps)
    if breakdown is None:
        print("(install the profile extra for the per-op breakdown)")
        return 0
    total = sum(breakdown.values())
    print(f"self time per step, summed over threads: {total:.0f} us")
    for op_type, micros in list(breakdown.items())[:20]:
        print(f"  {micros:8.1f} us  {micros / total:6.1%}  {op_type}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
