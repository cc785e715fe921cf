"""Speed of our training loop against Keras model.fit and against the floor it is judged by.

In one process, on the real data, for each setting (a model's widths and a batch size):
  (a) our loop in each precision (and strategy), with the fused batch-norm and dropout kernels
      and with TensorFlow's ops (see mlp/fused.py),
  (b) Keras model.fit on the identical architecture, with steps_per_execution tuned (and, with
      --keras-default, with its default),
  (c) the floor: the epoch's matrix products (forward and backward) plus one fused Adam update of
      every variable per step (TensorFlow's ResourceApplyAdam), the least a training step with
      Adam must do; the same with our one-pass Adam kernel where the fused kernels build (our
      loop uses it, so it can go below the first floor's Adam share); and the matrix products
      alone, in float32 and bfloat16,
  (d) with --breakdown, our float32 loop with the recipe's parts taken out (dropout, batch norm,
      L2, all three), to show what each costs and what the loop costs without them.
They are timed in rounds, one epoch of each contender per round, so that a slow spell of the
machine hits them all alike; the first round (tracing, caches) is not counted, and the median of
the other --repeats rounds is reported. Prints a table per setting with each contender's ratio
to its floor and to Keras, writes benchmark.json, and reports peak resident memory.

    python -m experiments.benchmark [--sweep] [--help]
"""

import argparse
import dataclasses
import os
import resource
import statistics
import sys
import time

from mlp.cli import Parser
from mlp.config import KERNELS


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class OurLoop:
    """One epoch of our training loop per call (the controller's training calls, no evaluation),
    on parts from mlp.build under `strategy`."""

    def __init__(self, config, splits, strategy=None):
        import tensorflow as tf
        from mlp.build import build

        self.tf = tf
        self.parts = build(config, strategy, splits)
        self.recipe = {field: getattr(config, field) for field in ("batch_norm", "dropout", "l2")}
        self.recipe["kernels"] = self.parts.kernels
        self.test = self.parts.evaluation_batches(splits.test_images, splits.test_labels)
        self.iterator = iter(self.parts.training_batches())

    def epoch(self):
        trainer = self.parts.trainer
        steps = self.tf.constant(self.parts.steps_per_epoch)
        started = time.perf_counter()
        trainer.train_loop(self.iterator, steps)
        trainer.step.numpy()  # wait for the graph call to finish
        return time.perf_counter() - started

    def test_accuracy(self):
        return float(self.parts.evaluator.evaluate(self.test)["accuracy"].numpy())


class MatmulFloor:
    """The forward and backward matrix products of one epoch, nothing else; with `adam`, also one
    fused Adam update (TensorFlow's ResourceApplyAdam) of every trainable variable of the model
    per step: the floor a training step with Adam can approach. With `fused_ops`, the update is
    the fused kernels' MlpApplyAdam instead (one pass, where ResourceApplyAdam takes three)."""

    def __init__(self, config, num_examples, dtype, adam=False, fused_ops=None):
        import numpy as np
        import tensorflow as tf

        from mlp.model import from_config

        sizes = [784, *config.hidden_sizes, 10]
        batch = config.batch_size
        steps = -(-num_examples // batch)
        rng = np.random.default_rng(0)
        kernels = [tf.constant(rng.normal(size=(a, b)), dtype)
                   for a, b in zip(sizes[:-1], sizes[1:])]
        inputs = [tf.constant(rng.normal(size=(batch, a)), dtype) for a in sizes[:-1]]
        grads = [tf.constant(rng.normal(size=(batch, b)), dtype) for b in sizes[1:]]
        variables = from_config(config).trainable_variables if adam else []
        slots = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]
        updates = [tf.constant(rng.normal(size=v.shape) * 1e-3, tf.float32) for v in variables]
        scalar = lambda x: tf.constant(x, tf.float32)  # noqa: E731

        @tf.function
        def epoch():
            total = tf.constant(0.0, dtype)
            for _ in tf.range(steps):
                for i, (kernel, x, dy) in enumerate(zip(kernels, inputs, grads)):
                    parts = [tf.matmul(x + total, kernel)[0, 0],                  # forward
                             tf.matmul(x, dy + total, transpose_a=True)[0, 0]]    # kernel grad
                    if i > 0:                                                     # input grad
                        parts.append(tf.matmul(dy, kernel, transpose_b=True)[0, 0])
                    total = total + tf.add_n(parts) * 0
                for variable, (m, v), update in zip(variables, slots, updates):
                    gradient = update + tf.cast(total, tf.float32)
                    if fused_ops is not None:
                        fused_ops.mlp_apply_adam(
                            variable.handle, m.handle, v.handle, gradient, scalar(1e-3),
                            scalar(0.1), scalar(0.001), scalar(1e-7), scalar(0.0))
                        continue
                    tf.raw_ops.ResourceApplyAdam(
                        var=variable.handle, m=m.handle, v=v.handle, beta1_power=scalar(0.9),
                        beta2_power=scalar(0.999), lr=scalar(1e-3), beta1=scalar(0.9),
                        beta2=scalar(0.999), epsilon=scalar(1e-7), grad=gradient)
            return total

        self.function = epoch

    def epoch(self):
        started = time.perf_counter()
        self.function().numpy()
        return time.perf_counter() - started


