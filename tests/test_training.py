import dataclasses
import inspect
import io

import keras
import numpy as np
import pytest
import tensorflow as tf

from mlp import MLP, Config, Evaluator, Trainer, fused
from mlp import data as data_lib
from mlp.optim import make_optimizer
from mlp.precision import resolve
from mlp.run import assemble, finish

SMALL = Config(hidden_sizes=(32, 16), epochs=3, batch_size=50, validation_size=100,
               verify_checksums=False, histograms=False, lr_schedule="constant",
               early_stopping=False)


@pytest.fixture(scope="module")
def splits(small_data):
    return data_lib.load(small_data, verify_checksums=False, validation_size=100)


@pytest.mark.slow  # a 4-epoch run
def test_each_function_traces_once_over_epochs_with_a_learning_rate_change(splits, tmp_path):
    config = dataclasses.replace(SMALL, epochs=4, steps_per_loop=3, lr_schedule="plateau",
                                 plateau_patience=0, plateau_min_delta=10.0)  # reduce every epoch
    run = assemble(config, tmp_path / "run", splits=splits, out=io.StringIO())
    results = finish(run)
    rates = [record["learning_rate"] for record in results["history"]]
    assert rates[1] > rates[2] > rates[3]  # the learning rate did change between calls
    assert run.parts.trainer.train_loop.experimental_get_tracing_count() == 1
    # validation, training-set, test evaluation: same element spec, one trace
    assert run.parts.evaluator.evaluate.experimental_get_tracing_count() == 1


def test_training_lowers_the_loss_and_counts_steps(splits, tmp_path):
    results = finish(assemble(SMALL, tmp_path / "run", splits=splits, out=io.StringIO()))
    losses = [record["data_loss"] for record in results["history"]]
    assert losses[-1] < losses[0]
    assert results["steps"] == 3 * 10  # 500 images, batch 50
    assert results["test_accuracy"] > 0.5  # the small data is learnable; chance is 0.1


def test_learning_rate_is_the_optimizers_variable():
    model = MLP(hidden_sizes=(4,), input_size=3)
    trainer = Trainer(model, make_optimizer("float32", 1e-3))
    variable = trainer.optimizer.learning_rate
    trainer.learning_rate = 2.5e-4
    assert trainer.optimizer.learning_rate is variable
    assert trainer.learning_rate == pytest.approx(2.5e-4)


def _no_probe():
    raise AssertionError("the probe must not run here")


@pytest.mark.parametrize("gpus,expected", [([(6, 1)], "float32"), ([(7, 0)], "mixed_float16"),
                                           ([(6, 0), (8, 6)], "mixed_float16")])
def test_auto_precision_on_gpus_needs_no_probe(gpus, expected):
    assert resolve("auto", gpus=gpus, probe=_no_probe) == (expected, None)
    assert resolve("mixed_bfloat16", gpus=gpus, probe=_no_probe) == ("mixed_bfloat16", None)


@pytest.mark.parametrize("seconds,expected", [
    ({"float32": 1.87, "mixed_bfloat16": 3.12}, "float32"),         # bfloat16 1.7x slower
    ({"float32": 1.32, "mixed_bfloat16": 0.886}, "mixed_bfloat16")])  # bfloat16 1.5x faster
def test_auto_precision_on_a_cpu_takes_what_the_probe_measured_fastest(seconds, expected):
    assert resolve("auto", gpus=[], probe=lambda: seconds) == (expected, seconds)


def test_the_probe_measures_once_per_machine_and_shape(tmp_path, monkeypatch):
    from mlp import precision as precision_lib

    calls = []
    monkeypatch.setattr(precision_lib, "measure",
                        lambda config, **_: calls.append(config) or {"float32": 2.0,
                                                                "mixed_bfloat16": 1.0})
    cache = str(tmp_path / "probe.json")
    probe = precision_lib.probe_model(SMALL, cache)
    assert probe() == probe() == {"float32": 2.0, "mixed_bfloat16": 1.0}
    assert len(calls) == 1
    precision_lib.probe_model(dataclasses.replace(SMALL, hidden_sizes=(64,)), cache)()
    assert len(calls) == 2  # another shape is measured anew


def test_the_real_probe_times_both_candidates():
    from mlp.precision import measure

    seconds = measure(SMALL, rounds=1, steps=2)
    assert set(seconds) == {"float32", "mixed_bfloat16"} and all(s > 0 for s in seconds.values())


