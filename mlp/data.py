"""Fashion-MNIST: find the four IDX files, verify them, parse them, and feed them to training.

The IDX format: a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the data. Fashion-MNIST uses unsigned bytes
(type code 0x08): images are 3-dimensional (count, 28, 28), labels 1-dimensional (count,).

Splits: the first 55,000 images of the training file train, its last 5,000 validate (a fixed
slice, not a random one, so every run and every seed sees the same validation set), and the
10,000 images of the t10k files test. Pixels are scaled to [0, 1].
"""

import gzip
import hashlib
import math
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from mlp.exits import DataError  # noqa: F401 (raised here, and read as data.DataError)
from mlp.machine import DEBIAN_DIR, cache_dir

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# SHA-256 and size of each file's decompressed content, for the published dataset.
FILES = {
    "train_images": ("train-images-idx3-ubyte",
                     "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                     47_040_016),
    "train_labels": ("train-labels-idx1-ubyte",
                     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008),
    "test_images": ("t10k-images-idx3-ubyte",
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016),
    "test_labels": ("t10k-labels-idx1-ubyte",
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008),
}
EXPECTED_COUNTS = {"train": 60_000, "test": 10_000}
# HTTPS first; the dataset's own S3 website endpoint speaks plain HTTP only, so it comes last (every
# file is checked against its SHA-256 whichever way it came).
MIRRORS = (
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    "https://fashion-mnist.s3.eu-central-1.amazonaws.com/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
# How long a download waits for another one into the same cache to finish.
DOWNLOAD_WAIT = 600
# The most an IDX file read without its published checksum may decompress to (other datasets).
UNVERIFIED_LIMIT = 256 * 2**20
HOW_TO_GET = ("get the data with 'apt-get install dataset-fashion-mnist' (Debian), or put the four "
              "IDX files in a directory and pass --data-dir DIR or set FASHION_MNIST_DIR")

_UBYTE = 0x08


# ---------------------------------------------------------------------------------------------
# IDX files


def _read_bytes(path, limit):
    """The file's content, gunzipped if it is gzipped; never more than `limit` bytes are read or
    decompressed, so a broken or hostile file cannot exhaust memory before it is checked."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream = gzip.open(raw, "rb") if gzipped else raw
            content = stream.read(limit + 1)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e}); delete it and {HOW_TO_GET}") from None
    if len(content) > limit:
        raise DataError(f"{path}: {'decompresses to' if gzipped else 'holds'} more than {limit} "
                        f"bytes, more than the file can be; it is damaged or not {path.name}; "
                        f"delete it and {HOW_TO_GET}")
    return content


def parse_idx(content, name="IDX data"):
    """Parse IDX bytes into a uint8 array, checking the magic number and that the data is
    complete."""
    if len(content) < 4:
        raise DataError(f"{name}: truncated: {len(content)} bytes, shorter than an IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", content[:4])
    if zero != 0 or dtype != _UBYTE or ndim not in (1, 3):
        raise DataError(f"{name}: bad magic number 0x{content[:4].hex()} "
                        "(expected 0x00000801 for labels or 0x00000803 for images)")
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DataError(f"{name}: truncated inside its header")
    shape = struct.unpack(f">{ndim}I", content[4:header])
    expected = header + math.prod(shape)  # Python integers: no overflow for any header
    if len(content) != expected:
        what = "truncated" if len(content) < expected else "has trailing bytes"
        raise DataError(f"{name}: {what}: {len(content)} bytes, the header {shape} implies "
                        f"{expected}")
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def encode_idx(array):
    """The IDX bytes of a uint8 array of 1 or 3 dimensions (the inverse of `parse_idx`)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return (struct.pack(">HBB", 0, _UBYTE, array.ndim)
            + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def write_idx(path, array, compress=True):
    """Write `array` as an IDX file, gzipped when `compress`; used to make small test datasets."""
    content = encode_idx(array)
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(content)


def _find_file(directory, stem):
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def read_file(path, key, verify_checksum=True):
    """Read and validate one of the four files (`key` is a key of FILES)."""
    stem, sha256, size = FILES[key]
    content = _read_bytes(path, size if verify_checksum else UNVERIFIED_LIMIT)
    if verify_checksum:
        digest = hashlib.sha256(content).hexdigest()
        if digest != sha256:
            raise DataError(f"{path}: checksum mismatch: the content has SHA-256 {digest[:12]}... "
                            f"and {len(content)} bytes, expected {sha256[:12]}... and {size} "
                            f"bytes; the file is corrupted or not the published {stem}")
    array = parse_idx(content, name=str(path))
    want_ndim = 3 if key.endswith("images") else 1
    if array.ndim != want_ndim:
        raise DataError(f"{path}: holds {array.ndim}-dimensional data, expected {want_ndim} "
                        f"for {key}")
    if key.endswith("images") and array.shape[1:] != (28, 28):
        raise DataError(f"{path}: images are {array.shape[1]}x{array.shape[2]}, expected 28x28")
    if key.endswith("labels") and array.size and array.max() > 9:
        raise DataError(f"{path}: has label {array.max()}, labels must be in 0..9")
    return array


# ---------------------------------------------------------------------------------------------
# Locating and downloading


def _complete(directory):
    return directory.is_dir() and all(_find_file(directory, stem) for stem, _, _ in FILES.values())


def download(target, mirrors=MIRRORS):
    """Download the four files into `target`, each verified before it is renamed into place.

    keras.utils.get_file does the transfer into a temporary directory beside `target`, so a broken
    or partial download never sits in the cache. Returns `target`; raises DataError when every
    mirror fails, with what each said.
    """
    from mlp.config import ConfigError
    from mlp.lock import DirectoryInUse, DirectoryLock

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        # Downloads into one cache take turns: the next finds the files the first fetched.
        lock = DirectoryLock(target, wait=DOWNLOAD_WAIT)
    except DirectoryInUse:
        raise DataError(f"another process has been downloading into {target} for over "
                        f"{DOWNLOAD_WAIT} s; wait for it, or stop it") from None
    except ConfigError as e:  # the cache's lock file is a link, or its filesystem cannot lock
        raise DataError(str(e)) from None
    with lock:
        # Staging directories of a download that was killed: nobody else is downloading now.
        for stale in target.glob(".download-*"):
            shutil.rmtree(stale, ignore_errors=True)
        return _download(target, mirrors)


def _download(target, mirrors):
    import keras  # the download helper only; imported here so reading local data never needs it

    errors = []
    for key, (stem, _, _) in FILES.items():
        final = target / f"{stem}.gz"
        if final.is_file():
            continue
        for mirror in mirrors:
            staging = Path(tempfile.mkdtemp(dir=target, prefix=".download-"))
            try:
                fetched = keras.utils.get_file(f"{stem}.gz", origin=mirror + f"{stem}.gz",
                                               cache_dir=str(staging), cache_subdir=".")
                read_file(fetched, key, verify_checksum=True)
                os.replace(fetched, final)
                break
            except DataError as e:
                errors.append(f"{mirror}: {e}")
            except Exception as e:  # get_file raises several kinds for network failures
                errors.append(f"{mirror}{stem}.gz: {type(e).__name__}: {e}".replace("\n", " "))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        else:
            raise DataError("download failed: " + "; ".join(errors))
    return target


def locate(data_dir=None, mirrors=MIRRORS, allow_download=True):
    """The directory holding the four files.

    Looks, in order, at `data_dir` (else $FASHION_MNIST_DIR), the cache directory, Debian's
    /usr/share/datasets/fashion-mnist, and otherwise downloads into the cache.
    """
    explicit = data_dir or os.environ.get("FASHION_MNIST_DIR")
    if explicit:
        directory = Path(explicit).expanduser()
        if _complete(directory):
            return directory
        missing = [stem for stem, _, _ in FILES.values() if not _find_file(directory, stem)]
        raise DataError(f"{directory}: missing {', '.join(missing)} (.gz or uncompressed); "
                        f"{HOW_TO_GET}")
    tried = []
    for directory in (cache_dir(), DEBIAN_DIR):
        if _complete(directory):
            return directory
        tried.append(str(directory))
    if allow_download:
        try:
            return download(cache_dir(), mirrors)
        except (DataError, OSError) as e:
            tried.append(f"download ({e})")
    raise DataError(f"Fashion-MNIST not found; tried {'; '.join(tried)}; {HOW_TO_GET}")


# ---------------------------------------------------------------------------------------------
# Splits and pipelines


@dataclass(frozen=True)
class Splits:
    """Images as float32 [N, 784] in [0, 1], labels as int32 [N]."""
    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load(data_dir=None, verify_checksums=True, validation_size=5_000, mirrors=MIRRORS):
    """Locate, verify and split the dataset.

    With `verify_checksums` the files must be the published ones (checksums and 60,000 / 10,000
    counts); without it any consistent IDX files will do, which is how tests use small ones.
    """
    directory = locate(data_dir, mirrors)
    arrays = {key: read_file(_find_file(directory, stem), key, verify_checksums)
              for key, (stem, _, _) in FILES.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if len(images) != len(labels):
            raise DataError(f"{directory}: {part} files disagree: {len(images)} images but "
                            f"{len(labels)} labels")
        if verify_checksums and len(images) != EXPECTED_COUNTS[part]:
            raise DataError(f"{directory}: {part} has {len(images)} images, expected "
                            f"{EXPECTED_COUNTS[part]}")
    n_train = len(arrays["train_images"]) - validation_size
    if n_train < 1 or validation_size < 1:
        raise DataError(f"validation size {validation_size} does not fit "
                        f"{len(arrays['train_images'])} training images")

    def scaled(images):
        return (images.reshape(len(images), -1).astype(np.float32) / 255.0)

    return Splits(
        train_images=scaled(arrays["train_images"][:n_train]),
        train_labels=arrays["train_labels"][:n_train].astype(np.int32),
        validation_images=scaled(arrays["train_images"][n_train:]),
        validation_labels=arrays["train_labels"][n_train:].astype(np.int32),
        test_images=scaled(arrays["test_images"]),
        test_labels=arrays["test_labels"].astype(np.int32),
    )


def epoch_permutation(num_examples, seed, epoch):
    """The order of the training examples in `epoch`: a function of (seed, epoch) alone."""
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64),
        seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]))


