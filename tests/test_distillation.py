"""Distillation: the CNN teacher (ConvNet, Conv2D), the teacher's term of the loss, and
experiments.teacher / experiments.distilled end to end."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp import MLP, ConvNet, Trainer
from mlp.config import Config, ConfigError
from mlp.layers import Conv2D
from tests.conftest import SMALL_RUN_FLAGS, run_module


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 5), channels=st.lists(st.integers(1, 6), min_size=1, max_size=4),
       widths=st.lists(st.integers(1, 8), min_size=1, max_size=2), training=st.booleans())
def test_a_convnet_gives_logits_for_any_batch_blocks_and_widths(batch, channels, widths,
                                                               training):
    model = ConvNet(tuple(channels), hidden_sizes=tuple(widths), dropout=0.2, seed=1)
    images = tf.random.stateless_uniform([batch, 784], seed=(batch, len(channels)))
    logits = model(images, training=training, step=tf.constant(3, tf.int64))
    assert logits.shape == (batch, 10) and logits.dtype == tf.float32
    # L2 covers every convolution's and dense layer's kernel, and nothing else.
    assert len(model.kernels) == len(channels) + len(widths) + 1
    assert model.kernels[0].shape == (3, 3, 1, channels[0])
    assert {id(k) for k in model.kernels} <= {id(v) for v in model.trainable_variables}


def test_a_convolution_matches_the_sum_over_each_pixels_neighbourhood():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    conv = Conv2D(3, 4, seed=(0, 1))
    conv.bias.assign(rng.normal(size=4).astype(np.float32))
    kernel, bias = conv.kernel.numpy(), conv.bias.numpy()
    padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)])
    expected = np.zeros((2, 5, 6, 4), np.float32)
    for r in range(5):
        for c in range(6):
            window = padded[:, r:r + 3, c:c + 3, :]  # the 3x3 pixels centred on (r, c)
            expected[:, r, c, :] = np.einsum("nijc,ijco->no", window, kernel) + bias
    np.testing.assert_allclose(conv(tf.constant(images)).numpy(), np.maximum(expected, 0),
                               rtol=1e-5, atol=1e-5)


def test_a_convnets_batch_norm_takes_each_channels_statistics_over_pixels_and_images():
    model = ConvNet((2,), hidden_sizes=(3,), dropout=0.0, seed=0)
    images = tf.random.stateless_uniform([4, 784], seed=(0, 0))
    model(images, training=True)
    norm, conv = model.conv_norms[0], model.convolutions[0]
    features = conv(tf.reshape(images, [4, 28, 28, 1])).numpy().reshape(-1, 2)
    # One training call moves the moving statistics 1% of the way to the batch's.
    np.testing.assert_allclose(norm.moving_mean.numpy(), 0.01 * features.mean(0), rtol=1e-4)
    np.testing.assert_allclose(norm.moving_variance.numpy(), 0.99 + 0.01 * features.var(0),
                               rtol=1e-4)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), weight=st.floats(0.0, 1.0),
       temperature=st.floats(0.5, 8.0), smoothing=st.sampled_from([0.0, 0.1]))
def test_the_teachers_term_is_the_weighted_kl_divergence_at_the_temperature(
        seed, weight, temperature, smoothing):
    rng = np.random.default_rng(seed)
    student = rng.normal(0, 3, (6, 10)).astype(np.float32)
    teacher = rng.normal(0, 3, (6, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 6).astype(np.int32)
    trainer = Trainer(MLP(hidden_sizes=(3,), input_size=4), keras.optimizers.SGD(0.1),
                      label_smoothing=smoothing, teacher=lambda x: x, teacher_weight=weight,
                      teacher_temperature=temperature)

    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    targets = np.eye(10)[labels] * (1 - smoothing) + smoothing / 10
    cross_entropy = -(targets * log_softmax(student)).sum(1)
    t, s = log_softmax(teacher / temperature), log_softmax(student / temperature)
    divergence = (np.exp(t) * (t - s)).sum(1)
    expected = (1 - weight) * cross_entropy + weight * temperature**2 * divergence
    got = trainer.data_loss(tf.constant(student), tf.constant(labels), tf.constant(teacher))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)
    # A student that predicts what its teacher does pays nothing for the teacher's term.
    same = trainer.data_loss(tf.constant(teacher), tf.constant(labels), tf.constant(teacher))
    np.testing.assert_allclose(same.numpy(), (1 - weight) * -(targets * log_softmax(teacher))
                               .sum(1), rtol=1e-4, atol=1e-4)


class _Recording(tf.Module):
    """A model that keeps the last images it was called on in training."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.seen = tf.Variable(tf.zeros([8, 784]), trainable=False)

    @property
    def kernels(self):
        return self.model.kernels

    def __call__(self, images, training, step=0, replica=None):
        if training:
            self.seen.assign(images)
        return self.model(images, training, step, replica)


