"""The corrupted test images: deterministic from the seed, in range, each actually a change of
the kind its name says, cached with a checksum; and a run's corruption accuracies."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp import corruptions
from tests.conftest import SMALL_RUN_FLAGS, run_module


def blobs(count=40, seed=0):
    """Garment-like test images: a bright textured rectangle of random size and place on a
    dark background, as float32 [N, 784] in [0, 1]."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), np.float32)
    for image in images:
        top, left = rng.integers(6, 10, 2)
        height, width = rng.integers(8, 13, 2)
        image[top:top + height, left:left + width] = rng.uniform(0.6, 1.0, (height, width))
    return images.reshape(count, -1)


def centre_of_mass(images):
    rows, columns = np.mgrid[0:28, 0:28]
    mass = images.sum(axis=(1, 2))
    return np.stack([(images * rows).sum(axis=(1, 2)) / mass,
                     (images * columns).sum(axis=(1, 2)) / mass], 1)


@pytest.fixture(scope="module")
def corrupted():
    images = blobs()
    return images.reshape(-1, 28, 28), {name: array / 255.0 for name, array in
                                        corruptions.corrupt(images).items()}


def test_the_set_has_the_corruptions_the_studies_name():
    assert len(corruptions.CORRUPTIONS) >= 9
    assert {"gaussian_noise", "impulse_noise", "gaussian_blur", "contrast", "brightness",
            "translate", "rotate", "scale", "elastic"} <= set(corruptions.CORRUPTIONS)
    assert "flip" not in " ".join(corruptions.CORRUPTIONS)  # recipes train on flips


def test_every_corruption_is_a_function_of_the_images_and_the_seed():
    images = blobs(12)
    first, again = corruptions.corrupt(images, seed=5), corruptions.corrupt(images, seed=5)
    other = corruptions.corrupt(images, seed=6)
    for name in corruptions.CORRUPTIONS:
        assert np.array_equal(first[name], again[name]), name
    random = {"gaussian_noise", "impulse_noise", "translate", "rotate", "scale", "elastic"}
    for name in random:
        assert not np.array_equal(first[name], other[name]), f"{name} ignores the seed"


def test_every_corruption_stays_in_range_and_changes_the_images(corrupted):
    clean, out = corrupted
    for name, images in out.items():
        assert images.shape == clean.shape and images.min() >= 0 and images.max() <= 1, name
        changed = np.abs(images - clean).reshape(len(clean), -1).max(axis=1) > 0.05
        assert changed.all(), f"{name} leaves {np.sum(~changed)} images as they were"


def test_each_corruption_does_what_its_name_says(corrupted):
    clean, out = corrupted
    shift = np.abs(centre_of_mass(out["translate"]) - centre_of_mass(clean))
    assert np.all((shift > 1.5) & (shift < 3.5))
    assert np.allclose(out["translate"].sum(axis=(1, 2)), clean.sum(axis=(1, 2)), rtol=0.02)
    spread = lambda images: images.std(axis=(1, 2))
    assert np.allclose(spread(out["contrast"]), 0.4 * spread(clean), rtol=0.02)
    assert np.allclose(out["brightness"][clean < 0.7], clean[clean < 0.7] + 0.3, atol=0.003)
    # Blurring and pixelating keep the mass (nothing leaves the frame) and lower the peaks.
    for name in ("gaussian_blur", "pixelate"):
        assert np.allclose(out[name].sum(axis=(1, 2)), clean.sum(axis=(1, 2)), rtol=0.02), name
    noise = out["gaussian_noise"] - clean
    assert 0.07 < noise.std() < 0.15
    hit = np.abs(out["impulse_noise"] - clean) > 0.01
    assert 0.01 < hit.mean() < 0.05
    assert set(np.unique(out["impulse_noise"][hit])) <= {0.0, 1.0}
    # Rotation and scaling about the centre keep the centre of mass near where it was; the
    # scale changes the area the garment covers by 0.8^2 or 1.2^2.
    for name in ("rotate", "scale"):
        assert np.abs(centre_of_mass(out[name]) - centre_of_mass(clean)).max() < 2.0, name
    # The elastic distortion moves parts of the garment by a few pixels, not the whole of it.
    assert np.abs(centre_of_mass(out["elastic"]) - centre_of_mass(clean)).max() < 3.0
    assert np.allclose(out["elastic"].sum(axis=(1, 2)), clean.sum(axis=(1, 2)), rtol=0.5)
    # Each rotated image is closest to scipy's own rotation of it by 15 degrees one way or the
    # other, not by 0 or 30.
    from scipy import ndimage

    for rotated, image in zip(out["rotate"], clean):
        errors = {angle: np.abs(ndimage.rotate(image, angle, reshape=False, order=1)
                                - rotated).sum() for angle in (-30, -15, 0, 15, 30)}
        assert min(errors, key=errors.get) in (-15, 15)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6))