def training_batches(images, labels, batch_size, seed, start_step=0, augment=None,
                     input_context=None, mix=None):
    """An endless dataset of shuffled training batches, epoch after epoch.

    Each epoch visits every example once in the order `epoch_permutation(seed, epoch)`; its last
    batch may be smaller. Because the order depends only on (seed, epoch), the stream can start at
    any global step `start_step`, which is how an interrupted run resumes mid-epoch. The images
    stay in memory once; batches are gathered from them by index. `augment`, if given, maps a
    batch of images (and the batch's int64 index) to augmented images; `mix`, if given (after
    `augment`), maps (images, labels, index) to mixed images and their targets, a distribution
    over the classes per example, which then stand in the labels' place (mlp.augment.make_mix).

    `batch_size` is the global batch. With an `input_context` of K > 1 replicas in sync (from
    `strategy.distribute_datasets_from_function`), this pipeline yields, for each global batch,
    the parts that belong to its own replicas, one element per replica in replica order: replica
    r gets rows [r*n/K, (r+1)*n/K) of the n-example global batch, as (images, labels, n). The
    global batch is gathered and augmented whole first, so every strategy trains on the same
    batches in the same order.
    """
    images = tf.constant(images)
    labels = tf.constant(labels)
    num_examples = int(images.shape[0])
    steps_per_epoch = -(-num_examples // batch_size)
    first_epoch, skip = divmod(int(start_step), steps_per_epoch)

    # tf.data would have AutoGraph rewrite these and the augmentation they call; their control
    # flow is Python's (or tf.cond), so they run as written.
    @tf.autograph.experimental.do_not_convert
    def epoch_indices(epoch):
        # Each batch's indices sliced out of the permutation: one dataset element per batch
        # (batching the permutation one element at a time was slower; docs/speed.md).
        order = epoch_permutation(num_examples, seed, epoch)
        return tf.data.Dataset.range(steps_per_epoch).map(
            lambda i: order[i * batch_size:tf.minimum((i + 1) * batch_size, num_examples)])

    @tf.autograph.experimental.do_not_convert
    def gather(batch_number, indices):
        batch_images = tf.gather(images, indices)
        batch_labels = tf.gather(labels, indices)
        if augment is not None:
            batch_images = augment(batch_images, batch_number)
        if mix is not None:
            return mix(batch_images, batch_labels, batch_number)
        return batch_images, batch_labels

    batches = (tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
               .flat_map(epoch_indices)
               .skip(skip))
    step_numbers = tf.data.Dataset.range(int(start_step), np.iinfo(np.int64).max)
    batches = (tf.data.Dataset.zip(step_numbers, batches)
               .map(gather, num_parallel_calls=PARALLEL_BATCHES, deterministic=True))
    return _without_autotune(_replica_parts(batches, input_context, with_count=True)
                             .prefetch(PARALLEL_BATCHES))


def evaluation_batches(images, labels, batch_size=1000, input_context=None):
    """The examples once, in order, batched: for validation and test. With an `input_context`
    of K > 1 replicas, each batch is cut into the replicas' parts as in `training_batches`, so
    gathering the replicas' outputs in replica order restores the example order. Images are
    float32 in [0, 1], or 8-bit pixels (uint8), which are scaled as `load` scales them."""
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size).cache()
    if images.dtype == np.uint8:
        batches = batches.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
    return _without_autotune(_replica_parts(batches, input_context, with_count=False)
                             .prefetch(PARALLEL_BATCHES))


# Batches prepared ahead, and in parallel, of the training step. Fixed rather than tf.data's
# autotuning: its background optimization thread can keep an iterator's destructor waiting for
# minutes (seen at exit after SIGTERM, and under multi-worker training, where the waiting worker
# stalls the others' collectives), and a fixed depth was as fast (tests/test_data.py).
PARALLEL_BATCHES = 2


def _without_autotune(dataset):
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _replica_parts(batches, input_context, with_count):
    """Cut each (images, labels) batch into this input pipeline's replicas' parts (see
    `training_batches`); the batches unchanged for a single replica."""
    if input_context is None or input_context.num_replicas_in_sync == 1:
        return batches
    replicas = input_context.num_replicas_in_sync
    local = replicas // input_context.num_input_pipelines
    first = input_context.input_pipeline_id * local

    def parts(batch_images, batch_labels):
        n = tf.shape(batch_labels)[0]

        def part(j):
            replica = tf.cast(j, tf.int32) + first
            begin, end = replica * n // replicas, (replica + 1) * n // replicas
            sliced = (batch_images[begin:end], batch_labels[begin:end])
            return (*sliced, n) if with_count else sliced

        return tf.data.Dataset.range(local).map(part)

    return batches.flat_map(parts)