def test_a_step_with_a_teacher_descends_its_loss_on_the_images_the_student_sees():
    from mlp.augment import make_augment
    from mlp.data import epoch_permutation, training_batches

    rng = np.random.default_rng(0)
    images = rng.random((8, 784)).astype(np.float32)
    labels = rng.integers(0, 10, 8).astype(np.int32)
    teacher_model = MLP(hidden_sizes=(7,), batch_norm=False, dropout=0.0, seed=9)
    teacher_seen = tf.Variable(tf.zeros([8, 784]), trainable=False)

    def teacher(batch):
        teacher_seen.assign(batch)
        return teacher_model(batch, training=False)

    student = _Recording(MLP(hidden_sizes=(6,), batch_norm=False, dropout=0.0, seed=3))
    start = [v.numpy() for v in student.trainable_variables]
    teacher_start = [v.numpy() for v in teacher_model.variables]
    trainer = Trainer(student, keras.optimizers.SGD(0.5), teacher=teacher, teacher_weight=0.7,
                      teacher_temperature=2.0)
    batches = training_batches(images, labels, 8, seed=0, augment=make_augment(0, shift=2,
                                                                               flip=True))
    assert int(trainer.train_loop(iter(batches), tf.constant(1))) == 1
    seen = student.seen.numpy()
    # The teacher saw the augmented batch the student saw (not the plain images), and stayed.
    np.testing.assert_array_equal(teacher_seen.numpy(), seen)
    assert not np.array_equal(np.sort(seen, 0), np.sort(images, 0))
    for variable, value in zip(teacher_model.variables, teacher_start):
        np.testing.assert_array_equal(variable.numpy(), value)
    # By hand: the gradient of 0.3 CE + 0.7 * 4 * KL at T=2 on that batch, whose examples
    # come in the first epoch's order.
    order = epoch_permutation(8, 0, 0).numpy()
    copy = MLP(hidden_sizes=(6,), batch_norm=False, dropout=0.0, seed=3)
    teacher_logits = teacher_model(tf.constant(seen), training=False) / 2.0
    with tf.GradientTape() as tape:
        logits = copy(tf.constant(seen), training=True)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels[order], logits)
        kl = tf.reduce_sum(tf.nn.softmax(teacher_logits) * (tf.nn.log_softmax(teacher_logits)
                                                             - tf.nn.log_softmax(logits / 2.0)), 1)
        loss = tf.reduce_mean(0.3 * ce + 0.7 * 4.0 * kl)
    gradients = tape.gradient(loss, copy.trainable_variables)
    for variable, value, gradient in zip(student.trainable_variables, start, gradients):
        np.testing.assert_allclose(variable.numpy(), value - 0.5 * gradient.numpy(), rtol=1e-4,
                                   atol=1e-6)