def test_corruptions_of_any_images_are_8_bit_pictures_of_the_same_shape(seed, count):
    images = np.random.default_rng(seed).random((count, 784), dtype=np.float32)
    for name, out in corruptions.corrupt(images, seed).items():
        assert out.shape == (count, 28, 28) and out.dtype == np.uint8, name


def test_the_set_is_cached_with_its_checksum_and_made_again_when_damaged(tmp_path, monkeypatch):
    images = blobs(8)
    first = corruptions.corrupted_test_sets(images, directory=tmp_path)
    (cached,) = tmp_path.glob("*.npz")
    assert cached.with_suffix(".sha256").exists()
    monkeypatch.setattr(corruptions, "corrupt", lambda *a: pytest.fail("not read from cache"))
    again = corruptions.corrupted_test_sets(images, directory=tmp_path)
    assert all(np.array_equal(first[name], again[name]) for name in first)
    monkeypatch.undo()
    content = bytearray(cached.read_bytes())
    content[len(content) // 2] ^= 0xFF
    cached.write_bytes(bytes(content))
    repaired = corruptions.corrupted_test_sets(images, directory=tmp_path)
    assert all(np.array_equal(first[name], repaired[name]) for name in first)
    assert cached.read_bytes() != bytes(content)
    # Other test images or another seed are another set, in another file.
    corruptions.corrupted_test_sets(images, seed=1, directory=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_a_cache_that_cannot_be_written_is_only_noted(tmp_path, capsys):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    out = corruptions.corrupted_test_sets(blobs(4), directory=blocked / "corruptions")
    assert set(out) == set(corruptions.CORRUPTIONS) and out["rotate"].shape == (4, 784)
    assert np.array_equal(out["rotate"].reshape(4, 28, 28), corruptions.corrupt(blobs(4))["rotate"])
    assert "could not be cached" in capsys.readouterr().err


@pytest.mark.slow  # a whole run
def test_a_run_reports_its_accuracy_on_each_corruption(small_data, tmp_path):
    """The run's figures are its evaluator's on the corrupted images: recomputed from the
    saved model's logits they agree."""
    import tensorflow as tf

    from mlp import data as data_lib
    from mlp.build import build
    from mlp.config import Config
    from mlp import report

    splits = data_lib.load(small_data, verify_checksums=False, validation_size=100)
    config = Config(data_dir=str(small_data), verify_checksums=False, validation_size=100,
                    epochs=1, precision="float32", kernels="tensorflow")
    parts = build(config, splits=splits)
    reported = report.corruption_accuracy(parts)
    sets = corruptions.corrupted_test_sets(splits.test_images)
    assert set(reported) == set(corruptions.CORRUPTIONS) | {"mean"}
    for name, images in sets.items():
        assert images.dtype == np.uint8 and images.shape == (200, 784)
        scaled = tf.constant(images.astype(np.float32) / 255.0)
        predicted = np.argmax(parts.model(scaled, training=False).numpy(), axis=1)
        assert reported[name] == pytest.approx(np.mean(predicted == splits.test_labels)), name
    assert reported["mean"] == pytest.approx(np.mean([reported[n] for n in sets]))

    done = run_module("improved", "--data-dir", small_data, "--logdir", tmp_path,
                          "--run-name", "robust", "--epochs", 2, *SMALL_RUN_FLAGS, "--sharpness",
                          "--corruptions")
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "robust" / "results.json").read_text())
    assert set(results["corruption_accuracy"]) == set(reported)
    assert results["generalization_gap"] == pytest.approx(
        results["train_accuracy"] - results["test_accuracy"])
    sharp = results["sharpness"]
    assert sharp["hessian_top_eigenvalue"] > 0 and sharp["epsilon_sharpness"] > 0
