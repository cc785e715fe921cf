"""One flat config for a run: every field a documented default the command line can override.

The defaults are the improved recipe (experiments/recipes.py). A recipe is a parent config plus
the changes that make it what it is: `recipe(parent, **changes)`. `add_arguments` turns each field
into a flag whose --help text is the field's doc, and `Config.validate` rejects bad values before
any training starts.
"""

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A config value is unusable; the message names the flag and what to do."""


def _doc(default, help_text, **extra):
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata={"help": help_text, **extra})
    return field(default=default, metadata={"help": help_text, **extra})


SIDE = 28  # Fashion-MNIST's images are SIDE x SIDE pixels
MAX_HEARTBEAT_TIMEOUT = 86_400
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
LR_SCHEDULES = ("plateau", "constant", "cosine")
INITIALIZERS = ("he_normal", "glorot_uniform")
STRATEGIES = ("one_device", "mirrored", "multi_worker")
WHITENINGS = ("none", "zca")
KERNELS = ("auto", "fused", "tensorflow")
# The largest integer setting: more than any run can use, and what TensorFlow's int32 scalars hold.
MAX_INT = 2**31 - 1


def is_plain_name(name):
    """Whether `name` names an entry directly inside a directory: not empty, no slash or NUL,
    and not "." or ".." (run, study and search names become directory names)."""
    return (isinstance(name, str) and bool(name) and "/" not in name and "\0" not in name
            and name not in (".", ".."))


def _encodable(text):
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # bytes of another encoding, as Python reads them from argv
        return False


@dataclass(frozen=True)
class Config:
    # --- model -------------------------------------------------------------------------------
    hidden_sizes: tuple = _doc((512, 256, 50), "widths of the hidden layers")
    batch_norm: bool = _doc(True, "batch normalization after each hidden layer's ReLU")
    dropout: float = _doc(0.2, "dropout rate after the first --dropout-layers hidden layers")
    dropout_layers: int = _doc(2, "how many hidden layers, from the input side, get dropout")
    l2: float = _doc(1e-4, "L2 factor: l2 * sum of squared kernel entries is added to the loss")
    initializer: str = _doc("he_normal", "kernel initializer of the ReLU layers (the logits "
                            "layer is always glorot_uniform)", choices=INITIALIZERS)
    whitening: str = _doc("none", "none, or zca: whiten the images with a fixed ZCA transform "
                          "computed from the training images before training (the model's "
                          "first layer, never trained; its fitting counts as training time)",
                          choices=WHITENINGS)
    whitening_epsilon: float = _doc(0.1, "ZCA whitening damps the input directions whose "
                                    "variance is below about this (pixels in [0, 1])")
    # --- optimization ------------------------------------------------------------------------
    epochs: int = _doc(60, "maximum number of epochs (early stopping may end sooner)")
    batch_size: int = _doc(128, "training batch size")
    learning_rate: float = _doc(1e-3, "Adam's initial learning rate")
    lr_schedule: str = _doc("plateau", "plateau: reduce on validation-loss plateaus; "
                            "constant: never change it; cosine: cosine decay per step from "
                            "--learning-rate to --min-learning-rate over --epochs, after "
                            "--warmup-epochs of linear warm-up", choices=LR_SCHEDULES)
    warmup_epochs: float = _doc(0.0, "cosine schedule: epochs of linear warm-up from 0")
    plateau_factor: float = _doc(0.5, "multiply the learning rate by this on a plateau")
    plateau_patience: int = _doc(2, "epochs without improvement before reducing the learning rate")
    plateau_min_delta: float = _doc(1e-4, "smallest validation-loss decrease that counts as improvement")
    plateau_cooldown: int = _doc(0, "epochs to wait after a reduction before counting again")
    min_learning_rate: float = _doc(1e-6, "the plateau reducer never goes below this; the "
                                    "cosine schedule ends at it")
    early_stopping: bool = _doc(True, "stop when validation loss stops improving and restore the "
                                "best epoch's weights")
    early_stopping_patience: int = _doc(6, "epochs without improvement before stopping")
    early_stopping_min_delta: float = _doc(0.0, "smallest validation-loss decrease that counts")
    early_stopping_start_epoch: int = _doc(0, "epochs to wait before early stopping may act")
    # --- extra regularization (experiments.best) ----------------------------------------------
    label_smoothing: float = _doc(0.0, "mix the one-hot targets with the uniform distribution "
                                  "by this much")
    augment_shift: int = _doc(0, "shift training images by up to N pixels each way (0: off)")
    augment_flip: bool = _doc(False, "mirror training images left-right with probability 1/2")
    augment_erase: float = _doc(0.0, "probability of zeroing a random rectangle of a training "
                                "image (random erasing)")
    ema_decay: float = _doc(0.0, "evaluate and keep an exponential moving average of the weights "
                            "with this decay per step (0: off; e.g. 0.999)")
    test_time_shifts: int = _doc(0, "evaluation (validation and test alike) also averages over "
                                 "copies of each view shifted by 1 to N pixels up, down, left "
                                 "and right (0: off; 1: four more views per view)")
    test_time_flip: bool = _doc(False, "evaluation (validation and test alike) averages the "
                                "predicted probabilities of each image and its mirror image")
    # --- execution ---------------------------------------------------------------------------
    seed: int = _doc(0, "seeds initialization, shuffling and dropout")
    precision: str = _doc("float32", "float32, mixed_float16, mixed_bfloat16, or auto "
                          "(mixed_float16 on a GPU of compute capability >= 7.0, else float32)",
                          choices=PRECISIONS)
    kernels: str = _doc("auto", "batch norm, dropout and Adam's update in training: fused (one "
                        "C++ kernel per layer and per variable update, built with g++ on first "
                        "use; dropout masks from a hash), tensorflow (TensorFlow's ops; masks "
                        "from Philox), or auto (fused on a CPU where they build, else "
                        "tensorflow)", choices=KERNELS)
    steps_per_loop: int = _doc(0, "optimizer steps per tf.function call; 0: a whole epoch per "
                               "call, or 50 when the progress bar is shown")
    deterministic: bool = _doc(False, "turn on TensorFlow op determinism, so two runs with the "
                               "same arguments give bit-identical weights")
    # --- distribution ------------------------------------------------------------------------
    strategy: str = _doc("one_device", "one_device: this process's first device; mirrored: "
                         "every GPU of this machine, else the logical CPU devices of "
                         "--cpu-devices; multi_worker: one process per machine, the cluster "
                         "read from $TF_CONFIG (MultiWorkerMirroredStrategy)", choices=STRATEGIES)
    cpu_devices: int = _doc(0, "split the CPU into N logical devices (mirrored without GPUs; "
                            "0: leave it whole)")
    sync_batch_norm: bool = _doc(False, "batch norm takes its statistics over the global batch "
                                 "(all-reduced across replicas) instead of each replica's part")
    heartbeat_timeout: float = _doc(10.0, "multi_worker: a worker that sends no heartbeat for "
                                    "this many seconds counts as dead, and the others stop "
                                    "with an error (a killed worker is noticed at once)")
    # --- data --------------------------------------------------------------------------------
    data_dir: str = _doc(None, "directory with the four IDX files (default: $FASHION_MNIST_DIR, "
                         "the cache, /usr/share/datasets/fashion-mnist, else download)")
    verify_checksums: bool = _doc(True, "check the files' SHA-256 and counts against the "
                                  "published dataset (turn off only for other IDX files)")
    validation_size: int = _doc(5000, "the last N images of the training file validate")
    train_subset: int = _doc(0, "train on only the first N training images (0: all)")
    # --- output ------------------------------------------------------------------------------
    logdir: str = _doc("tensorboard_logs", "where run directories are created")
    run_name: str = _doc(None, "the run directory's name (default: experiment name + timestamp)")
    histograms: bool = _doc(True, "write per-layer weight histograms each epoch")
    sharpness: bool = _doc(False, "measure the final weights' sharpness in the report (the "
                           "training loss's top Hessian eigenvalue and epsilon-sharpness, "
                           "mlp/sharpness.py; a second or two; the studies turn it on)")
    corruptions: bool = _doc(True, "measure test accuracy on ten corrupted copies of the test "
                             "images in the report (mlp/corruptions.py; a few seconds; the "
                             "studies always do)")

    # Fields that do not change what a run computes: they may differ on --resume.
    NON_RESULT_FIELDS = ("data_dir", "logdir", "run_name", "steps_per_loop", "histograms",
                         "heartbeat_timeout", "sharpness", "corruptions")
    # Fields added after runs were saved without them, with the value those runs had.
    ADDED_FIELDS = {"kernels": "tensorflow", "heartbeat_timeout": 10.0, "sharpness": False,
                    "corruptions": True, "test_time_shifts": 0}
    # Fields that saved runs may have and that no longer exist (neither changed results).
    REMOVED_FIELDS = ("collective_timeout",)

    @classmethod
    def from_dict(cls, values, source):
        """The Config a saved dict (config.json) describes, every field present and nothing else;
        ConfigError naming `source` otherwise. Types and ranges are checked by `validate`."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: not a JSON object of settings; restore the file or "
                              "start a new run")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {**{k: v for k, v in cls.ADDED_FIELDS.items() if k not in values},
                  **{k: v for k, v in values.items() if k not in cls.REMOVED_FIELDS}}
        unknown, missing = sorted(set(values) - names), sorted(names - set(values))
        if unknown or missing:
            what = "; ".join(part for part in (
                f"unknown settings {', '.join(unknown)}" if unknown else "",
                f"missing settings {', '.join(missing)}" if missing else "") if part)
            raise ConfigError(f"{source}: {what}; it was edited or written by another version: "
                              "restore it or start a new run")
        if isinstance(values["hidden_sizes"], list):
            values = {**values, "hidden_sizes": tuple(values["hidden_sizes"])}
        return cls(**values)

    def validate(self):
        """Raise ConfigError naming the first bad value."""
        def bad(name, why):
            raise ConfigError(f"--{name.replace('_', '-')}: {why}")

        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            if f.type is tuple:
                ok = isinstance(value, tuple) and all(
                    isinstance(h, int) and not isinstance(h, bool) for h in value)
            elif f.type is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif f.type is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
                if ok and abs(value) > MAX_INT:
                    bad(f.name, f"must be at most {MAX_INT} in size, got a number of "
                                f"{len(str(abs(value)))} digits")
            else:
                ok = isinstance(value, f.type)
            if not ok:
                bad(f.name, f"must be {f.type.__name__ if f.type is not tuple else 'widths'}, "
                            f"got {value!r}")
            if isinstance(value, str) and not _encodable(value):
                bad(f.name, f"must be text that UTF-8 can write, got {value!r}")
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                bad(f.name, f"must be one of {', '.join(choices)}, got {value!r}")
        if not 0 <= self.seed < 2**31:
            bad("seed", f"must be in [0, 2^31), got {self.seed}")

        def positive(name):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                bad(name, f"must be positive, got {value}")

        def non_negative(name):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                bad(name, f"must be zero or more, got {value}")

        for name in ("epochs", "batch_size", "learning_rate", "validation_size",
                     "heartbeat_timeout", "whitening_epsilon"):
            positive(name)
        for name in ("l2", "plateau_patience", "plateau_min_delta", "plateau_cooldown",
                     "min_learning_rate", "early_stopping_patience", "early_stopping_min_delta",
                     "early_stopping_start_epoch", "train_subset", "steps_per_loop",
                     "dropout_layers", "augment_shift", "warmup_epochs", "cpu_devices",
                     "test_time_shifts"):
            non_negative(name)
        # TensorFlow takes the timeout in milliseconds as a 64-bit integer.
        if self.heartbeat_timeout > MAX_HEARTBEAT_TIMEOUT:
            bad("heartbeat_timeout", f"must be at most {MAX_HEARTBEAT_TIMEOUT} s (a day), got "
                f"{self.heartbeat_timeout:g}")
        for name in ("augment_shift", "test_time_shifts"):
            if getattr(self, name) >= SIDE:
                bad(name, f"must be less than the image's side ({SIDE}), got {getattr(self, name)}")
        if not self.hidden_sizes or any(int(h) < 1 for h in self.hidden_sizes):
            bad("hidden_sizes", f"need one or more positive widths, got {self.hidden_sizes}")
        for name in ("dropout", "label_smoothing", "augment_erase", "ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                bad(name, f"must be in [0, 1), got {getattr(self, name)}")
        if self.warmup_epochs >= self.epochs and self.lr_schedule == "cosine":
            bad("warmup_epochs", f"must be shorter than --epochs ({self.epochs})")
        if not 0.0 < self.plateau_factor < 1.0:
            bad("plateau_factor", f"must be in (0, 1), got {self.plateau_factor}")
        if self.cpu_devices and self.strategy == "multi_worker":
            bad("cpu_devices", "applies to one_device and mirrored only; multi_worker runs one "
                "replica per worker process")
        if self.data_dir is not None and not Path(self.data_dir).expanduser().is_dir():
            bad("data_dir", f"{self.data_dir} is not a directory")
        if self.run_name is not None and not is_plain_name(self.run_name):
            bad("run_name", f"must be a plain directory name, got {self.run_name!r}")
        if self.run_name is not None and len(self.run_name.encode()) > 200:
            bad("run_name", f"is {len(self.run_name.encode())} bytes long; a run directory's name "
                "may be at most 200 (file systems allow 255, and checkpoint files add to it)")
        check_writable_dir(self.logdir, "logdir")
        return self

    def to_dict(self):
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    def unused_fields(self):
        """The fields this config's other settings make irrelevant (e.g. the plateau settings
        under a cosine schedule)."""
        unused = []
        if self.whitening == "none":
            unused.append("whitening_epsilon")
        if self.lr_schedule != "cosine":
            unused.append("warmup_epochs")
        if self.lr_schedule != "plateau":
            unused += ["plateau_factor", "plateau_patience", "plateau_min_delta",
                       "plateau_cooldown"]
            if self.lr_schedule == "constant":
                unused.append("min_learning_rate")
        if not self.early_stopping:
            unused += ["early_stopping_patience", "early_stopping_min_delta",
                       "early_stopping_start_epoch"]
        return unused

    def result_fields(self):
        """The fields that change what a run computes (compared on --resume)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.NON_RESULT_FIELDS}


def recipe(parent=None, **changes):
    """A recipe: `parent` (default: the library's defaults, Config()) with `changes`.

    A recipe states only what makes it what it is, so each change must change something and
    apply to the result: TypeError names a change equal to the parent's value, or one the result
    does not use (see Config.unused_fields). tests/test_recipes.py snapshots every recipe fully
    resolved, so changing a default here never silently changes an experiment."""
    parent = Config() if parent is None else parent
    result = dataclasses.replace(parent, **changes)
    same = sorted(name for name, value in changes.items() if getattr(parent, name) == value)
    unused = sorted(set(changes) & set(result.unused_fields()))
    if same or unused:
        raise TypeError("a recipe states only what it changes: " + "; ".join(part for part in (
            f"{', '.join(same)} equal the parent's" if same else "",
            f"{', '.join(unused)} do not apply to it" if unused else "") if part))
    return result


def check_writable_dir(path, flag):
    """Make `path` if needed and check a file can be written there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--{flag}: cannot create {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"--{flag}: {path} is not writable; choose another directory")


# --help groups the flags as Config groups its fields: (title, the section's first field).
SECTIONS = (("model", "hidden_sizes"), ("optimization and schedule", "epochs"),
            ("extra regularization", "label_smoothing"), ("execution", "seed"),
            ("distribution", "strategy"), ("data", "data_dir"), ("output", "logdir"))


def add_arguments(parser, defaults):
    """Add one flag per Config field to `parser`, with `defaults` as the default values, in
    --help's groups (SECTIONS)."""
    starts = dict((first, title) for title, first in SECTIONS)
    group = parser
    for f in dataclasses.fields(Config):
        if f.name in starts:
            group = parser.add_argument_group(starts[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f.metadata["help"] + f" (default: {_show(default)})"
        if f.type is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        elif f.type is tuple:
            group.add_argument(flag, type=int, nargs="+", default=default, help=help_text,
                                metavar="N")
        else:
            kind = {int: int, float: float, str: str}[f.type]
            group.add_argument(flag, type=kind, default=default, help=help_text,
                                choices=f.metadata.get("choices"), metavar=f.name.upper())


def _show(value):
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return value


def from_arguments(args):
    """The Config that parsed arguments describe."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
    values["hidden_sizes"] = tuple(int(h) for h in values["hidden_sizes"])
    return Config(**values)
