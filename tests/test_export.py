"""Export and predict: the SavedModel, loaded where this repository cannot be imported, predicts
what the run's evaluator predicts; bad run directories and images are one line each."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mlp import data as data_lib
from tests.conftest import SMALL_RUN_FLAGS, run_experiment

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
    from mlp.export import chosen_model

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
    done = run_experiment("improved", "--data-dir", small_data, "--logdir", tmp_path,
                          "--run-name", "run", "--precision", "float32", *SMALL_RUN_FLAGS, *flags)
    assert done.returncode == 0, done.stderr
    exported = run_experiment("export", tmp_path / "run", "--out", tmp_path / "model")
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
    done = run_experiment("improved", "--data-dir", small_data, "--logdir", logdir, "--run-name",
                          "run", "--epochs", "2", "--precision", "float32", *SMALL_RUN_FLAGS)
    assert done.returncode == 0, done.stderr
    assert run_experiment("export", logdir / "run").returncode == 0
    return logdir / "run"


def test_predict_prints_a_line_per_image_and_json_for_machines(exported_model, small_data,
                                                               tmp_path):
    images = small_data / "t10k-images-idx3-ubyte.gz"
    lines = run_experiment("predict", exported_model / "saved_model", images)
    assert lines.returncode == 0, lines.stderr
    as_json = run_experiment("predict", exported_model, images, "--json")  # a run directory
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
    done = run_experiment("export", tmp_path / "foreign", "--out", tmp_path / "model")
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
    done = run_experiment("export", copy)
    assert done.returncode == 2 and "weights_digest" in done.stderr.strip().splitlines()[-1]
    assert not (copy / "saved_model").exists()
    shutil.rmtree(copy / "checkpoints")
    done = run_experiment("export", copy)
    assert done.returncode == 2 and "no checkpoint" in done.stderr


def test_an_unreadable_image_is_one_line(exported_model, tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a picture")
    done = run_experiment("predict", exported_model / "saved_model", tmp_path / "x.png")
    assert done.returncode == 1 and "not an image Pillow can read" in done.stderr
    done = run_experiment("predict", exported_model / "saved_model", tmp_path / "missing.png")
    assert done.returncode == 2 and "no such image file" in done.stderr
