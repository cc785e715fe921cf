"""The pictures: drawn for a person (names, counts, captions), checked here as decoded PNGs."""

import numpy as np
import tensorflow as tf

from mlp import figures
from mlp.data import CLASS_NAMES


def _png_round_trip(image):
    """Encode as TensorBoard stores it and decode again: [H, W, 3] uint8."""
    return tf.io.decode_png(tf.io.encode_png(image[0])).numpy()


def _assert_a_picture(pixels, min_height, min_width):
    assert pixels.shape[0] >= min_height and pixels.shape[1] >= min_width and pixels.shape[2] == 3
    # Not blank: many distinct colours, and dark ink (text, cells) on the light background.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    assert (pixels.mean(axis=2) < 80).mean() > 0.005


def test_the_confusion_matrix_is_a_labelled_picture_with_counts():
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 30, (10, 10)) + np.diag(rng.integers(800, 990, 10))
    pixels = _png_round_trip(figures.confusion_image(confusion))
    _assert_a_picture(pixels, 500, 600)
    # Another matrix draws another picture (the counts are in it).
    other = _png_round_trip(figures.confusion_image(confusion + np.eye(10, dtype=int) * 5))
    assert pixels.shape == other.shape and not np.array_equal(pixels, other)


def test_the_mistakes_are_captioned_and_listed():
    rng = np.random.default_rng(1)
    images = rng.random((50, 784)).astype(np.float32)
    labels = rng.integers(0, 10, 50)
    predictions = (labels + 1) % 10
    confidences = rng.random(50).astype(np.float32)
    grid = figures.mistakes_grid(images, labels, predictions, confidences, count=16)
    pixels = _png_round_trip(grid)
    _assert_a_picture(pixels, 300, 600)
    # The same images in the same cells, other predictions: only the captions change the picture.
    recaptioned = figures.mistakes_grid(images, labels, (labels + 2) % 10, confidences,
                                        count=16)
    assert not np.array_equal(grid, recaptioned)
    best = int(np.argmax(confidences))
    listing = figures.mistakes_markdown(labels, predictions, confidences, count=16)
    assert len(listing.splitlines()) == 2 + 16
    assert listing.splitlines()[2] == (f"| 1,1 | {CLASS_NAMES[labels[best]]} | "
                                       f"{CLASS_NAMES[predictions[best]]} | "
                                       f"{confidences[best]:.3f} |")


def test_the_ablation_chart_is_a_picture():
    rows = [{"variant": name, "test_accuracy": {"mean": mean, "std": std}}
            for name, mean, std in (("full recipe", 0.91, 0.001), ("no flip", 0.905, 0.002),
                                    ("no shift", 0.9, 0.003))]
    pixels = _png_round_trip(figures.ablation_chart(rows, "ablation of best"))
    _assert_a_picture(pixels, 200, 600)
