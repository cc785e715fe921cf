"""The builder: everything a run trains with, made from a Config inside a strategy's scope.

    parts = build(config, strategy)

Experiments (through mlp/run.py), the benchmark, the profiler and the tests all get their
model, optimizer, schedule, trainer, evaluator and pipelines here; nothing else constructs them.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from mlp import data as data_lib
from mlp import fused
from mlp import model as model_lib
from mlp.augment import make_augment, make_mix
from mlp.config import ConfigError
from mlp.evaluation import Evaluator
from mlp.machine import cache_dir
from mlp.optim import make_optimizer
from mlp.precision import COMPUTE_DTYPES, probe_model, resolve
from mlp.l2 import L2Term
from mlp.schedules import cosine_with_warmup
from mlp.trained import chosen_model
from mlp.training import Trainer
from mlp.whitening import zca


@dataclass
class Parts:
    """What `build` makes. `train_images`/`train_labels` are the training examples after
    --train-subset; `steps_per_epoch` counts global batches."""
    config: object
    strategy: tf.distribute.Strategy
    precision: str
    precision_probe: object  # {precision: seconds per step} when `auto` measured, else None
    kernels: str  # "fused" or "tensorflow" (see mlp/fused.py)
    kernels_note: str  # why `auto` did not take the fused kernels, or ""
    splits: data_lib.Splits
    train_images: object
    train_labels: object
    steps_per_epoch: int
    model: object  # an MLP, or a ConvNet (mlp/model.py)
    optimizer: object
    schedule: object
    trainer: Trainer
    evaluator: Evaluator
    whitening_seconds: float = 0.0  # fitting the input transform: part of the training time
    # With --teacher: the teacher's run, weights digest, test accuracy and training seconds.
    teacher: dict = None

    @property
    def replicas(self):
        return self.strategy.num_replicas_in_sync

    def training_batches(self, start_step=0):
        """The training stream from global step `start_step`, distributed over the replicas."""
        config = self.config
        augment = make_augment(config.seed, config.augment_shift, config.augment_flip,
                               config.augment_erase)
        mix = make_mix(config.seed, config.mixup_alpha, config.cutmix_alpha)
        return self._distribute(lambda context: data_lib.training_batches(
            self.train_images, self.train_labels, config.batch_size, config.seed,
            start_step=start_step, augment=augment, input_context=context, mix=mix))

    def evaluation_batches(self, images, labels):
        """`images`, `labels` once in order, distributed over the replicas."""
        return self._distribute(lambda context: data_lib.evaluation_batches(
            images, labels, input_context=context))

    def _distribute(self, dataset_fn):
        if self.replicas == 1:
            return dataset_fn(None)  # the plain tf.data pipeline, as without a strategy
        return self.strategy.distribute_datasets_from_function(dataset_fn)


def build(config, strategy=None, splits=None, precision=None, kernels=None):
    """The parts of a run of `config` under `strategy` (default: the current one), on `splits`
    (default: loaded as the config says), in `precision` (default: config.precision, where
    `auto` probes this machine; see mlp/precision.py), with `kernels` (default: config.kernels;
    see mlp/fused.py). With --whitening, the transform is fitted to the training images here.
    Raises ConfigError when the global batch cannot be split over the replicas or the fused
    kernels asked for cannot be built, and mlp.data.DataError for bad data."""
    strategy = strategy or tf.distribute.get_strategy()
    kernels, fused_ops, kernels_note = fused.resolve(kernels or config.kernels)
    probe = None
    if precision is None:
        # Workers of a multi-worker run could measure differently; they share float32 on CPUs.
        probe_fn = (None if config.strategy == "multi_worker" else
                    probe_model(config, str(cache_dir() / "precision-probe.json"),
                                fused_ops))
        precision, probe = resolve(config.precision, probe=probe_fn)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    splits = splits or data_lib.load(config.data_dir, config.verify_checksums,
                                     config.validation_size)
    train_images, train_labels = splits.train_images, splits.train_labels
    if config.train_subset > len(train_images):
        raise ConfigError(f"--train-subset: {config.train_subset} is more than the "
                          f"{len(train_images)} training images; use at most that many")
    if config.train_subset:
        train_images = train_images[:config.train_subset]
        train_labels = train_labels[:config.train_subset]
    steps_per_epoch = math.ceil(len(train_images) / config.batch_size)
    replicas = strategy.num_replicas_in_sync
    last_batch = len(train_images) - (steps_per_epoch - 1) * config.batch_size
    if replicas > 1 and (config.batch_size < replicas or last_batch < replicas):
        raise ConfigError(f"--batch-size: a global batch of {config.batch_size} (and an epoch's "
                          f"last batch of {last_batch}) must give each of the {replicas} replicas "
                          "an example; use a larger batch or fewer replicas")

    input_transform, whitening_seconds = None, 0.0
    if config.whitening == "zca":
        started = time.perf_counter()
        input_transform = zca(train_images, config.whitening_epsilon)
        whitening_seconds = time.perf_counter() - started

    with strategy.scope():
        model = model_lib.from_config(config, COMPUTE_DTYPES[precision], input_transform,
                                      fused_ops)
        schedule = None
        if config.lr_schedule == "cosine":
            schedule = cosine_with_warmup(config.learning_rate, config.epochs * steps_per_epoch,
                                          round(config.warmup_epochs * steps_per_epoch),
                                          config.min_learning_rate)
        optimizer = make_optimizer(precision, config.learning_rate, fused_ops)
        l2_term = L2Term(model.kernels, config.l2)
        teacher, teacher_record = _teacher(config) if config.teacher is not None else (None, None)
        trainer = Trainer(model, optimizer, l2=l2_term, label_smoothing=config.label_smoothing,
                          schedule=schedule, ema_decay=config.ema_decay,
                          sam_rho=config.sam_rho, lookahead_steps=config.lookahead_steps,
                          lookahead_alpha=config.lookahead_alpha, teacher=teacher,
                          teacher_weight=config.teacher_weight,
                          teacher_temperature=config.teacher_temperature, strategy=strategy)
        evaluator = Evaluator(model, l2=l2_term, test_time_flip=config.test_time_flip,
                              test_time_shifts=config.test_time_shifts, strategy=strategy)
    return Parts(config=config, strategy=strategy, precision=precision, precision_probe=probe,
                 kernels=kernels, kernels_note=kernels_note, splits=splits,
                 train_images=train_images, train_labels=train_labels,
                 steps_per_epoch=steps_per_epoch, model=model, optimizer=optimizer,
                 schedule=schedule, trainer=trainer, evaluator=evaluator,
                 whitening_seconds=whitening_seconds, teacher=teacher_record)


def _teacher(config):
    """(the function images -> logits of --teacher's model in inference, the record of it that
    results.json keeps). ConfigError when the teacher's run did not hold out the same validation
    images: they would have been among its training images."""
    run_dir = Path(config.teacher).expanduser()
    try:
        model, teacher_config, results = chosen_model(run_dir)
    except ConfigError as e:
        raise ConfigError(f"--teacher: {e}") from None
    if teacher_config.validation_size != config.validation_size:
        raise ConfigError(f"--teacher: {run_dir} held out --validation-size "
                          f"{teacher_config.validation_size}, this run {config.validation_size}: "
                          "the teacher trained on images this run validates on; use a teacher "
                          "with the same --validation-size")
    record = {"run": str(run_dir.resolve()), "weights_digest": results["weights_digest"],
              "test_accuracy": results["test_accuracy"],
              "train_seconds": results.get("train_seconds")}
    return (lambda images: model(images, training=False)), record
