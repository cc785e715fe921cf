"""Choosing the compute dtype, and the optimizer wrapper that float16 needs.

float32: everything in float32. mixed_bfloat16: matrix products in bfloat16, variables float32;
bfloat16 has float32's exponent range, so no loss scaling. mixed_float16: matrix products in
float16, with dynamic loss scaling (Keras's LossScaleOptimizer, see mlp/optim.py: a step whose gradients are not
finite is skipped and the scale halves; after 2,000 finite steps it doubles). In every mode
batch-norm statistics, the cross-entropy and the L2 penalty are computed in float32.
"""

import tensorflow as tf

COMPUTE_DTYPES = {"float32": tf.float32, "mixed_float16": tf.float16, "mixed_bfloat16": tf.bfloat16}


def resolve(precision, gpus=None):
    """The concrete precision for `precision`; "auto" picks mixed_float16 on a GPU of compute
    capability 7.0 or newer (tensor cores) and float32 otherwise.

    `gpus` is a list of compute capabilities as (major, minor), default: this machine's GPUs.
    """
    if precision != "auto":
        if precision not in COMPUTE_DTYPES:
            raise ValueError(f"unknown precision {precision!r}")
        return precision
    if gpus is None:
        gpus = [tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
                for gpu in tf.config.list_physical_devices("GPU")]
    return "mixed_float16" if any(tuple(cc) >= (7, 0) for cc in gpus) else "float32"