@pytest.mark.slow  # a whole run
def test_auto_records_its_choice_and_a_resume_keeps_it(splits, tmp_path, monkeypatch):
    from mlp import precision as precision_lib

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(precision_lib, "measure",
                        lambda config, **_: {"float32": 2.0, "mixed_bfloat16": 1.0})
    config = dataclasses.replace(SMALL, precision="auto", epochs=2)
    run = assemble(config, tmp_path / "run", splits=splits, out=io.StringIO())
    assert run.parts.precision == "mixed_bfloat16"
    run.controller.epochs = 1  # stop after one epoch, as if interrupted
    run.controller.train()
    # The machine now measures the other way; the run goes on in the precision it started in.
    monkeypatch.setattr(precision_lib, "measure",
                        lambda config, **_: {"float32": 1.0, "mixed_bfloat16": 2.0})
    (tmp_path / "cache").rename(tmp_path / "old-cache")
    resumed = assemble(config, tmp_path / "run", resume=True, splits=splits, out=io.StringIO())
    assert resumed.parts.precision == "mixed_bfloat16"
    results = finish(resumed)
    assert results["precision"] == "mixed_bfloat16" and results["epochs_run"] == 2
    fresh = assemble(config, tmp_path / "fresh", splits=splits, out=io.StringIO())
    assert fresh.parts.precision == "float32"


def test_float16_overflowing_step_is_skipped_and_the_scale_halves():
    model = MLP(hidden_sizes=(8,), batch_norm=False, dropout=0.0, input_size=6,
                compute_dtype=tf.float16)
    optimizer = make_optimizer("mixed_float16", 1e-2)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    trainer = Trainer(model, optimizer)
    before = [v.numpy().copy() for v in model.trainable_variables]
    scale = float(optimizer.dynamic_scale.numpy())
    images = tf.fill([4, 6], tf.constant(6e4, tf.float32))  # float16 activations overflow to inf
    labels = tf.constant([0, 1, 2, 3])
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    trainer.train_loop(iter(dataset), tf.constant(1))
    assert float(optimizer.dynamic_scale.numpy()) == scale / 2
    for old, variable in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(old, variable.numpy())

    sane = tf.data.Dataset.from_tensors((images / 6e4, labels)).repeat()
    trainer.train_loop(iter(sane), tf.constant(3))
    assert any(not np.array_equal(old, v.numpy())
               for old, v in zip(before, model.trainable_variables))


def test_dynamic_loss_scale_grows_after_finite_steps():
    model = MLP(hidden_sizes=(8,), input_size=6, compute_dtype=tf.float16)
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3),
                                                    initial_scale=4.0, dynamic_growth_steps=2)
    trainer = Trainer(model, optimizer)
    dataset = tf.data.Dataset.from_tensors((tf.ones([4, 6]), tf.constant([0, 1, 2, 3]))).repeat()
    trainer.train_loop(iter(dataset), tf.constant(4))
    assert float(optimizer.dynamic_scale.numpy()) == 16.0


def test_bfloat16_training_learns(splits, tmp_path):
    config = dataclasses.replace(SMALL, precision="mixed_bfloat16")
    run = assemble(config, tmp_path / "run", splits=splits, out=io.StringIO())
    results = finish(run)
    assert run.parts.model.hidden[0].kernel.dtype == tf.float32
    assert results["history"][-1]["data_loss"] < results["history"][0]["data_loss"]


@pytest.mark.slow  # a whole run
def test_early_stopping_triggers_and_restores_the_best_epochs_weights(splits, tmp_path):
    from mlp.training import weights_digest

    # min_delta 10: no epoch after the first counts as an improvement, so with patience 2 the run
    # stops after epoch 3 and its best epoch is 1.
    config = dataclasses.replace(SMALL, epochs=10, early_stopping=True, early_stopping_patience=2,
                                 early_stopping_min_delta=10.0)
    run = assemble(config, tmp_path / "run", splits=splits, out=io.StringIO())

    class Digests:
        digests = []

        def end_of_epoch(self, epoch, record):
            self.digests.append(weights_digest(run.parts.model))

        def resumed(self, history):
            pass

    run.controller.records.append(Digests())
    results = finish(run)
    assert results["stopped_early"] and results["epochs_run"] == 3
    assert results["best_epoch"] == 1
    assert results["weights_digest"] == Digests.digests[0] != Digests.digests[-1]


def _one_step_update(l2, optimizer, images, labels):
    model = MLP(hidden_sizes=(5,), batch_norm=False, dropout=0.0, input_size=6, seed=2)
    before = [v.numpy().copy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        data_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels, model(images, training=True)))
    data_gradients = [g.numpy() for g in tape.gradient(data_loss, model.trainable_variables)]
    trainer = Trainer(model, optimizer, l2=l2)
    trainer.train_loop(iter(tf.data.Dataset.from_tensors((images, labels)).repeat()),
                       tf.constant(1))
    return model, before, data_gradients


