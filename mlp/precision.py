"""Choosing the compute dtype, by measurement where it depends on the machine.

float32: everything in float32. mixed_bfloat16: matrix products in bfloat16, variables float32;
bfloat16 has float32's exponent range, so no loss scaling. mixed_float16: matrix products in
float16, with dynamic loss scaling (Keras's LossScaleOptimizer, see mlp/optim.py: a step whose
gradients are not finite is skipped and the scale halves; after 2,000 finite steps it doubles).
In every mode batch-norm statistics, the cross-entropy and the L2 penalty are computed in float32.

auto: on a GPU of compute capability 7.0 or newer (tensor cores) mixed_float16, which is known to
pay there. Otherwise whether bfloat16 pays depends on the machine, not on a CPU flag: two CPUs
that both report AVX-512 BF16 ran bfloat16 matrix products faster than float32 on one and slower
on the other (docs/precision.md). So `auto` runs a short probe, the model's own layers forward
and backward on a batch in each candidate precision, in interleaved rounds, and takes the
fastest. The result is cached per machine (CPU model name and identity), TensorFlow version and
shape of the probe.
"""

import json
import os
import statistics
import time

import tensorflow as tf

from mlp.machine import cpu_name

COMPUTE_DTYPES = {"float32": tf.float32, "mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}
CPU_CANDIDATES = ("float32", "mixed_bfloat16")
PROBE_ROUNDS = 5
PROBE_STEPS = 20


def gpu_capabilities():
    return [tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
            for gpu in tf.config.list_physical_devices("GPU")]


def resolve(precision, gpus=None, probe=None):
    """(the concrete precision for `precision`, the probe's figures or None).

    `gpus`: compute capabilities as (major, minor), default this machine's. `probe`: a function
    () -> {precision: seconds} timing the candidates, default none (then auto on a CPU is
    float32); see `probe_model`.
    """
    if precision != "auto":
        if precision not in COMPUTE_DTYPES:
            raise ValueError(f"unknown precision {precision!r}")
        return precision, None
    gpus = gpu_capabilities() if gpus is None else gpus
    if any(tuple(cc) >= (7, 0) for cc in gpus):
        return "mixed_float16", None
    if gpus or probe is None:
        return "float32", None
    seconds = probe()
    return min(seconds, key=seconds.get), seconds


def probe_model(config, cache_path=None, fused_ops=None):
    """A probe for `resolve`: the seconds per step of `config`'s model (with the fused kernels
    `fused_ops`, or TensorFlow's ops), forward and backward on one batch, in each of
    CPU_CANDIDATES; read from `cache_path` if it was measured before here."""
    key = "|".join([cpu_name(), tf.__version__,
                    "x".join(map(str, config.hidden_sizes)), str(config.batch_size),
                    str(config.batch_norm), config.whitening,
                    "tensorflow" if fused_ops is None else "fused"])

    def probe():
        cache = _read_cache(cache_path)
        if key in cache:
            return cache[key]
        seconds = measure(config, fused_ops=fused_ops)
        if cache_path:
            _write_cache(cache_path, {**_read_cache(cache_path), key: seconds})
        return seconds

    return probe


def measure(config, candidates=CPU_CANDIDATES, rounds=PROBE_ROUNDS, steps=PROBE_STEPS,
            fused_ops=None):
    """Median seconds per forward-and-backward step of `config`'s model in each precision, timed in
    interleaved rounds after one warm-up round (a few seconds in all)."""
    from mlp.model import from_config

    images = tf.random.stateless_uniform([config.batch_size, 784], seed=(0, 0))
    labels = tf.random.stateless_uniform([config.batch_size], seed=(0, 1), maxval=10,
                                         dtype=tf.int32)
    steppers = {}
    for precision in candidates:
        model = from_config(config, COMPUTE_DTYPES[precision], fused_ops=fused_ops)

        @tf.function
        def run(model=model):
            total = tf.constant(0.0)
            for step in tf.range(steps):
                with tf.GradientTape() as tape:
                    logits = model(images, training=True, step=step)
                    loss = tf.reduce_mean(
                        tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
                gradients = tape.gradient(loss, model.trainable_variables)
                total += tf.add_n([tf.reduce_sum(g[:1]) for g in gradients]) * 0
            return total

        steppers[precision] = run
    times = {precision: [] for precision in candidates}
    for round_number in range(rounds + 1):
        for precision, run in steppers.items():
            started = time.perf_counter()
            run().numpy()
            if round_number:  # the first round traces
                times[precision].append((time.perf_counter() - started) / steps)
    return {precision: statistics.median(values) for precision, values in times.items()}


def _read_cache(path):
    try:
        cache = json.loads(open(path).read()) if path else {}
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}  # a missing or damaged cache is measured again


def _write_cache(path, cache):
    from mlp.io import atomic_write_json

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_json(path, cache)
    except OSError:
        pass  # a cache that cannot be written only costs the probe again next time
