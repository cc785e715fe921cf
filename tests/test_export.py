"""Export and predict: the SavedModel, loaded where this repository cannot be imported, predicts
what the run's evaluator predicts; bad run directories and images are one line each."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mlp import data as data_lib
from tests.conftest import SMALL_RUN_FLAGS, run_module

# Loads a SavedModel with `import mlp` and `import experiments` made impossible, and writes the
# serving signature's outputs for the given IDX images.
BLOCKED_LOADER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mlp', 'experiments'):
            raise ImportError('this process must not use the repository: ' + name)
sys.meta_path.insert(0, Block())
sys.path = [p for p in sys.path if p not in ('', '.')]
import numpy as np, tensorflow as tf, gzip
model_dir, images_file, out = sys.argv[1:4]
raw = gzip.open(images_file).read()
images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
loaded = tf.saved_model.load(model_dir)
result = loaded.signatures['serving_default'](images=tf.constant(images))
names = np.array([n.decode() for n in loaded.signatures['class_names']()['class_names'].numpy()])
np.savez(out, probabilities=result['probabilities'].numpy(), classes=result['classes'].numpy(),
         names=names)
"""


def _evaluator_predictions(run_dir, small_data):
    """The repository's own evaluation of the run's reported weights on the test set."""
    from mlp.evaluation import Evaluator
    from mlp.trained import chosen_model

    model, config, results = chosen_model(run_dir)
    splits = data_lib.load(small_data, verify_checksums=False, validation_size=100)
    evaluator = Evaluator(model, test_time_flip=config.test_time_flip,
                          test_time_shifts=config.test_time_shifts)
    evaluation = evaluator.evaluate(data_lib.evaluation_batches(splits.test_images,
                                                                splits.test_labels))
    return (evaluation["predictions"].numpy(), evaluation["confidences"].numpy(),
            splits.test_labels, results)


@pytest.mark.parametrize("flags", [
    # whitening, test-time views, early stopping (the best epoch's weights are exported)
    ["--whitening", "zca", "--augment-flip", "--test-time-flip", "--test-time-shifts", "1",
     "--epochs", "4"],
    # the baseline's shape: no batch norm, dropout or L2, the last epoch's weights
    ["--hidden-sizes", "32", "16", "--no-batch-norm", "--dropout", "0", "--l2", "0",
     "--lr-schedule", "constant", "--no-early-stopping", "--epochs", "2"]],
    ids=["whitening-views", "plain"])