FLOOR = "floor: matrix products + one Adam pass"
FUSED_FLOOR = "floor with the fused Adam kernel"
# --breakdown: the recipe's parts taken out of our float32 loop, one at a time and all together.
WITHOUT = {"dropout": {"dropout": 0.0}, "batch norm": {"batch_norm": False}, "L2": {"l2": 0.0}}
WITHOUT["all three"] = {k: v for change in WITHOUT.values() for k, v in change.items()}


WIDTHS = ("improved", "best")
PROG = "python -m experiments.benchmark"


def parse(argv):
    parser = Parser(prog=PROG, description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed epochs per measurement, after one warm-up epoch (default: 5)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128],
                        help="batch sizes to time, each a setting of its own (default: 128)")
    parser.add_argument("--widths", nargs="+", default=["improved"], choices=WIDTHS,
                        help="whose model to time: the improved recipe's (512-256-50) or best's "
                             "(1024-512-256, dropout on all three); each a setting of its own "
                             "(default: improved)")
    parser.add_argument("--sweep", action="store_true",
                        help="how the cost grows with the work: --batch-sizes 32 128 512 "
                             "--widths improved best, float32 against the floor and Keras fit")
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"],
                        choices=["float32", "mixed_bfloat16", "mixed_float16"],
                        help="precisions of our loop to time (default: float32 mixed_bfloat16)")
    parser.add_argument("--steps-per-execution", type=int, default=64,
                        help="the tuned model.fit setting (default: 64)")
    parser.add_argument("--keras-default", action="store_true",
                        help="also time model.fit with its default steps_per_execution (1)")
    parser.add_argument("--strategies", nargs="+", default=["one_device"],
                        choices=["one_device", "mirrored"],
                        help="strategies of our loop to time, each in every precision (default: "
                             "one_device)")
    parser.add_argument("--cpu-devices", type=int, default=None,
                        help="logical CPU devices for mirrored (default: 2 when mirrored is timed, "
                             "else the CPU is left whole)")
    parser.add_argument("--kernels", nargs="+", default=["auto", "tensorflow"], choices=KERNELS,
                        help="batch norm, dropout and Adam kernels of our loop to time, each in "
                             "every precision: the fused ones (auto: where they build) and "
                             "TensorFlow's ops (default: auto tensorflow)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time our float32 loop without dropout, without batch norm, "
                             "without L2 and without all three: what each part of the recipe "
                             "costs, and how far the bare loop is from the floor")
    parser.add_argument("--skip-keras", action="store_true", help="do not time model.fit")
    parser.add_argument("--train-subset", type=int, default=0,
                        help="time epochs of only the first N training images (0: all 55,000; "
                             "a smaller N for a quick look, not for figures)")
    parser.add_argument("--data-dir", default=None, help="directory of the four IDX files "
                        "(default: as the experiments look for them)")
    parser.add_argument("--logdir", default="tensorboard_logs",
                        help="benchmark.json goes to <logdir>/benchmark-<timestamp>/ (default: "
                             "tensorboard_logs)")
    args = parser.parse_args(argv)
    if args.sweep:
        args.batch_sizes, args.widths, args.precisions = [32, 128, 512], list(WIDTHS), ["float32"]
    if args.repeats < 1 or min(args.batch_sizes) < 1 or args.steps_per_execution < 1:
        parser.error("--repeats, --batch-sizes and --steps-per-execution must be positive")
    if args.train_subset < 0:
        parser.error("--train-subset must be zero or more")
    args.cpu_devices = args.cpu_devices if args.cpu_devices is not None else (
        2 if "mirrored" in args.strategies else 0)
    return args


