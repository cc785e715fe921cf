"""Speed of our training loop against Keras model.fit and against the matrix-product floor.

In one process, on the real data, the same architecture (the improved recipe) and batch size:
  (a) our loop in each precision,
  (b) Keras model.fit on the identical architecture, with default settings and with
      steps_per_execution tuned,
  (c) the matrix products of an epoch alone (forward and backward), float32 and bfloat16.
They are timed in rounds, one epoch of each contender per round, so that a slow spell of the
machine hits them all alike; the first round (tracing, caches) is not counted, and the median of
the other --repeats rounds is reported. Prints a table with ratios, writes benchmark.json, and reports
peak resident memory after each phase.

    python -m experiments.benchmark [--help]
"""

import argparse
import dataclasses
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cpu_model():
    """The CPU's model name, as lscpu shows it (figures are only comparable on one machine)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


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


def keras_model(config):
    import keras

    layers = [keras.Input((784,))]
    regularizer = keras.regularizers.L2(config.l2)
    for i, width in enumerate(config.hidden_sizes):
        layers.append(keras.layers.Dense(width, activation="relu",
                                         kernel_initializer=config.initializer,
                                         kernel_regularizer=regularizer))
        layers.append(keras.layers.BatchNormalization())
        if i < config.dropout_layers:
            layers.append(keras.layers.Dropout(config.dropout))
    layers.append(keras.layers.Dense(10, kernel_regularizer=regularizer))
    return keras.Sequential(layers)


class KerasFit:
    """One epoch of Keras model.fit per call, on the identical architecture and optimizer."""

    def __init__(self, config, splits, steps_per_execution):
        import keras

        self.splits = splits
        self.batch_size = config.batch_size
        self.model = keras_model(config)
        self.model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=["accuracy"], steps_per_execution=steps_per_execution)
        self.seconds = []
        timer = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: self.seconds.append(-time.perf_counter()),
            on_epoch_end=lambda epoch, logs: self.seconds.append(self.seconds.pop()
                                                                 + time.perf_counter()))
        self.callbacks = [timer]

    def epoch(self):
        self.model.fit(self.splits.train_images, self.splits.train_labels,
                       batch_size=self.batch_size, epochs=1, shuffle=True, verbose=0,
                       callbacks=self.callbacks)
        return self.seconds[-1]

    def test_accuracy(self):
        _, accuracy = self.model.evaluate(self.splits.test_images, self.splits.test_labels,
                                          batch_size=1000, verbose=0)
        return float(accuracy)


class MatmulFloor:
    """The forward and backward matrix products of one epoch, nothing else."""

    def __init__(self, config, num_examples, dtype):
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
                    parts = [tf.matmul(x + total, kernel)[0, 0],                  # forward
                             tf.matmul(x, dy + total, transpose_a=True)[0, 0]]    # kernel grad
                    if i > 0:                                                     # input grad
                        parts.append(tf.matmul(dy, kernel, transpose_b=True)[0, 0])
                    total = total + tf.add_n(parts) * 0
            return total

        self.function = epoch

    def epoch(self):
        started = time.perf_counter()
        self.function().numpy()
        return time.perf_counter() - started


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
    parser.add_argument("--strategies", nargs="+", default=["one_device"],
                        choices=["one_device", "mirrored"],
                        help="strategies of our loop to time, each in every precision (default: "
                             "one_device)")
    parser.add_argument("--cpu-devices", type=int, default=None,
                        help="logical CPU devices for mirrored (default: 2 when mirrored is timed, "
                             "else the CPU is left whole)")
    parser.add_argument("--skip-keras", action="store_true", help="do not time model.fit")
    parser.add_argument("--data-dir", default=None, help="directory of the four IDX files "
                        "(default: as the experiments look for them)")
    parser.add_argument("--logdir", default="tensorboard_logs",
                        help="benchmark.json goes to <logdir>/benchmark-<timestamp>/ (default: "
                             "tensorboard_logs)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch_size < 1 or args.steps_per_execution < 1:
        parser.error("--repeats, --batch-size and --steps-per-execution must be positive")

    from mlp.distribute import make_strategy, split_cpu

    cpu_devices = args.cpu_devices if args.cpu_devices is not None else (
        2 if "mirrored" in args.strategies else 0)
    split_cpu(cpu_devices)  # before TensorFlow starts
    import tensorflow as tf

    from experiments.improved import CONFIG
    from mlp.cli import ToolError, output_dir_and_data

    try:
        out_dir, splits = output_dir_and_data(args.logdir, "benchmark", args.data_dir)
    except ToolError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    config = dataclasses.replace(CONFIG, batch_size=args.batch_size, epochs=args.repeats + 1,
                                 lr_schedule="constant", early_stopping=False, histograms=False,
                                 data_dir=args.data_dir)
    n = len(splits.train_labels)
    rows = {}

    contenders = {}
    for strategy_name in args.strategies:
        strategy = make_strategy(strategy_name)
        where = ("" if strategy_name == "one_device"
                 else f" {strategy_name} x{strategy.num_replicas_in_sync}")
        for precision in args.precisions:
            contenders[f"ours {precision}{where}"] = OurLoop(
                dataclasses.replace(config, precision=precision, strategy=strategy_name),
                splits, strategy)
    contenders["matmul floor float32"] = MatmulFloor(config, n, tf.float32)
    contenders["matmul floor bfloat16"] = MatmulFloor(config, n, tf.bfloat16)
    if not args.skip_keras:
        contenders["keras fit"] = KerasFit(config, splits, 1)
        contenders[f"keras fit spe={args.steps_per_execution}"] = KerasFit(
            config, splits, args.steps_per_execution)
    print(f"benchmark: {n} images, batch {args.batch_size}; {args.repeats} rounds after a warm-up "
          f"round, each round one epoch of every contender in turn; TensorFlow {tf.__version__}; "
          f"{cpu_model()}; CPU split into {max(cpu_devices, 1)} logical device(s)", flush=True)
    seconds = {name: [] for name in contenders}
    peak = {}
    for round_number in range(args.repeats + 1):
        for name, contender in contenders.items():
            seconds[name].append(contender.epoch())
            peak[name] = max(peak.get(name, 0), peak_rss_mb())
        print(f"  round {round_number}{' (warm-up)' if round_number == 0 else ''}: " + ", ".join(
            f"{name} {seconds[name][-1]:.2f}s" for name in contenders), flush=True)
    for name, contender in contenders.items():
        timed = seconds[name][1:]
        rows[name] = {"epoch_seconds": timed, "median_epoch_seconds": statistics.median(timed),
                      "samples_per_second": n / statistics.median(timed),
                      "peak_rss_mb_so_far": peak[name]}
        if hasattr(contender, "test_accuracy"):
            rows[name]["test_accuracy"] = contender.test_accuracy()
            rows[name]["epochs_trained"] = args.repeats + 1

    reference = rows.get(f"keras fit spe={args.steps_per_execution}")
    ours32 = rows.get("ours float32")
    floor = rows["matmul floor float32"]
    lines = ["| what | s/epoch | samples/s | vs keras fit spe | vs our float32 | vs float32 floor "
             "| test acc | process peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
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
        "tensorflow": tf.__version__, "cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
        "cpu_devices": cpu_devices, "rows": rows, "table": table})
    print(f"\nwrote {out_dir / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