@pytest.mark.slow
def test_the_saved_model_predicts_what_the_evaluator_does_without_the_repository(
        small_data, tmp_path, flags):
    done = run_module("improved", "--data-dir", small_data, "--logdir", tmp_path,
                          "--run-name", "run", "--precision", "float32", *SMALL_RUN_FLAGS, *flags)
    assert done.returncode == 0, done.stderr
    exported = run_module("export", tmp_path / "run", "--out", tmp_path / "model")
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "model" / "saved_model.pb").is_file()

    out = tmp_path / "outputs.npz"
    loaded = subprocess.run([sys.executable, "-c", BLOCKED_LOADER, str(tmp_path / "model"),
                             str(small_data / "t10k-images-idx3-ubyte.gz"), str(out)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    outputs = np.load(out)
    predictions, confidences, labels, results = _evaluator_predictions(tmp_path / "run",
                                                                      small_data)
    np.testing.assert_array_equal(outputs["classes"], predictions)
    np.testing.assert_allclose(outputs["probabilities"].max(axis=1), confidences, atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert np.mean(outputs["classes"] == labels) == pytest.approx(results["test_accuracy"])
    assert list(outputs["names"]) == list(data_lib.CLASS_NAMES)


@pytest.fixture(scope="module")
def exported_model(small_data, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("export")
    done = run_module("improved", "--data-dir", small_data, "--logdir", logdir, "--run-name",
                          "run", "--epochs", "2", "--precision", "float32", *SMALL_RUN_FLAGS)
    assert done.returncode == 0, done.stderr
    assert run_module("export", logdir / "run").returncode == 0
    return logdir / "run"


def test_predict_prints_a_line_per_image_and_json_for_machines(exported_model, small_data,
                                                               tmp_path):
    images = small_data / "t10k-images-idx3-ubyte.gz"
    lines = run_module("predict", exported_model / "saved_model", images)
    assert lines.returncode == 0, lines.stderr
    as_json = run_module("predict", exported_model, images, "--json")  # a run directory
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert len(rows) == 200 and len(lines.stdout.strip().splitlines()) == 200
    for row, line in zip(rows, lines.stdout.strip().splitlines()):
        assert line == f"{row['image']}: {row['class']} ({row['probability']:.3f})"
        assert row["class"] == data_lib.CLASS_NAMES[row["class_index"]]
        assert row["probability"] == max(row["probabilities"])


def test_a_picture_is_converted_as_the_dataset_was(tmp_path):
    from PIL import Image

    from experiments.predict import fashion_mnist_picture

    # A dark 40x20 garment on a white 100x60 photo: trimmed to the garment, its longer edge
    # shrunk to 28, centred, negated (background 0, garment bright).
    photo = np.full((100, 60, 3), 255, np.uint8)
    photo[30:70, 20:40] = 10
    Image.fromarray(photo).save(tmp_path / "garment.png")
    image = fashion_mnist_picture(tmp_path / "garment.png")
    assert image.shape == (28, 28) and image.dtype == np.uint8
    bright = image > 128
    rows, cols = np.flatnonzero(bright.any(axis=1)), np.flatnonzero(bright.any(axis=0))
    assert (rows[0], rows[-1]) == (0, 27)
    assert (cols[0], cols[-1]) == (7, 20)  # 14 columns, centred
    assert image[:, :6].max() == 0 and image[:, 22:].max() == 0


@pytest.mark.parametrize("make,words,code", [
    (lambda d: d.mkdir(), "not a run directory", 2),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("{}"),
                (d / "results.json").write_text("{}")), "missing settings", 2),
])
def test_a_foreign_directory_is_one_line_and_exit_2(tmp_path, make, words, code):
    make(tmp_path / "foreign")
    done = run_module("export", tmp_path / "foreign", "--out", tmp_path / "model")
    assert done.returncode == code, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("python -m experiments.export: error: ")
    assert not (tmp_path / "model").exists()


def test_a_run_whose_checkpoints_were_changed_is_refused(exported_model, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported_model, copy, ignore=shutil.ignore_patterns("saved_model"))
    results = json.loads((copy / "results.json").read_text())
    (copy / "results.json").write_text(json.dumps({**results, "weights_digest": "0" * 64}))
    done = run_module("export", copy)
    assert done.returncode == 2 and "weights_digest" in done.stderr.strip().splitlines()[-1]
    assert not (copy / "saved_model").exists()
    shutil.rmtree(copy / "checkpoints")
    done = run_module("export", copy)
    assert done.returncode == 2 and "no checkpoint" in done.stderr


def test_an_unreadable_image_is_one_line(exported_model, tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a picture")
    done = run_module("predict", exported_model / "saved_model", tmp_path / "x.png")
    assert done.returncode == 1 and "not an image Pillow can read" in done.stderr
    done = run_module("predict", exported_model / "saved_model", tmp_path / "missing.png")
    assert done.returncode == 2 and "no such image file" in done.stderr


# -- faults of export and predict: one line each, nothing half-written, memory bounded -------------

def _png_with_a_broken_chunk_after_its_first_idat(path):
    import struct

    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="PNG")  # several IDAT chunks of 64 KiB
    data = bytearray(path.read_bytes())
    position, idats = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        if data[position + 4:position + 8] == b"IDAT":
            idats.append(position)
        position += 12 + length
    data[idats[1] + 4:idats[1] + 8] = b"I@AT"  # not a chunk type: Pillow's SyntaxError
    path.write_bytes(bytes(data))


def _idx_of_no_images(path):
    import struct

    path.write_bytes(struct.pack(">HBBIII", 0, 0x08, 3, 0, 28, 28))


@pytest.mark.parametrize("make, code, words", [
    (_png_with_a_broken_chunk_after_its_first_idat, 1, "not an image Pillow can read"),
    (_idx_of_no_images, 1, "holds no images"),
], ids=["png-broken-chunk", "idx-of-no-images"])
def test_a_damaged_or_empty_image_file_is_one_line(exported_model, tmp_path, make, code, words):
    make(tmp_path / "input")
    done = run_module("predict", exported_model / "saved_model", tmp_path / "input")
    assert done.returncode == code, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not done.stdout


def test_a_damaged_saved_model_or_one_without_class_names_is_one_line(exported_model, tmp_path):
    import shutil

    import tensorflow as tf

    damaged = tmp_path / "damaged"
    shutil.copytree(exported_model / "saved_model", damaged)
    (damaged / "saved_model.pb").write_bytes(b"\x08\x01garbage" * 100)
    picture = tmp_path / "garment.png"
    _write_garment(picture)

    class Bare(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8)])
        def serve(self, images):
            return {"probabilities": tf.zeros([tf.shape(images)[0], 10])}

    bare = Bare()
    tf.saved_model.save(bare, str(tmp_path / "bare"), signatures={"serving_default": bare.serve})
    for model, words in ((damaged, "not a SavedModel TensorFlow can load"),
                         (tmp_path / "bare", "without the class_names signature")):
        done = run_module("predict", model, picture)
        assert done.returncode == 2, done.stderr
        assert words in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def _write_garment(path, mode="RGB"):
    """A dark 40x20 garment on a light 100x60 background, as a picture of `mode`: RGB on white,
    RGBA on a transparent background, I;16 a 16-bit grayscale on white."""
    from PIL import Image

    if mode == "I;16":
        photo = np.full((100, 60), 65535, np.uint16)
        photo[30:70, 20:40] = 10 * 257
        Image.fromarray(photo).save(path)
        return
    # Transparent pixels store black, as most programs write them.
    photo = np.full((100, 60, 4), (255, 255, 255, 255) if mode == "RGB" else (0, 0, 0, 0),
                    np.uint8)
    photo[30:70, 20:40] = (10, 10, 10, 255)
    Image.fromarray(photo if mode == "RGBA" else photo[..., :3]).save(path)


