"""Classify images with an exported model (or a run, exported on the fly).

MODEL is a SavedModel directory written by `python -m experiments.export`, or a finished run's
directory. Each IMAGE is an IDX file of 28x28 images (gzipped or not; every image in it is
classified) or a picture (PNG, JPEG, or anything Pillow reads), converted the way Zalando made
Fashion-MNIST from its product photos: trim the edges whose colour is within 5% of the corner
pixel's, shrink the longer edge to 28 pixels by subsampling, sharpen (an unsharp mask of radius
1), pad the shorter edge to 28 with the corner colour around the centred picture, convert to
8-bit grayscale and negate (so the background becomes 0). A photo of one garment on a plain,
light background comes closest to the training images. Transparent pixels are laid on white (the
photos' background), 16-bit pictures are scaled to 8 bits, and a picture of more than
MAX_PICTURE_PIXELS (25 megapixels) is refused: shrink it first.

Prints one line per image: its name, the class and its probability; --json prints a JSON list
with every class's probability instead. Images are classified BATCH at a time, so memory stays
bounded however many an IDX file holds.

    python -m experiments.predict MODEL IMAGE [IMAGE ...] [--json]
"""

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

from mlp.cli import Parser

PROG = "python -m experiments.predict"
SIDE = 28
MAX_PICTURE_PIXELS = 25_000_000
BATCH = 1024  # images per call of the model
_TRIM_BLOCK = 2**18  # pixels compared with the corner at a time while trimming


def fashion_mnist_picture(path):
    """A picture file as a 28x28 uint8 image made the way Fashion-MNIST's were (module doc)."""
    from PIL import Image, ImageFilter, UnidentifiedImageError

    from mlp.config import ConfigError
    from mlp.exits import DataError

    try:
        with Image.open(path) as opened:  # reads the header only
            width, height = opened.size
            picture = _rgb(opened) if width * height <= MAX_PICTURE_PIXELS else None
    except (OSError, SyntaxError, EOFError, ValueError, UnidentifiedImageError,
            Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not an image Pillow can read ({e})") from None
    if picture is None:
        raise ConfigError(f"{path}: a picture of {width}x{height} pixels; at most "
                          f"{MAX_PICTURE_PIXELS:,} are read: shrink it first")
    pixels = np.asarray(picture)
    del picture
    corner = pixels[0, 0]
    rows, cols = _far_from(pixels, corner)
    if rows.size:
        pixels = pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = pixels.shape[:2]
    scale = SIDE / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    pixels = pixels[np.linspace(0, height - 1, new_height).round().astype(int)][
        :, np.linspace(0, width - 1, new_width).round().astype(int)]
    small = Image.fromarray(np.ascontiguousarray(pixels)).filter(
        ImageFilter.UnsharpMask(radius=1, percent=100, threshold=0))
    canvas = Image.new("RGB", (SIDE, SIDE), tuple(int(c) for c in corner))
    canvas.paste(small, ((SIDE - new_width) // 2, (SIDE - new_height) // 2))
    return 255 - np.asarray(canvas.convert("L"), dtype=np.uint8)


def _rgb(picture):
    """`picture` as 8-bit RGB: transparency laid on white, 16 bits per sample scaled to 8."""
    from PIL import Image

    if picture.mode.startswith("I"):  # 16-bit (or 32-bit integer) grayscale
        values = np.asarray(picture).astype(np.uint32).clip(0, 65535)
        gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if "A" in picture.getbands() or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)),
                                     rgba).convert("RGB")
    return picture.convert("RGB")


def _far_from(pixels, corner):
    """(rows, columns) holding a pixel whose colour is more than 5% (of the RGB cube's
    diagonal) from `corner`'s, compared a block of rows at a time so no copy of the picture in
    wider numbers is ever made."""
    height, width = pixels.shape[:2]
    limit = (0.05 * np.sqrt(3) * 255) ** 2
    any_row, any_col = np.zeros(height, bool), np.zeros(width, bool)
    step = max(1, _TRIM_BLOCK // width)
    for top in range(0, height, step):
        difference = pixels[top:top + step].astype(np.int32) - corner.astype(np.int32)
        far = np.einsum("ijk,ijk->ij", difference, difference) > limit
        any_row[top:top + step] = far.any(axis=1)
        any_col |= far.any(axis=0)
    return np.flatnonzero(any_row), np.flatnonzero(any_col)


def read_images(path):
    """(name, uint8 images [N, 28, 28], whether the file holds many) from an IDX file (N >= 1)
    or a picture file (N = 1)."""
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
        if not len(images):
            raise data_lib.DataError(f"{path}: holds no images")
        return str(path), images, True
    return str(path), fashion_mnist_picture(path)[None], False


def load_model(model_dir, cleanup):
    """The serving function and class names of a SavedModel, or of a run exported into a
    temporary directory that `cleanup` (a contextlib.ExitStack) removes."""
    import tempfile

    import tensorflow as tf

    from mlp.config import ConfigError

    model_dir = Path(model_dir)
    if (model_dir / "config.json").is_file():
        from mlp.saved_model import export

        staging = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="mlp-predict-")))
        export(model_dir, staging / "model")
        model_dir = staging / "model"
    if not (model_dir / "saved_model.pb").is_file():
        raise ConfigError(f"{model_dir}: neither a SavedModel (no saved_model.pb) nor a run "
                          "directory (no config.json)")
    try:
        loaded = tf.saved_model.load(str(model_dir))
    except Exception as e:  # noqa: BLE001 - TensorFlow, protobuf and OS errors alike: damaged
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{model_dir}: not a SavedModel TensorFlow can load ({first}); "
                          "export the run again") from None
    missing = {"serving_default", "class_names"} - set(loaded.signatures)
    if missing:
        raise ConfigError(f"{model_dir}: a SavedModel without the {', '.join(sorted(missing))} "
                          "signature python -m experiments.export writes; export the run again")
    names = [name.decode() for name in
             loaded.signatures["class_names"]()["class_names"].numpy()]
    return loaded.signatures["serving_default"], names


def classified(serve, images):
    """(class index, probabilities) of each of `images`, BATCH images per call of `serve`."""
    import tensorflow as tf

    for start in range(0, len(images), BATCH):
        outputs = serve(images=tf.constant(images[start:start + BATCH]))
        yield from zip(outputs["classes"].numpy(), outputs["probabilities"].numpy())


def main(argv=None):
    parser = Parser(prog=PROG, description=__doc__,
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
    # Every file is read (and refused if it must be) before anything is printed.
    sources = [read_images(path) for path in args.images]
    with contextlib.ExitStack() as cleanup:
        serve, names = load_model(args.model, cleanup)
        if args.json:
            print("[", end="")
        count = 0
        for path, images, many in sources:
            for index, (k, p) in enumerate(classified(serve, images)):
                row = {"image": f"{path}[{index}]" if many else path, "class": names[k],
                       "class_index": int(k), "probability": float(p[k]),
                       "probabilities": [float(x) for x in p]}
                if args.json:
                    print(("\n " if count == 0 else ",\n ") + json.dumps(row), end="")
                else:
                    print(f"{row['image']}: {row['class']} ({row['probability']:.3f})")
                count += 1
        if args.json:
            print("\n]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