def test_convolution_and_teacher_settings_are_checked(tmp_path):
    for name in ("config.json", "results.json"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(ConfigError, match="--conv-channels: at most 4 blocks"):
        Config(conv_channels=(2, 2, 2, 2, 2)).validate()
    with pytest.raises(ConfigError, match="--conv-channels: need zero or more positive"):
        Config(conv_channels=(4, 0)).validate()
    with pytest.raises(ConfigError, match="--whitening: is for an MLP's pixels"):
        Config(conv_channels=(4,), whitening="zca").validate()
    with pytest.raises(ConfigError, match=r"--teacher-weight: must be in \[0, 1\]"):
        Config(teacher=str(tmp_path), teacher_weight=1.5).validate()
    assert Config(conv_channels=(4, 8), teacher=str(tmp_path), teacher_weight=1.0).validate()
    # The flag alone is no blocks: an MLP.
    from mlp.cli import build_parser
    from mlp.config import from_arguments

    parser = build_parser("p", Config(conv_channels=(4,)), "")
    assert from_arguments(parser.parse_args(["--conv-channels"])).conv_channels == ()
    assert from_arguments(parser.parse_args([])).conv_channels == (4,)
    assert "teacher_weight" in Config().unused_fields()
    assert "teacher_weight" not in Config(teacher="x").unused_fields()


TINY_TEACHER_FLAGS = ["--conv-channels", "4", "--hidden-sizes", "8", "--epochs", "2",
                      "--warmup-epochs", "0.5"]


@pytest.mark.slow
def test_distilled_trains_its_teacher_first_and_records_it(small_data, tmp_path, monkeypatch):
    from experiments import distilled
    from experiments.recipes import TEACHER

    monkeypatch.setattr(distilled, "TEACHER", dataclasses.replace(
        TEACHER, conv_channels=(4,), hidden_sizes=(8,), epochs=2, warmup_epochs=0.5))
    flags = [*SMALL_RUN_FLAGS, "--data-dir", small_data, "--logdir", tmp_path, "--epochs", "2",
             "--warmup-epochs", "0.5", "--hidden-sizes", "16", "--seed", "5",
             "--precision", "float32", "--deterministic", "--run-name", "d"]
    result = run_module("distilled", *flags)
    assert result.returncode == 0, result.stderr
    run_dir, teacher_dir = tmp_path / "d", tmp_path / "d" / "teacher"
    student = json.loads((run_dir / "results.json").read_text())
    teacher = json.loads((teacher_dir / "results.json").read_text())
    teacher_config = json.loads((teacher_dir / "config.json").read_text())
    assert teacher_config["conv_channels"] == [4] and teacher_config["seed"] == 5
    assert teacher_config["validation_size"] == 100
    assert (teacher_config["logdir"], teacher_config["run_name"]) == (str(run_dir), "teacher")
    assert student["experiment_config"]["teacher"] == str(teacher_dir)
    assert student["teacher"] == {"run": str(teacher_dir.resolve()),
                                  "weights_digest": teacher["weights_digest"],
                                  "test_accuracy": teacher["test_accuracy"],
                                  "train_seconds": teacher["train_seconds"]}
    assert f"(+ the teacher's {teacher['train_seconds']:.1f}s)" in result.stdout
    assert student["experiment_config"]["conv_channels"] == []  # the student is an MLP

    # Stopped after the teacher finished, before the student started: --resume trains the
    # student, and leaves the teacher as it was.
    (run_dir / "results.json").unlink()
    for path in (run_dir / "checkpoints").iterdir():
        path.unlink()
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "teacher": None}))
    before = (teacher_dir / "results.json").stat().st_mtime_ns
    resumed = run_module("distilled", "--resume", "--run-name", "d", "--logdir", tmp_path,
                         "--data-dir", small_data)
    assert resumed.returncode == 0, resumed.stderr
    assert (teacher_dir / "results.json").stat().st_mtime_ns == before
    again = json.loads((run_dir / "results.json").read_text())
    assert again["weights_digest"] == student["weights_digest"]

    # Stopped while the teacher trained (its checkpoints, no results.json; the student's
    # config.json names no teacher yet): --resume finishes the teacher from its checkpoint,
    # then trains the student, to the same weights.
    (run_dir / "results.json").unlink()
    (teacher_dir / "results.json").unlink()
    for path in (run_dir / "checkpoints").iterdir():
        path.unlink()
    (run_dir / "config.json").write_text(json.dumps({**config, "teacher": None}))
    resumed = run_module("distilled", "--resume", "--run-name", "d", "--logdir", tmp_path,
                         "--data-dir", small_data)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming teacher" in resumed.stdout
    assert json.loads((teacher_dir / "results.json").read_text())["weights_digest"] == \
        teacher["weights_digest"]
    assert json.loads((run_dir / "results.json").read_text())["weights_digest"] == \
        student["weights_digest"]


def test_a_teacher_that_is_not_a_finished_run_is_refused_in_one_line(small_data, tmp_path):
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text("{}")
    for teacher, why in (("none", "not a run directory (no config.json)"),
                         ("unfinished", "the run has not finished (no results.json)")):
        result = run_module("improved", *SMALL_RUN_FLAGS, "--data-dir", small_data, "--logdir",
                            tmp_path, "--epochs", "1", "--teacher", tmp_path / teacher)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].endswith(
            f"--teacher: {tmp_path / teacher}: {why}; " + (
                "give the directory a training run wrote" if teacher == "none" else
                "finish it with --resume first"))
        assert "Traceback" not in result.stderr
    # Refused before anything was written: no run directory.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["unfinished"]


@pytest.mark.slow
def test_a_teacher_that_validated_on_other_images_is_refused(small_data, tmp_path):
    teacher = run_module("teacher", *SMALL_RUN_FLAGS, *TINY_TEACHER_FLAGS, "--data-dir",
                         small_data, "--logdir", tmp_path, "--run-name", "t", "--epochs", "1",
                         "--validation-size", "150")
    assert teacher.returncode == 0, teacher.stderr
    result = run_module("improved", *SMALL_RUN_FLAGS, "--data-dir", small_data, "--logdir",
                        tmp_path, "--epochs", "1", "--teacher", tmp_path / "t")
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "--teacher: " f"{tmp_path / 't'} held out --validation-size 150, this run 100: the "
        "teacher trained on images this run validates on; use a teacher with the same "
        "--validation-size")
    assert "Traceback" not in result.stderr