def model_configs():
    """{widths name: the config whose model the benchmark times}."""
    from experiments.recipes import BEST, IMPROVED

    return {"improved": IMPROVED, "best": dataclasses.replace(
        IMPROVED, hidden_sizes=BEST.hidden_sizes, dropout=BEST.dropout,
        dropout_layers=BEST.dropout_layers, l2=BEST.l2)}


def plan(args, splits):
    """{(setting, contender name): contender}, a setting being (widths, batch size), in the order
    each round times them."""
    import tensorflow as tf

    from experiments.keras_reference import KerasFit
    from mlp import fused
    from mlp.distribute import make_strategy

    n = len(splits.train_labels)
    _, fused_ops, _ = fused.resolve("auto")
    models = model_configs()
    contenders = {}
    for widths in args.widths:
        for batch in args.batch_sizes:
            config = dataclasses.replace(models[widths], batch_size=batch,
                                         epochs=args.repeats + 1, lr_schedule="constant",
                                         early_stopping=False, histograms=False,
                                         data_dir=args.data_dir)
            setting = (widths, batch)
            for strategy_name in args.strategies:
                strategy = make_strategy(strategy_name)
                where = ("" if strategy_name == "one_device"
                         else f" {strategy_name} x{strategy.num_replicas_in_sync}")
                for precision in args.precisions:
                    for kernels in args.kernels:
                        loop = OurLoop(dataclasses.replace(config, precision=precision,
                                                           strategy=strategy_name,
                                                           kernels=kernels), splits, strategy)
                        which = "" if loop.parts.kernels == "fused" else ", tensorflow kernels"
                        contenders.setdefault((setting, f"ours {precision}{where}{which}"), loop)
            if args.breakdown:
                for part, change in WITHOUT.items():
                    contenders[setting, f"ours float32 without {part}"] = OurLoop(
                        dataclasses.replace(config, precision="float32", **change), splits)
            contenders[setting, FLOOR] = MatmulFloor(config, n, tf.float32, adam=True)
            if fused_ops is not None:
                contenders[setting, FUSED_FLOOR] = MatmulFloor(config, n, tf.float32, adam=True,
                                                               fused_ops=fused_ops)
            contenders[setting, "matmul floor float32"] = MatmulFloor(config, n, tf.float32)
            if "mixed_bfloat16" in args.precisions:
                contenders[setting, "matmul floor bfloat16"] = MatmulFloor(config, n, tf.bfloat16)
            if not args.skip_keras:
                if args.keras_default:
                    contenders[setting, "keras fit"] = KerasFit(config, splits, 1)
                contenders[setting, f"keras fit spe={args.steps_per_execution}"] = KerasFit(
                    config, splits, args.steps_per_execution)
    return contenders


def run_rounds(contenders, repeats, n):
    """Time one epoch of every contender per round, repeats + 1 rounds (the first a warm-up);
    returns {key: row of figures}."""
    seconds = {key: [] for key in contenders}
    peak = {}
    for round_number in range(repeats + 1):
        for key, contender in contenders.items():
            seconds[key].append(contender.epoch())
            peak[key] = max(peak.get(key, 0), peak_rss_mb())
        print(f"  round {round_number}{' (warm-up)' if round_number == 0 else ''}: " + ", ".join(
            f"{name} [{w} b{b}] {seconds[(w, b), name][-1]:.2f}s"
            for (w, b), name in contenders), flush=True)
    rows = {}
    for key, contender in contenders.items():
        timed = seconds[key][1:]
        row = {"epoch_seconds": timed, "median_epoch_seconds": statistics.median(timed),
               "samples_per_second": n / statistics.median(timed),
               "peak_rss_mb_so_far": peak[key]}
        if hasattr(contender, "test_accuracy"):
            row["test_accuracy"] = contender.test_accuracy()
            row["epochs_trained"] = repeats + 1
        if hasattr(contender, "recipe"):
            row["recipe"] = contender.recipe
        rows[key] = row
    return rows