def test_autograph_rewrites_nothing_of_training_and_evaluation(monkeypatch):
    # AutoGraph's rewriting of the loops, model, loss, optimizer and augmentation cost from half
    # a second to seconds at every process's start. A rewritten function runs from AutoGraph's
    # generated file; each rewriting goes through its `_convert_actual`.
    from tensorflow.python.autograph.impl import api

    files, converted = [], []
    convert = api._convert_actual
    monkeypatch.setattr(api, "_convert_actual",
                        lambda entity, context: (converted.append(entity)
                                                 or convert(entity, context)))

    class Model(MLP):
        def __call__(self, images, **kwargs):
            files.append(inspect.currentframe().f_code.co_filename)
            return super().__call__(images, **kwargs)

    model = Model(hidden_sizes=(5,), input_size=6, seed=2)
    images = tf.random.stateless_uniform([8, 6], seed=[0, 1])
    labels = tf.constant([0, 1, 2, 3, 4, 5, 6, 7], tf.int32)
    dataset = tf.data.Dataset.from_tensors((images, labels))
    trainer, evaluator = Trainer(model, keras.optimizers.SGD(0.1)), Evaluator(model)
    trainer.train_loop(iter(dataset.repeat()), tf.constant(2))
    evaluator.evaluate(dataset)

    def augment(images, batch_number):  # and tf.data's map over the training batches
        files.append(inspect.currentframe().f_code.co_filename)
        return images

    next(iter(data_lib.training_batches(np.zeros([4, 784], np.float32), np.zeros(4, np.int32),
                                        batch_size=2, seed=0, augment=augment)))
    assert len(files) == 3  # traced once by each
    assert files == [__file__] * 3
    assert converted == []


def test_the_training_gradient_is_the_data_gradient_plus_2_l2_w():
    # With an optimizer that cannot take the L2 term's gradient, the trainer adds it.
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((8, 6)), tf.float32)
    labels = tf.constant(rng.integers(0, 10, 8), tf.int32)
    l2 = 0.05
    model, before, data_gradients = _one_step_update(l2, keras.optimizers.SGD(1.0), images, labels)
    kernels = {id(k) for k in model.kernels}
    for variable, old, gradient in zip(model.trainable_variables, before, data_gradients):
        expected = gradient + (2 * l2 * old if id(variable) in kernels else 0)
        np.testing.assert_allclose(old - variable.numpy(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kernels,loss_scaling", [("tensorflow", False), ("fused", False),
                                                   ("fused", True)])
def test_fused_adam_with_the_l2_gradient_trains_as_adam_on_the_penalized_loss(kernels,
                                                                              loss_scaling):
    # The trainer hands the L2 term to FusedAdam (folded into MlpApplyAdam's pass with the fused
    # kernels; under loss scaling, added to the unscaled gradient). Oracle: Keras's Adam on data
    # loss + l2_penalty, differentiated by the tape. The penalty's gradient is about as large as
    # the data gradient here, so a wrong factor shows.
    from mlp.optim import FusedAdam
    from mlp.l2 import l2_penalty

    rng = np.random.default_rng(3)
    images = tf.constant(rng.random((8, 6)), tf.float32)
    labels = tf.constant(rng.integers(0, 10, 8), tf.int32)
    l2, steps = 0.2, 4

    def model():
        return MLP(hidden_sizes=(5,), batch_norm=False, dropout=0.0, input_size=6, seed=2)

    ours = model()
    optimizer = FusedAdam(0.05, fused_ops=fused.load() if kernels == "fused" else None)
    if loss_scaling:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0 ** 12)
    trainer = Trainer(ours, optimizer, l2=l2)
    assert trainer.l2_in_optimizer
    trainer.train_loop(iter(tf.data.Dataset.from_tensors((images, labels)).repeat()),
                       tf.constant(steps))

    reference, adam = model(), keras.optimizers.Adam(0.05)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, reference(images, training=True))) + l2_penalty(reference.kernels, l2)
        adam.apply(tape.gradient(loss, reference.trainable_variables),
                   reference.trainable_variables)
    for a, b in zip(ours.trainable_variables, reference.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def test_the_trainer_scales_the_loss_for_a_loss_scale_optimizer():
    # The optimizer divides the gradients by the scale: the step is the true gradient step only
    # if the trainer multiplied the loss by it first.
    rng = np.random.default_rng(1)
    images = tf.constant(rng.random((8, 6)), tf.float32)
    labels = tf.constant(rng.integers(0, 10, 8), tf.int32)
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1.0),
                                                    initial_scale=2.0 ** 12)
    model, before, data_gradients = _one_step_update(0.0, optimizer, images, labels)
    for variable, old, gradient in zip(model.trainable_variables, before, data_gradients):
        np.testing.assert_allclose(old - variable.numpy(), gradient, rtol=1e-4, atol=1e-6)
