"""Classify images with an exported model (or a run, exported on the fly).

MODEL is a SavedModel directory written by `python -m experiments.export`, or a finished run's
directory. Each IMAGE is an IDX file of 28x28 images (gzipped or not; every image in it is
classified) or a picture (PNG, JPEG, or anything Pillow reads), converted the way Zalando made
Fashion-MNIST from its product photos: trim the edges whose colour is within 5% of the corner
pixel's, shrink the longer edge to 28 pixels by subsampling, sharpen (an unsharp mask of radius
1), pad the shorter edge to 28 with the corner colour around the centred picture, convert to
8-bit grayscale and negate (so the background becomes 0). A photo of one garment on a plain,
light background comes closest to the training images.

Prints one line per image: its name, the class and its probability; --json prints a JSON list
with every class's probability instead.

    python -m experiments.predict MODEL IMAGE [IMAGE ...] [--json]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

PROG = "python -m experiments.predict"
SIDE = 28


def fashion_mnist_picture(path):
    """A picture file as a 28x28 uint8 image made the way Fashion-MNIST's were (module doc)."""
    from PIL import Image, ImageFilter, UnidentifiedImageError

    from mlp.exits import DataError

    try:
        with Image.open(path) as opened:
            picture = opened.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not an image Pillow can read ({e})") from None
    pixels = np.asarray(picture, dtype=np.float32)
    corner = pixels[0, 0]
    far = np.linalg.norm(pixels - corner, axis=2) > 0.05 * np.sqrt(3) * 255
    if far.any():
        rows, cols = np.flatnonzero(far.any(axis=1)), np.flatnonzero(far.any(axis=0))
        pixels = pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = pixels.shape[:2]
    scale = SIDE / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    pixels = pixels[np.linspace(0, height - 1, new_height).round().astype(int)][
        :, np.linspace(0, width - 1, new_width).round().astype(int)]
    picture = Image.fromarray(pixels.astype(np.uint8)).filter(
        ImageFilter.UnsharpMask(radius=1, percent=100, threshold=0))
    canvas = Image.new("RGB", (SIDE, SIDE), tuple(int(c) for c in corner))
    canvas.paste(picture, ((SIDE - new_width) // 2, (SIDE - new_height) // 2))
    return 255 - np.asarray(canvas.convert("L"), dtype=np.uint8)


def read_images(path):
    """[(name, 28x28 uint8 image), ...] from an IDX file or a picture file."""
    from mlp import data as data_lib
    from mlp.config import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such image file")
    with open(path, "rb") as f:
        head = f.read(4)
    gzipped = head[:2] == b"\x1f\x8b"
    if gzipped or head[:3] == b"\x00\x00\x08":
        images = data_lib.parse_idx(data_lib._read_bytes(path, data_lib.UNVERIFIED_LIMIT),
                                    str(path))
        if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
            raise data_lib.DataError(f"{path}: holds {images.shape}, not 28x28 images")
        return [(f"{path}[{i}]", image) for i, image in enumerate(images)]
    return [(str(path), fashion_mnist_picture(path))]


def load_model(model_dir):
    """The serving function of a SavedModel, or of a run exported into a temporary directory."""
    import tempfile

    import tensorflow as tf

    from mlp.config import ConfigError

    model_dir = Path(model_dir)
    if (model_dir / "config.json").is_file():
        from mlp.export import export

        staging = Path(tempfile.mkdtemp(prefix="mlp-predict-"))
        export(model_dir, staging / "model")
        model_dir = staging / "model"
    if not (model_dir / "saved_model.pb").is_file():
        raise ConfigError(f"{model_dir}: neither a SavedModel (no saved_model.pb) nor a run "
                          "directory (no config.json)")
    loaded = tf.saved_model.load(str(model_dir))
    names = [name.decode() for name in
             loaded.signatures["class_names"]()["class_names"].numpy()]
    return loaded.signatures["serving_default"], names


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="an exported SavedModel or a run directory")
    parser.add_argument("images", metavar="IMAGE", nargs="+",
                        help="IDX files of 28x28 images, or pictures (PNG, JPEG, ...)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {image, class, probability, probabilities}")
    args = parser.parse_args(argv)

    from mlp.exits import run_guarded

    return run_guarded(PROG, _predict, args)


def _predict(args):
    import tensorflow as tf

    named = [item for path in args.images for item in read_images(path)]
    serve, names = load_model(args.model)
    outputs = serve(images=tf.constant(np.stack([image for _, image in named])))
    probabilities = outputs["probabilities"].numpy()
    classes = outputs["classes"].numpy()
    rows = [{"image": name, "class": names[k], "class_index": int(k),
             "probability": float(p[k]), "probabilities": [float(x) for x in p]}
            for (name, _), k, p in zip(named, classes, probabilities)]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for row in rows:
            print(f"{row['image']}: {row['class']} ({row['probability']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
