"""One flat config for a run: every field a documented default the command line can override.

Each field is declared once, by `setting`: its default, its --help text, the values it may take,
the value runs saved before it existed had, and whether it changes what a run computes. Adding a
field is that one declaration: `add_arguments` makes its flag, `Config.validate` checks its
values, and `Config.from_dict` loads older runs' config.json with it filled in.

The defaults are the improved recipe (experiments/recipes.py). A recipe is a parent config plus
the changes that make it what it is: `recipe(parent, **changes)`.
"""

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A config value is unusable; the message names the flag and what to do."""


SIDE = 28  # Fashion-MNIST's images are SIDE x SIDE pixels
MAX_CONV_BLOCKS = 4  # each convolution block halves the side: 28, 14, 7, 3, 1
NUM_CLASSES = 10
MAX_HEARTBEAT_TIMEOUT = 86_400
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
LR_SCHEDULES = ("plateau", "constant", "cosine")
INITIALIZERS = ("he_normal", "glorot_uniform")
STRATEGIES = ("one_device", "mirrored", "multi_worker")
WHITENINGS = ("none", "zca")
KERNELS = ("auto", "fused", "tensorflow")
# The largest integer setting: more than any run can use, and what TensorFlow's int32 scalars hold.
MAX_INT = 2**31 - 1


@dataclass(frozen=True)
class Interval:
    """The values a number setting may take: from `low` to `high`, each end in or out."""
    low: float
    high: float = math.inf
    low_in: bool = True
    high_in: bool = False
    words: str = ""  # the error's wording, when the interval's own would not say why
    too_high: str = ""  # the wording above `high` (below `low`, the half line's)

    def problem(self, value):
        """None when `value` lies inside, else what its flag must be (the error's text)."""
        above_low = value >= self.low if self.low_in else value > self.low
        below_high = value <= self.high if self.high_in else value < self.high
        if math.isfinite(value) and above_low and below_high:
            return None
        shown = f"{value:g}" if isinstance(value, float) else f"{value}"
        if self.words:
            return f"{self.words}, got {shown}"
        if self.too_high and above_low:
            return f"{self.too_high}, got {shown}"
        if self.high == math.inf or self.too_high:
            return f"must be {'zero or more' if self.low_in else 'positive'}, got {value}"
        return (f"must be in {'[' if self.low_in else '('}{self.low:g}, {self.high:g}"
                f"{']' if self.high_in else ')'}, got {value}")


@dataclass(frozen=True)
class OneOf:
    """The words a text setting may be."""
    choices: tuple

    def problem(self, value):
        return None if value in self.choices else \
            f"must be one of {', '.join(self.choices)}, got {value!r}"


@dataclass(frozen=True)
class Anything:
    """A setting whose type is its only rule (a switch; a path or a name checked where it is
    used)."""
    why: str

    def problem(self, value):
        return None


@dataclass(frozen=True)
class Widths:
    """Layer widths, each positive: one or more, or (`none_allowed`) none at all."""
    none_allowed: bool = False

    def problem(self, widths):
        if (widths or self.none_allowed) and all(width >= 1 for width in widths):
            return None
        least = "zero" if self.none_allowed else "one"
        return f"need {least} or more positive widths, got {widths}"


POSITIVE = Interval(0, low_in=False)
NON_NEGATIVE = Interval(0)
FRACTION = Interval(0.0, 1.0)  # [0, 1)
SWITCH = Anything("on or off")
PIXELS = Interval(0, SIDE, too_high=f"must be less than the image's side ({SIDE})")

# TensorFlow takes the heartbeat timeout in milliseconds as a 64-bit integer: at most a day.
HEARTBEAT_SECONDS = Interval(0, MAX_HEARTBEAT_TIMEOUT, low_in=False, high_in=True,
                             too_high=f"must be at most {MAX_HEARTBEAT_TIMEOUT} s (a day)")

# `older_runs` of a field every saved run has: runs saved before it existed cannot be.
ALWAYS = object()


def setting(default, doc, *, valid, older_runs=ALWAYS, result=True):
    """One Config field declared in one place: its default, its --help text, the values it may
    take (`valid`: an Interval, OneOf, Widths or Anything, which `validate` checks), the value runs
    saved before the field existed had (`older_runs`, which loading a saved config.json fills
    in; ALWAYS for the fields every saved run has), and whether it changes what a run computes
    (`result`: only such fields must match on --resume)."""
    metadata = {"help": doc, "valid": valid, "older_runs": older_runs, "result": result}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=metadata)
    return field(default=default, metadata=metadata)


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
    hidden_sizes: tuple = setting((512, 256, 50), "widths of the hidden layers",
                                  valid=Widths())
    conv_channels: tuple = setting((), "convolution blocks before the hidden layers, one per "
                                   "number: a 3x3 convolution with that many channels, ReLU, "
                                   "batch norm (with --batch-norm) and 2x2 max pooling (none: an "
                                   "MLP; with blocks, a CNN: a teacher for --teacher)",
                                   valid=Widths(none_allowed=True), older_runs=())
    batch_norm: bool = setting(True, "batch normalization after each hidden layer's ReLU",
                               valid=SWITCH)
    dropout: float = setting(0.2, "dropout rate after the first --dropout-layers hidden layers",
                             valid=FRACTION)
    dropout_layers: int = setting(2, "how many hidden layers, from the input side, get dropout",
                                  valid=NON_NEGATIVE)
    l2: float = setting(1e-4, "L2 factor: l2 * sum of squared kernel entries is added to the loss",
                        valid=NON_NEGATIVE)
    initializer: str = setting("he_normal", "kernel initializer of the ReLU layers (the logits "
                               "layer is always glorot_uniform)", valid=OneOf(INITIALIZERS))
    whitening: str = setting("none", "none, or zca: whiten the images with a fixed ZCA transform "
                             "computed from the training images before training (the model's "
                             "first layer, never trained; its fitting counts as training time)",
                             valid=OneOf(WHITENINGS))
    whitening_epsilon: float = setting(0.1, "ZCA whitening damps the input directions whose "
                                       "variance is below about this (pixels in [0, 1])",
                                       valid=POSITIVE)
    # --- optimization ------------------------------------------------------------------------
    epochs: int = setting(60, "maximum number of epochs (early stopping may end sooner)",
                          valid=POSITIVE)
    batch_size: int = setting(128, "training batch size", valid=POSITIVE)
    learning_rate: float = setting(1e-3, "Adam's initial learning rate", valid=POSITIVE)
    lr_schedule: str = setting("plateau", "plateau: reduce on validation-loss plateaus; constant: "
                               "never change it; cosine: cosine decay per step from "
                               "--learning-rate to --min-learning-rate over --epochs, after "
                               "--warmup-epochs of linear warm-up", valid=OneOf(LR_SCHEDULES))
    warmup_epochs: float = setting(0.0, "cosine schedule: epochs of linear warm-up from 0",
                                   valid=NON_NEGATIVE)
    plateau_factor: float = setting(0.5, "multiply the learning rate by this on a plateau",
                                    valid=Interval(0.0, 1.0, low_in=False))
    plateau_patience: int = setting(2, "epochs without improvement before reducing the learning "
                                    "rate", valid=NON_NEGATIVE)
    plateau_min_delta: float = setting(1e-4, "smallest validation-loss decrease that counts as "
                                       "improvement", valid=NON_NEGATIVE)
    plateau_cooldown: int = setting(0, "epochs to wait after a reduction before counting again",
                                    valid=NON_NEGATIVE)
    min_learning_rate: float = setting(1e-6, "the plateau reducer never goes below this; the "
                                       "cosine schedule ends at it", valid=NON_NEGATIVE)
    early_stopping: bool = setting(True, "stop when validation loss stops improving and restore "
                                   "the best epoch's weights", valid=SWITCH)
    early_stopping_patience: int = setting(6, "epochs without improvement before stopping",
                                           valid=NON_NEGATIVE)
    early_stopping_min_delta: float = setting(0.0, "smallest validation-loss decrease that counts",
                                              valid=NON_NEGATIVE)
    early_stopping_start_epoch: int = setting(0, "epochs to wait before early stopping may act",
                                              valid=NON_NEGATIVE)
    # --- extra regularization (experiments.best) ----------------------------------------------
    label_smoothing: float = setting(0.0, "mix the one-hot targets with the uniform distribution "
                                     "by this much", valid=FRACTION)
    augment_shift: int = setting(0, "shift training images by up to N pixels each way (0: off)",
                                 valid=PIXELS)
    augment_flip: bool = setting(False, "mirror training images left-right with probability 1/2",
                                 valid=SWITCH)
    augment_erase: float = setting(0.0, "probability of zeroing a random rectangle of a training "
                                   "image (random erasing)", valid=FRACTION)
    mixup_alpha: float = setting(0.0, "mixup: train on each image mixed with another of its "
                                 "batch, and its one-hot label with the other's, by a weight "
                                 "drawn per batch from Beta(alpha, alpha) (0: off)",
                                 valid=NON_NEGATIVE, older_runs=0.0)
    cutmix_alpha: float = setting(0.0, "cutmix: paste a rectangle of another image of the batch "
                                  "into each image, of area 1 - lambda with lambda drawn per "
                                  "batch from Beta(alpha, alpha), and mix the labels by area "
                                  "(0: off; with --mixup-alpha, each batch takes one of the "
                                  "two)", valid=NON_NEGATIVE, older_runs=0.0)
    teacher: str = setting(None, "distillation: a finished run's directory (e.g. a CNN's) "
                           "whose model also teaches: each training batch's "
                           "loss is (1 - w) * cross-entropy with the labels + w * T^2 * the KL "
                           "divergence from the teacher's predictions on the same images to the "
                           "student's, both softened by temperature T (w: --teacher-weight, T: "
                           "--teacher-temperature)",
                           valid=Anything("a finished run's directory, checked to be one"),
                           older_runs=None)
    teacher_weight: float = setting(0.5, "distillation: the weight w of the teacher's term",
                                    valid=Interval(0.0, 1.0, high_in=True), older_runs=0.5)
    teacher_temperature: float = setting(4.0, "distillation: the temperature T that softens the "
                                         "teacher's and the student's predictions in the "
                                         "teacher's term", valid=POSITIVE, older_runs=4.0)
    ema_decay: float = setting(0.0, "evaluate and keep an exponential moving average of the "
                               "weights with this decay per step (0: off; e.g. 0.999)",
                               valid=FRACTION)
    sam_rho: float = setting(0.0, "sharpness-aware minimization: take each step's gradient at "
                             "the weights moved this far (L2 norm) up the loss's gradient, so "
                             "the step descends the worst loss nearby (0: off; a step then "
                             "costs two passes; one device only)", valid=NON_NEGATIVE,
                             older_runs=0.0)
    lookahead_steps: int = setting(0, "Lookahead: every K optimizer steps, move a slow copy of "
                                   "the weights toward the weights the optimizer reached (by "
                                   "--lookahead-alpha) and go on from there (0: off; e.g. 5)",
                                   valid=NON_NEGATIVE, older_runs=0)
    lookahead_alpha: float = setting(0.5, "Lookahead: the fraction of the way the slow weights "
                                     "move toward the fast ones at each of its syncs",
                                     valid=Interval(0.0, 1.0, low_in=False, high_in=True),
                                     older_runs=0.5)
    test_time_shifts: int = setting(0, "evaluation (validation and test alike) also averages over "
                                    "copies of each view shifted by 1 to N pixels up, down, left "
                                    "and right (0: off; 1: four more views per view)",
                                    valid=PIXELS, older_runs=0)
    test_time_flip: bool = setting(False, "evaluation (validation and test alike) averages the "
                                   "predicted probabilities of each image and its mirror image",
                                   valid=SWITCH)
    # --- execution ---------------------------------------------------------------------------
    seed: int = setting(0, "seeds initialization, shuffling and dropout",
                        valid=Interval(0, 2**31, words="must be in [0, 2^31)"))
    precision: str = setting("float32", "float32, mixed_float16, mixed_bfloat16, or auto "
                             "(mixed_float16 on a GPU of compute capability >= 7.0, else float32)",
                             valid=OneOf(PRECISIONS))
    kernels: str = setting("auto", "batch norm, dropout and Adam's update in training: fused (one "
                           "C++ kernel per layer and per variable update, built with g++ on first "
                           "use; dropout masks from a hash), tensorflow (TensorFlow's ops; masks "
                           "from Philox), or auto (fused on a CPU where they build, else "
                           "tensorflow)", valid=OneOf(KERNELS), older_runs="tensorflow")
    steps_per_loop: int = setting(0, "optimizer steps per tf.function call; 0: a whole epoch per "
                                  "call, or 50 when the progress bar is shown",
                                  valid=NON_NEGATIVE, result=False)
    deterministic: bool = setting(False, "turn on TensorFlow op determinism, so two runs with the "
                                  "same arguments give bit-identical weights", valid=SWITCH)
    # --- distribution ------------------------------------------------------------------------
    strategy: str = setting("one_device", "one_device: this process's first device; mirrored: "
                            "every GPU of this machine, else the logical CPU devices of "
                            "--cpu-devices; multi_worker: one process per machine, the cluster "
                            "read from $TF_CONFIG (MultiWorkerMirroredStrategy)",
                            valid=OneOf(STRATEGIES))
    cpu_devices: int = setting(0, "split the CPU into N logical devices (mirrored without GPUs; "
                               "0: leave it whole)", valid=NON_NEGATIVE)
    sync_batch_norm: bool = setting(False, "batch norm takes its statistics over the global batch "
                                    "(all-reduced across replicas) instead of each replica's part",
                                    valid=SWITCH)
    heartbeat_timeout: float = setting(10.0, "multi_worker: a worker that sends no heartbeat for "
                                       "this many seconds counts as dead, and the others stop "
                                       "with an error (a killed worker is noticed at once)",
                                       valid=HEARTBEAT_SECONDS,
                                       older_runs=10.0, result=False)
    # --- data --------------------------------------------------------------------------------
    data_dir: str = setting(None, "directory with the four IDX files (default: "
                            "$FASHION_MNIST_DIR, the cache, /usr/share/datasets/fashion-mnist, "
                            "else download)",
                            valid=Anything("a directory, checked to exist"), result=False)
    verify_checksums: bool = setting(True, "check the files' SHA-256 and counts against the "
                                     "published dataset (turn off only for other IDX files)",
                                     valid=SWITCH)
    validation_size: int = setting(5000, "the last N images of the training file validate",
                                   valid=POSITIVE)
    train_subset: int = setting(0, "train on only the first N training images (0: all)",
                                valid=NON_NEGATIVE)
    # --- output ------------------------------------------------------------------------------
    logdir: str = setting("tensorboard_logs", "where run directories are created",
                          valid=Anything("a directory, checked to be writable"), result=False)
    run_name: str = setting(None, "the run directory's name (default: experiment name + "
                            "timestamp)",
                            valid=Anything("a plain directory name, checked"), result=False)
    histograms: bool = setting(True, "write per-layer weight histograms each epoch",
                               valid=SWITCH, result=False)
    figures: bool = setting(True, "draw the report's pictures for TensorBoard: the confusion "
                            "matrix, the most confident mistakes, the reliability diagram and "
                            "the corruption chart (matplotlib; about a second); their tables and "
                            "numbers are written either way", valid=SWITCH, older_runs=True,
                            result=False)
    sharpness: bool = setting(False, "measure the final weights' sharpness in the report (the "
                              "training loss's top Hessian eigenvalue and epsilon-sharpness, "
                              "mlp/sharpness.py; a second or two; the studies turn it on)",
                              valid=SWITCH, older_runs=False, result=False)
    corruptions: bool = setting(True, "measure test accuracy on ten corrupted copies of the test "
                                "images in the report (mlp/corruptions.py; a few seconds; the "
                                "studies always do)", valid=SWITCH, older_runs=True, result=False)

    # Fields that saved runs may have and that no longer exist (neither changed results).
    REMOVED_FIELDS = ("collective_timeout",)

    @classmethod
    def with_older_runs(cls, values):
        """A saved config.json's `values` with each field added since it was written, at the
        value the runs of its time had (its `older_runs`), in config.json's form."""
        older = {f.name: f.metadata["older_runs"] for f in dataclasses.fields(cls)
                 if f.metadata["older_runs"] is not ALWAYS and f.name not in values}
        # As config.json holds them (lists for tuples), like the rest of `values`.
        return {**{name: list(value) if isinstance(value, tuple) else value
                   for name, value in older.items()}, **values}

    @classmethod
    def from_dict(cls, values, source):
        """The Config a saved dict (config.json) describes, every field present and nothing else;
        ConfigError naming `source` otherwise. Types and ranges are checked by `validate`."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: not a JSON object of settings; restore the file or "
                              "start a new run")
        names = {f.name for f in dataclasses.fields(cls)}
        values = cls.with_older_runs({k: v for k, v in values.items()
                                      if k not in cls.REMOVED_FIELDS})
        unknown, missing = sorted(set(values) - names), sorted(names - set(values))
        if unknown or missing:
            what = "; ".join(part for part in (
                f"unknown settings {', '.join(unknown)}" if unknown else "",
                f"missing settings {', '.join(missing)}" if missing else "") if part)
            raise ConfigError(f"{source}: {what}; it was edited or written by another version: "
                              "restore it or start a new run")
        return cls(**{name: tuple(value) if name in TUPLE_FIELDS and isinstance(value, list)
                      else value for name, value in values.items()})

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
            problem = f.metadata["valid"].problem(value)
            if problem:
                bad(f.name, problem)
        if self.warmup_epochs >= self.epochs and self.lr_schedule == "cosine":
            bad("warmup_epochs", f"must be shorter than --epochs ({self.epochs})")
        if self.sam_rho and self.strategy != "one_device":
            raise ConfigError("--sam-rho: sharpness-aware minimization runs on one device: each "
                              "replica would move the shared weights by its own gradient; use "
                              "--strategy one_device")
        if len(self.conv_channels) > MAX_CONV_BLOCKS:
            bad("conv_channels", f"at most {MAX_CONV_BLOCKS} blocks (each halves the image's "
                f"side of {SIDE}), got {len(self.conv_channels)}")
        if self.conv_channels and self.whitening != "none":
            bad("whitening", "is for an MLP's pixels; a CNN (--conv-channels) sees the image "
                "itself: use --whitening none")
        if self.cpu_devices and self.strategy == "multi_worker":
            bad("cpu_devices", "applies to one_device and mirrored only; multi_worker runs one "
                "replica per worker process")
        if self.data_dir is not None and not Path(self.data_dir).expanduser().is_dir():
            bad("data_dir", f"{self.data_dir} is not a directory")
        if self.teacher is not None:
            try:
                check_finished_run(Path(self.teacher).expanduser())
            except ConfigError as e:
                bad("teacher", str(e))
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
        if self.teacher is None:
            unused += ["teacher_weight", "teacher_temperature"]
        if not self.lookahead_steps:
            unused.append("lookahead_alpha")
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
        return {f.name: value for f, value in zip(dataclasses.fields(self),
                                                  self.to_dict().values())
                if f.metadata["result"]}


TUPLE_FIELDS = {f.name for f in dataclasses.fields(Config) if f.type is tuple}


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


def check_finished_run(run_dir):
    """ConfigError unless `run_dir` is a run directory whose run has finished."""
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.json); give the directory "
                          "a training run wrote")
    if not (run_dir / "results.json").is_file():
        raise ConfigError(f"{run_dir}: the run has not finished (no results.json); finish it "
                          "with --resume first")


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
            # Widths that may be none take the flag alone for none.
            none_allowed = f.metadata["valid"].none_allowed
            group.add_argument(flag, type=int, nargs="*" if none_allowed else "+",
                                default=default, help=help_text, metavar="N")
        else:
            kind = {int: int, float: float, str: str}[f.type]
            group.add_argument(flag, type=kind, default=default, help=help_text,
                                choices=getattr(f.metadata["valid"], "choices", None),
                                metavar=f.name.upper())


def _show(value):
    if value == ():
        return "none"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return value


def from_arguments(args):
    """The Config that parsed arguments describe."""
    return Config(**{f.name: tuple(getattr(args, f.name)) if f.name in TUPLE_FIELDS
                     else getattr(args, f.name) for f in dataclasses.fields(Config)})
