import dataclasses
import io

import keras
import numpy as np
import pytest
import tensorflow as tf

from mlp import MLP, Config, Trainer
from mlp import data as data_lib
from mlp.optim import make_optimizer
from mlp.precision import resolve
from mlp.experiment import assemble, finish

SMALL = Config(hidden_sizes=(32, 16), epochs=3, batch_size=50, validation_size=100,
               verify_checksums=False, histograms=False, lr_schedule="constant",
               early_stopping=False)


@pytest.fixture(scope="module")
def splits(small_data):
    return data_lib.load(small_data, verify_checksums=False, validation_size=100)


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


@pytest.mark.parametrize("gpus,expected", [([], "float32"), ([(6, 1)], "float32"),
                                           ([(7, 0)], "mixed_float16"),
                                           ([(6, 0), (8, 6)], "mixed_float16")])
def test_auto_precision_picks_float16_only_on_tensor_core_gpus(gpus, expected):
    assert resolve("auto", gpus=gpus) == expected
    assert resolve("mixed_bfloat16", gpus=gpus) == "mixed_bfloat16"


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
    assert any(not np.array_equal(old, v.numpy()) for old, v in zip(before, model.trainable_variables))


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