@pytest.mark.parametrize("mode", ["RGBA", "I;16"])
def test_transparent_and_16_bit_pictures_are_converted_as_the_dataset_was(tmp_path, mode):
    from experiments.predict import fashion_mnist_picture

    _write_garment(tmp_path / "plain.png")
    _write_garment(tmp_path / "other.png", mode)
    plain = fashion_mnist_picture(tmp_path / "plain.png")
    assert plain.max() > 200 and plain[:, :6].max() == 0  # a bright garment on a 0 background
    np.testing.assert_array_equal(fashion_mnist_picture(tmp_path / "other.png"), plain)


def test_a_picture_costs_a_few_bytes_a_pixel_and_one_beyond_the_limit_is_refused(
        tmp_path, monkeypatch):
    import tracemalloc

    from PIL import Image

    from experiments import predict
    from mlp.config import ConfigError

    side = 2000  # 4 megapixels, a few KB as a PNG
    photo = np.full((side, side, 3), 255, np.uint8)
    photo[500:1500, 800:1200] = 20
    Image.fromarray(photo).save(tmp_path / "large.png")
    del photo
    tracemalloc.start()
    try:
        image = predict.fashion_mnist_picture(tmp_path / "large.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert image.shape == (28, 28) and image.max() > 200
    # numpy's and Python's allocations: the picture's bytes (3 a pixel, twice while numpy takes
    # them from Pillow) and blocks of rows; in float32 arrays the picture took over 30 a pixel.
    assert peak < 8 * side * side, f"{peak / 2**20:.0f} MiB"

    monkeypatch.setattr(predict, "MAX_PICTURE_PIXELS", side * side - 1)
    with pytest.raises(ConfigError, match="a picture of 2000x2000 pixels; at most 3,999,999"):
        predict.fashion_mnist_picture(tmp_path / "large.png")


def test_images_are_classified_in_batches_and_no_temporary_directory_is_left(
        exported_model, small_data, tmp_path, monkeypatch):
    import tempfile

    from experiments import predict

    images = small_data / "t10k-images-idx3-ubyte.gz"
    whole = run_module("predict", exported_model / "saved_model", images, "--json")
    assert whole.returncode == 0, whole.stderr
    sizes = []
    classified = predict.classified

    def counted(serve, batch):
        def serve_counting(images):
            sizes.append(int(images.shape[0]))
            return serve(images=images)
        return classified(serve_counting, batch)

    monkeypatch.setattr(predict, "BATCH", 64)
    monkeypatch.setattr(predict, "classified", counted)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    batched = run_module("predict", exported_model, images, "--json")  # a run: exported
    assert batched.returncode == 0, batched.stderr
    assert sizes == [64, 64, 64, 8]
    rows, expected = json.loads(batched.stdout), json.loads(whole.stdout)
    assert [(r["image"], r["class"]) for r in rows] == [(r["image"], r["class"]) for r in expected]
    np.testing.assert_allclose([r["probabilities"] for r in rows],
                               [r["probabilities"] for r in expected], atol=1e-5)
    assert not list((tmp_path / "tmp").iterdir())  # the run's temporary export is gone


def test_export_refuses_what_it_cannot_write_before_writing_anything(exported_model, tmp_path):
    import shutil

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    # Under a file; under /proc, where not even root may make a directory.
    for out in (a_file / "model", "/proc/mlp-export/model"):
        done = run_module("export", exported_model, "--out", out)
        assert done.returncode == 2, done.stderr
        assert "--out: cannot write in" in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1

    copy = tmp_path / "copy"
    shutil.copytree(exported_model, copy, ignore=shutil.ignore_patterns("saved_model"))
    results = json.loads((copy / "results.json").read_text())
    del results["test_accuracy"]
    (copy / "results.json").write_text(json.dumps(results))
    done = run_module("export", copy)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "has no weights_digest, precision or test_accuracy" in done.stderr
    assert sorted(p.name for p in copy.iterdir()) == sorted(
        p.name for p in exported_model.iterdir() if p.name != "saved_model")


def test_an_export_holds_the_runs_lock_so_no_study_removes_its_staging(exported_model, tmp_path,
                                                                      monkeypatch):
    import shutil

    from mlp import saved_model as export_lib
    from mlp import run_directory
    from mlp.lock import DirectoryInUse, DirectoryLock

    copy = tmp_path / "copy"
    shutil.copytree(exported_model, copy, ignore=shutil.ignore_patterns("saved_model"))
    with DirectoryLock(copy):  # a training, study or search holds the run
        done = run_module("export", copy)
    assert done.returncode == 2 and "is in use by another process" in done.stderr
    assert not list(copy.glob(".saved_model.*")) and not (copy / "saved_model").exists()

    seen = {}
    write = export_lib._write

    def while_staging(staging, *args):
        write(staging, *args)
        with pytest.raises(DirectoryInUse):
            DirectoryLock(copy)  # what a study's run_plan takes before remove_leftovers
        seen["staging"] = staging
        assert staging.exists()

    monkeypatch.setattr(export_lib, "_write", while_staging)
    assert run_module("export", copy).returncode == 0
    assert seen["staging"].parent == copy and (copy / "saved_model" / "saved_model.pb").is_file()
    with DirectoryLock(copy):
        run_directory.remove_leftovers(copy)  # after the export: nothing of it to remove
    assert (copy / "saved_model" / "saved_model.pb").is_file()
