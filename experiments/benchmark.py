"""Speed of our training loop against Keras model.fit and against the matrix-product floor.

In one process, on the real data, the same architecture (the improved recipe) and batch size:
  (a) our loop in each precision,
  (b) Keras model.fit on the identical architecture, with default settings and with
      steps_per_execution tuned,
  (c) the matrix products of an epoch alone (forward and backward), float32 and bfloat16.
Each is timed over --repeats epochs after one warm-up epoch (tracing, caches) that is not
counted; the median is reported. Prints a table with ratios, writes benchmark.json, and reports
peak resident memory after each phase.

    python -m experiments.benchmark [--help]
"""

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_our_loop(config, splits, run_dir):
    from mlp.run import Run

    run = Run(config, run_dir, splits=splits, out=open(os.devnull, "w"))
    results = run.train()
    seconds = results["epoch_seconds"][1:]  # the first epoch traces: warm-up
    return {"epoch_seconds": seconds, "median_epoch_seconds": statistics.median(seconds),
            "test_accuracy": results["test_accuracy"]}


def keras_model(config):
    import keras

    layers = [keras.Input((784,))]
    regularizer = keras.regularizers.L2(config.l2)
    for i, width in enumerate(config.hidden_sizes):
        layers.append(keras.layers.Dense(width, activation="relu", kernel_initializer=config.initializer,
                                         kernel_regularizer=regularizer))
        layers.append(keras.layers.BatchNormalization())
        if i < config.dropout_layers:
            layers.append(keras.layers.Dropout(config.dropout))
    layers.append(keras.layers.Dense(10, kernel_regularizer=regularizer))
    return keras.Sequential(layers)


def time_keras_fit(config, splits, repeats, steps_per_execution):
    import keras

    model = keras_model(config)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    seconds = []
    model.fit(splits.train_images, splits.train_labels, batch_size=config.batch_size,
              epochs=repeats + 1, shuffle=True, verbose=0, callbacks=[EpochTimer()])
    _, accuracy = model.evaluate(splits.test_images, splits.test_labels, batch_size=1000, verbose=0)
    seconds = seconds[1:]
    return {"epoch_seconds": seconds, "median_epoch_seconds": statistics.median(seconds),
            "test_accuracy": float(accuracy)}


def time_matmul_floor(config, num_examples, repeats, dtype):
    """The forward and backward matrix products of one epoch, nothing else."""
    import numpy as np
    import tensorflow as tf

    sizes = [784, *config.hidden_sizes, 10]
    batch = config.batch_size
    steps = -(-num_examples // batch)
    rng = np.random.default_rng(0)
    kernels = [tf.constant(rng.normal(size=(a, b)), dtype) for a, b in zip(sizes[:-1], sizes[1:])]
    inputs = [tf.constant(rng.normal(size=(batch, a)), dtype) for a in sizes[:-1]]
    grads = [tf.constant(rng.normal(size=(batch, b)), dtype) for b in sizes[1:]]

    @tf.function
    def epoch():
        total = tf.constant(0.0, dtype)
        for _ in tf.range(steps):
            for i, (kernel, x, dy) in enumerate(zip(kernels, inputs, grads)):
                y = tf.matmul(x + total, kernel)                   # forward
                dw = tf.matmul(x, dy + total, transpose_a=True)    # kernel gradient
                parts = [y[0, 0], dw[0, 0]]
                if i > 0:                                          # input gradient
                    parts.append(tf.matmul(dy, kernel, transpose_b=True)[0, 0])
                total = total + tf.add_n(parts) * 0
        return total

    seconds = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        epoch().numpy()
        seconds.append(time.perf_counter() - started)
    seconds = seconds[1:]
    return {"epoch_seconds": seconds, "median_epoch_seconds": statistics.median(seconds)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed epochs per measurement, after one warm-up epoch (default: 5)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"],
                        choices=["float32", "mixed_bfloat16", "mixed_float16"],
                        help="precisions of our loop to time (default: float32 mixed_bfloat16)")
    parser.add_argument("--steps-per-execution", type=int, default=64,
                        help="the tuned model.fit setting (default: 64)")
    parser.add_argument("--skip-keras", action="store_true", help="do not time model.fit")
    parser.add_argument("--data-dir", default=None, help="directory of the four IDX files "
                        "(default: as the experiments look for them)")
    parser.add_argument("--logdir", default="tensorboard_logs",
                        help="benchmark.json goes to <logdir>/benchmark-<timestamp>/ (default: "
                             "tensorboard_logs)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch_size < 1 or args.steps_per_execution < 1:
        parser.error("--repeats, --batch-size and --steps-per-execution must be positive")

    from mlp import data as data_lib
    from mlp.config import Config, ConfigError, check_writable_dir
    import tensorflow as tf

    out_dir = Path(args.logdir) / f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        check_writable_dir(out_dir, "logdir")
        splits = data_lib.load(args.data_dir)
    except (ConfigError, data_lib.DataError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    config = Config(batch_size=args.batch_size, epochs=args.repeats + 1, lr_schedule="constant",
                    early_stopping=False, histograms=False, data_dir=args.data_dir)
    n = len(splits.train_labels)
    rows = {}

    def record(name, measurement):
        measurement["samples_per_second"] = n / measurement["median_epoch_seconds"]
        measurement["peak_rss_mb_so_far"] = peak_rss_mb()
        rows[name] = measurement
        print(f"  {name}: {measurement['median_epoch_seconds']:.3f} s/epoch", flush=True)

    print(f"benchmark: {n} images, batch {args.batch_size}, {args.repeats} timed epochs each, "
          f"TensorFlow {tf.__version__}", flush=True)
    for precision in args.precisions:
        record(f"ours {precision}", time_our_loop(
            dataclasses.replace(config, precision=precision), splits, out_dir / precision))
    record("matmul floor float32", time_matmul_floor(config, n, args.repeats, tf.float32))
    record("matmul floor bfloat16", time_matmul_floor(config, n, args.repeats, tf.bfloat16))
    if not args.skip_keras:
        record("keras fit", time_keras_fit(config, splits, args.repeats, 1))
        record(f"keras fit spe={args.steps_per_execution}",
               time_keras_fit(config, splits, args.repeats, args.steps_per_execution))

    reference = rows.get(f"keras fit spe={args.steps_per_execution}")
    ours32 = rows.get("ours float32")
    floor = rows["matmul floor float32"]
    lines = ["| what | s/epoch | samples/s | vs keras fit spe | vs our float32 | vs float32 floor "
             "| test acc | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for name, m in rows.items():
        s = m["median_epoch_seconds"]
        ratio = lambda other: f"{other['median_epoch_seconds'] / s:.2f}x" if other else "-"
        accuracy = f"{m['test_accuracy']:.4f}" if "test_accuracy" in m else "-"
        lines.append(f"| {name} | {s:.3f} | {m['samples_per_second']:,.0f} | {ratio(reference)} | "
                     f"{ratio(ours32)} | {s / floor['median_epoch_seconds']:.2f} | {accuracy} | "
                     f"{m['peak_rss_mb_so_far']:,.0f} |")
    table = "\n".join(lines)
    print("\nratios: how many times faster than the column's reference (higher is faster); "
          "'vs float32 floor' is this row's time over the matrix products' time\n" + table)
    from mlp.io import atomic_write_json
    atomic_write_json(out_dir / "benchmark.json", {
        "batch_size": args.batch_size, "repeats": args.repeats, "examples": n,
        "tensorflow": tf.__version__, "cpu_count": os.cpu_count(), "rows": rows, "table": table})
    print(f"\nwrote {out_dir / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
