"""The switches experiments.best turns on: augmentation, label smoothing, the cosine schedule,
weight averaging and test-time flipping, each checked against an independent computation."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp import MLP, Evaluator, Trainer
from mlp.augment import SIDE, make_augment, mirror
from mlp.optim import make_optimizer
from mlp.schedules import cosine_with_warmup


def random_images(batch, seed):
    # Strictly positive pixels, so a zero in the output can only come from outside the image
    # or from an erased rectangle.
    return np.random.default_rng(seed).uniform(0.1, 1.0, (batch, SIDE * SIDE)).astype(np.float32)


def shifted(picture, dy, dx):
    """Reference shift with zero fill: output (r, c) = input (r - dy, c - dx), for a picture
    [SIDE, SIDE] or a stack of them [..., SIDE, SIDE]."""
    out = np.zeros_like(picture)
    rows = [r for r in range(SIDE) if 0 <= r - dy < SIDE]  # output rows with an input row
    cols = [c for c in range(SIDE) if 0 <= c - dx < SIDE]
    out[..., rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = picture[
        ..., rows[0] - dy:rows[-1] - dy + 1, cols[0] - dx:cols[-1] - dx + 1]
    return out


@settings(max_examples=20, deadline=None)
@given(shift=st.integers(1, 3), flip=st.booleans(), batch=st.integers(1, 9),
       batch_number=st.integers(0, 10**6), seed=st.integers(0, 2**31 - 1))
def test_shift_and_flip_move_each_image_by_one_allowed_transform(shift, flip, batch, batch_number,
                                                                 seed):
    images = random_images(batch, seed % 1000)
    augment = make_augment(seed, shift=shift, flip=flip)
    out = augment(tf.constant(images), tf.constant(batch_number, tf.int64)).numpy()
    assert out.shape == images.shape
    np.testing.assert_array_equal(
        out, augment(tf.constant(images), tf.constant(batch_number, tf.int64)).numpy())
    for image, result in zip(images.reshape(-1, SIDE, SIDE), out.reshape(-1, SIDE, SIDE)):
        candidates = [shifted(image, dy, dx)[:, ::-1] if mirrored else shifted(image, dy, dx)
                      for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)
                      for mirrored in ([False, True] if flip else [False])]
        assert any(np.array_equal(result, c) for c in candidates)


def test_shifts_cover_every_offset_and_flips_half_the_images():
    images = random_images(2000, 0)
    out = make_augment(7, shift=1, flip=True)(tf.constant(images), tf.constant(3, tf.int64))
    out = out.numpy().reshape(-1, SIDE, SIDE)
    pictures = images.reshape(-1, SIDE, SIDE)
    seen = {}
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            for mirrored in (False, True):
                candidates = shifted(pictures, dy, dx)
                if mirrored:
                    candidates = candidates[:, :, ::-1]
                matches = int(np.all(out == candidates, axis=(1, 2)).sum())
                if matches:
                    seen[(dy, dx, mirrored)] = matches
    assert len(seen) == 18  # all 9 offsets, each mirrored and not
    flipped = sum(n for (_, _, mirrored), n in seen.items() if mirrored)
    assert 900 < flipped < 1100


def test_random_erasing_zeros_one_rectangle_of_the_promised_size():
    images = random_images(500, 1)
    out = make_augment(3, erase=0.5)(tf.constant(images), tf.constant(0, tf.int64)).numpy()
    erased = 0
    for image, result in zip(images.reshape(-1, SIDE, SIDE), out.reshape(-1, SIDE, SIDE)):
        hole = result == 0
        np.testing.assert_array_equal(result[~hole], image[~hole])
        if hole.any():
            erased += 1
            rows, cols = np.nonzero(hole)
            height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
            assert hole.sum() == height * width  # one filled rectangle
            assert 0.005 < hole.sum() / SIDE**2 < 0.35  # 2% to 25% of the area, rounded
    assert 200 < erased < 300


def test_nothing_switched_on_means_no_augmentation():
    assert make_augment(0) is None


def test_mirror_reverses_each_row():
    images = random_images(3, 2)
    np.testing.assert_array_equal(
        mirror(tf.constant(images)).numpy().reshape(-1, SIDE, SIDE),
        images.reshape(-1, SIDE, SIDE)[:, :, ::-1])


@settings(max_examples=25, deadline=None)
@given(smoothing=st.floats(0.0, 0.5), seed=st.integers(0, 1000))
def test_label_smoothing_loss_matches_keras(smoothing, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(16, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 16).astype(np.int32)
    trainer = Trainer(MLP(hidden_sizes=(4,), input_size=3), make_optimizer("float32", 1e-3),
                      label_smoothing=smoothing)
    ours = tf.reduce_mean(trainer.data_loss(tf.constant(logits), tf.constant(labels))).numpy()
    keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)
    expected = float(keras_loss(tf.one_hot(labels, 10), logits))
    assert ours == pytest.approx(expected, rel=1e-5, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(total=st.integers(10, 5000), warmup_fraction=st.floats(0.0, 0.5),
       base=st.floats(1e-4, 1e-1), floor_fraction=st.floats(0.0, 0.5))
def test_cosine_schedule_warms_up_then_decays_to_the_floor(total, warmup_fraction, base,
                                                           floor_fraction):
    warmup = int(total * warmup_fraction)
    floor = base * floor_fraction
    schedule = cosine_with_warmup(base, total, warmup, floor)
    rates = schedule(tf.range(total + 5)).numpy()
    for step in range(warmup):
        assert rates[step] == pytest.approx(base * (step + 1) / warmup, rel=1e-5)
    decay = rates[warmup:total + 1]
    assert decay[0] == pytest.approx(base, rel=1e-5)
    assert np.all(np.diff(decay) <= 1e-6 * base)  # never rises after the warm-up
    middle = warmup + (total - warmup) // 2
    expected_middle = floor + 0.5 * (base - floor) * (
        1 + math.cos(math.pi * (middle - warmup) / max(total - warmup, 1)))
    assert rates[middle] == pytest.approx(expected_middle, rel=1e-4)
    np.testing.assert_allclose(rates[total:], floor, rtol=1e-4, atol=1e-9)


def test_weight_average_follows_its_formula_and_is_swapped_in_and_out():
    model = MLP(hidden_sizes=(5,), input_size=4, seed=1)
    trainer = Trainer(model, make_optimizer("float32", 1e-2), ema_decay=0.9)
    rng = np.random.default_rng(0)
    dataset = tf.data.Dataset.from_tensors(
        (tf.constant(rng.normal(size=(8, 4)), tf.float32),
         tf.constant(rng.integers(0, 10, 8), tf.int32))).repeat()
    iterator = iter(dataset)
    expected = [v.numpy().copy() for v in model.variables]
    for step in range(6):
        trainer.train_loop(iterator, tf.constant(1))
        decay = min(0.9, (1 + step) / (10 + step))
        expected = [decay * e + (1 - decay) * v.numpy() for e, v in zip(expected, model.variables)]
    trained = [v.numpy().copy() for v in model.variables]
    with trainer.averaged_weights():
        for e, v in zip(expected, model.variables):
            np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6)
    for t, v in zip(trained, model.variables):
        np.testing.assert_array_equal(v.numpy(), t)


def test_test_time_flip_averages_the_probabilities_of_image_and_mirror():
    model = MLP(hidden_sizes=(16,), seed=2)
    images = random_images(40, 3)
    labels = np.random.default_rng(4).integers(0, 10, 40).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    plain_evaluator = Evaluator(model)
    flip_evaluator = Evaluator(model, test_time_flip=True)
    plain, flipped = plain_evaluator.evaluate(dataset), flip_evaluator.evaluate(dataset)

    def probabilities(x):
        return tf.nn.softmax(model(tf.constant(x), training=False)).numpy()

    mirrored = images.reshape(-1, SIDE, SIDE)[:, :, ::-1].reshape(len(images), -1)
    for result, probs in ((plain, probabilities(images)),
                          (flipped, (probabilities(images) + probabilities(mirrored)) / 2)):
        np.testing.assert_array_equal(result["predictions"].numpy(), probs.argmax(1))
        np.testing.assert_allclose(result["confidences"].numpy(), probs.max(1), rtol=1e-5)
        expected_loss = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
        assert float(result["loss"].numpy()) == pytest.approx(expected_loss, rel=1e-5)
        assert float(result["accuracy"].numpy()) == pytest.approx(
            np.mean(probs.argmax(1) == labels))
    assert not np.array_equal(plain["confidences"].numpy(), flipped["confidences"].numpy())
    single_view = flip_evaluator.evaluate(dataset, single_view=True)
    np.testing.assert_array_equal(single_view["confidences"].numpy(), plain["confidences"].numpy())


def _one_step(rho, images, labels, learning_rate=0.1):
    """The weights after one SGD step of a small MLP (dropout on: both passes of a
    sharpness-aware step must draw the same masks)."""
    model = MLP(hidden_sizes=(6, 5), batch_norm=False, dropout=0.3, input_size=4, seed=3)
    trainer = Trainer(model, keras.optimizers.SGD(learning_rate), sam_rho=rho)
    batches = tf.data.Dataset.from_tensors((images, labels)).repeat()
    assert int(trainer.train_loop(iter(batches), tf.constant(1))) == 1
    return [v.numpy() for v in model.trainable_variables]


def test_a_sharpness_aware_step_descends_with_the_gradient_at_the_ascended_weights():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((16, 4)), tf.float32)
    labels = tf.constant(rng.integers(0, 10, 16), tf.int32)
    rho, learning_rate = 0.5, 0.1
    # By hand, on a model with the same initial weights: g at w, the gradient at
    # w + rho g / ||g|| (dropout masks of step 0), then w minus the learning rate times it.
    model = MLP(hidden_sizes=(6, 5), batch_norm=False, dropout=0.3, input_size=4, seed=3)
    variables = model.trainable_variables
    start = [v.numpy() for v in variables]

    def gradient():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, model(images, training=True, step=tf.constant(0, tf.int64))))
        return tape.gradient(loss, variables)

    g = gradient()
    norm = float(tf.linalg.global_norm(g))
    for v, w, gi in zip(variables, start, g):
        v.assign(w + rho * gi.numpy() / norm)
    expected = [w - learning_rate * gi.numpy() for w, gi in zip(start, gradient())]
    plain = [w - learning_rate * gi.numpy() for w, gi in zip(start, g)]

    ours = _one_step(rho, images, labels, learning_rate)
    for got, want, other in zip(ours, expected, plain):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert max(float(np.abs(g - p).max()) for g, p in zip(ours, plain)) > 1e-4
    # rho 0 is the plain step.
    for got, want in zip(_one_step(0.0, images, labels, learning_rate), plain):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sharpness_aware_minimization_refuses_several_replicas():
    from mlp.config import Config, ConfigError

    with pytest.raises(ConfigError, match="--sam-rho: sharpness-aware minimization runs on one "
                                          "device"):
        Config(sam_rho=0.05, strategy="mirrored").validate()
    Config(sam_rho=0.05).validate()


def _mixed(mixup, cutmix, batch, seed, batch_number):
    """A batch of `batch` images, image r all pixels r + 1 with label r, mixed; returns the
    mixed images, the targets and, per row, (its weight, its partner) read off the targets."""
    from mlp.augment import make_mix

    images = np.repeat(np.arange(1.0, batch + 1, dtype=np.float32)[:, None], 784, axis=1)
    labels = np.arange(batch, dtype=np.int32)
    mixed, targets = make_mix(seed, mixup, cutmix)(tf.constant(images), tf.constant(labels),
                                                  tf.constant(batch_number, tf.int64))
    mixed, targets = mixed.numpy(), targets.numpy()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    assert (targets >= 0).all()
    rows = []
    for r in range(batch):
        others = [c for c in np.flatnonzero(targets[r] > 1e-7) if c != r]
        assert len(others) <= 1  # its own label and at most one partner's
        rows.append((targets[r, r], others[0] if others else r))
    return mixed, rows


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(2, 10), alpha=st.floats(0.1, 2.0), seed=st.integers(0, 1000),
       batch_number=st.integers(0, 10**6))
def test_mixup_mixes_each_image_and_its_label_with_its_partners_by_one_weight(
        batch, alpha, seed, batch_number):
    mixed, rows = _mixed(alpha, 0.0, batch, seed, batch_number)
    weights = {round(float(weight), 5) for r, (weight, partner) in enumerate(rows) if partner != r}
    assert len(weights) <= 1  # one weight per batch
    for r, (weight, partner) in enumerate(rows):
        expected = weight * (r + 1) + (1 - weight) * (partner + 1) if partner != r else r + 1
        np.testing.assert_allclose(mixed[r], expected, rtol=1e-5)
    assert sorted(partner for _, partner in rows) == list(range(batch))  # a permutation


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(2, 10), alpha=st.floats(0.1, 2.0), seed=st.integers(0, 1000),
       batch_number=st.integers(0, 10**6))
def test_cutmix_pastes_one_rectangle_and_weighs_each_label_by_its_share_of_pixels(
        batch, alpha, seed, batch_number):
    mixed, rows = _mixed(0.0, alpha, batch, seed, batch_number)
    holes = set()
    for r, (weight, partner) in enumerate(rows):
        own = mixed[r] == r + 1
        assert np.all(own | (mixed[r] == partner + 1))
        if partner != r:
            assert own.mean() == pytest.approx(weight, abs=1e-6)
            hole = (~own).reshape(28, 28)
            if hole.any():  # a rectangle: the rows and columns it spans, all of them
                spanned_rows, spanned_columns = np.flatnonzero(hole.any(1)), np.flatnonzero(
                    hole.any(0))
                assert hole.sum() == spanned_rows.size * spanned_columns.size
                holes.add(hole.tobytes())
    assert len(holes) <= 1  # the same rectangle for the whole batch


def test_the_mixing_is_a_function_of_the_seed_and_the_batch_number():
    first, _ = _mixed(0.4, 1.0, 8, 5, 17)
    again, _ = _mixed(0.4, 1.0, 8, 5, 17)
    np.testing.assert_array_equal(first, again)
    assert any(not np.array_equal(first, _mixed(0.4, 1.0, 8, 5, n)[0]) for n in (18, 19, 20))


def test_the_loss_of_a_mixed_batch_is_the_cross_entropy_with_its_targets():
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(6, 10)), tf.float32)
    targets = tf.constant(rng.dirichlet(np.ones(10), 6), tf.float32)
    trainer = Trainer(MLP(hidden_sizes=(4,), input_size=3), make_optimizer("float32", 1e-3),
                      label_smoothing=0.1)
    expected = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1,
                                                    reduction=None)(targets, logits)
    np.testing.assert_allclose(trainer.data_loss(logits, targets), expected, rtol=1e-5)


def _lookahead_runs(steps_per_call, lookahead_steps, alpha):
    """A small MLP trained with Lookahead in graph calls of the given sizes, and the same MLP
    trained step by step without it, its weights synced by hand: slow += alpha (fast - slow),
    fast = slow after every `lookahead_steps` steps. Returns both weight lists and a third, the
    same steps without Lookahead at all."""
    rng = np.random.default_rng(5)
    batches = tf.data.Dataset.from_tensors(
        (tf.constant(rng.normal(size=(8, 4)), tf.float32),
         tf.constant(rng.integers(0, 10, 8), tf.int32))).repeat()

    def trainer(**lookahead):
        model = MLP(hidden_sizes=(6, 5), dropout=0.2, input_size=4, seed=4)
        return Trainer(model, make_optimizer("float32", 0.05), **lookahead)

    ours = trainer(lookahead_steps=lookahead_steps, lookahead_alpha=alpha)
    iterator = iter(batches)
    for steps in steps_per_call:
        assert int(ours.train_loop(iterator, tf.constant(steps))) == steps
    by_hand, plain = trainer(), trainer()
    variables = by_hand.model.trainable_variables
    slow = [v.numpy().copy() for v in variables]
    by_hand_iterator, plain_iterator = iter(batches), iter(batches)
    for step in range(1, sum(steps_per_call) + 1):
        by_hand.train_loop(by_hand_iterator, tf.constant(1))
        plain.train_loop(plain_iterator, tf.constant(1))
        if step % lookahead_steps == 0:
            slow = [s + alpha * (v.numpy() - s) for s, v in zip(slow, variables)]
            for v, s in zip(variables, slow):
                v.assign(s)
    weights = lambda t: [v.numpy() for v in t.model.trainable_variables]  # noqa: E731
    return weights(ours), weights(by_hand), weights(plain)


@pytest.mark.parametrize("steps_per_call", [[7], [2, 3, 2]], ids=["one-call", "across-calls"])
def test_lookahead_syncs_slow_and_fast_weights_every_k_steps(steps_per_call):
    ours, by_hand, plain = _lookahead_runs(steps_per_call, lookahead_steps=3, alpha=0.5)
    for got, want in zip(ours, by_hand):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert max(float(np.abs(o - p).max()) for o, p in zip(ours, plain)) > 1e-3


def test_lookahead_with_alpha_1_is_the_plain_optimizer():
    ours, _, plain = _lookahead_runs([5], lookahead_steps=2, alpha=1.0)
    for got, want in zip(ours, plain):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_lookahead_refuses_an_alpha_that_would_never_move_the_slow_weights():
    from mlp.config import Config, ConfigError

    with pytest.raises(ConfigError, match="--lookahead-alpha"):
        Config(lookahead_steps=5, lookahead_alpha=0.0).validate()
    assert "lookahead_alpha" in Config().unused_fields()
    assert "lookahead_alpha" not in Config(lookahead_steps=5).unused_fields()