def tables(rows, steps_per_execution):
    """One markdown table per setting (in the order of `rows`, {((widths, batch), contender):
    figures}): each contender's time, its ratio to the floor and to Keras fit."""
    out = []
    keras_name = f"keras fit spe={steps_per_execution}"
    models = model_configs()
    for setting in dict.fromkeys(setting for setting, _ in rows):
        widths, batch = setting
        sizes = "-".join(map(str, models[widths].hidden_sizes))
        floor = rows[setting, FLOOR]["median_epoch_seconds"]
        keras = rows.get((setting, keras_name))
        lines = [f"{widths} widths ({sizes}), batch {batch}:", "",
                 "| what | s/epoch | samples/s | x floor | vs keras fit spe | test acc | "
                 "process peak RSS MB |", "|---|---|---|---|---|---|---|"]
        for (row_setting, name), m in rows.items():
            if row_setting != setting:
                continue
            s = m["median_epoch_seconds"]
            versus = f"{keras['median_epoch_seconds'] / s:.2f}x" if keras else "-"
            accuracy = f"{m['test_accuracy']:.4f}" if "test_accuracy" in m else "-"
            lines.append(f"| {name} | {s:.3f} | {m['samples_per_second']:,.0f} | "
                         f"{s / floor:.2f} | {versus} | {accuracy} | "
                         f"{m['peak_rss_mb_so_far']:,.0f} |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def report_tables(report):
    """`tables` of a benchmark.json's contents."""
    setting_keys = ("widths", "batch_size", "what")
    rows = {((row["widths"], row["batch_size"]), row["what"]):
            {key: value for key, value in row.items() if key not in setting_keys}
            for row in report["rows"]}
    return tables(rows, report["steps_per_execution"])


def without_retracing_warnings(record):
    """A logging filter: every contender of every setting builds its own model and traces its
    functions once, so TensorFlow's warning that a function "triggered tf.function retracing"
    (its methods are traced per instance) says nothing here."""
    return "triggered tf.function retracing" not in record.getMessage()


def main(argv=None):
    from mlp.exits import run_guarded

    args = parse(argv)
    return run_guarded(PROG, _main, args)


def _main(args):
    from mlp.distribute import split_cpu

    split_cpu(args.cpu_devices)  # before TensorFlow starts
    import tensorflow as tf

    tf.get_logger().addFilter(without_retracing_warnings)

    from mlp.cli import output_dir_and_data
    from mlp.io import atomic_write_json
    from mlp.machine import cpu_id, cpu_model, cpu_name

    out_dir, splits = output_dir_and_data(args.logdir, "benchmark", args.data_dir)
    if args.train_subset:
        splits = dataclasses.replace(splits, train_images=splits.train_images[:args.train_subset],
                                     train_labels=splits.train_labels[:args.train_subset])
    n = len(splits.train_labels)
    contenders = plan(args, splits)
    print(f"benchmark: {n} images; {args.repeats} rounds after a warm-up round, each round one "
          f"epoch of every contender in turn; TensorFlow {tf.__version__}; {cpu_name()}; CPU "
          f"split into {max(args.cpu_devices, 1)} logical device(s)", flush=True)
    rows = run_rounds(contenders, args.repeats, n)
    table = tables(rows, args.steps_per_execution)
    print("\n'x floor': this row's time over the floor's (matrix products + one Adam pass of "
          "TensorFlow's ResourceApplyAdam, timed in the same rounds); 'vs keras fit spe': how many "
          "times faster than model.fit with steps_per_execution (higher is faster)\n\n" + table)
    atomic_write_json(out_dir / "benchmark.json", {
        "repeats": args.repeats, "examples": n, "tensorflow": tf.__version__,
        "cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "cpu_id": cpu_id(),
        "cpu_devices": args.cpu_devices,
        "steps_per_execution": args.steps_per_execution,
        "rows": [{"widths": w, "batch_size": b, "what": name, **m} for (w, b), name in rows
                 for m in [rows[(w, b), name]]],
        "table": table})
    print(f"\nwrote {out_dir / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
