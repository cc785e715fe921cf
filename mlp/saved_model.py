"""A trained run as a TensorFlow SavedModel that needs nothing of this repository.

    export(run_dir, out_dir)   # the weights results.json reports, as <out_dir>/saved_model.pb

The SavedModel holds the whole inference path in TensorFlow's own ops: uint8 pixels scaled to
[0, 1], the whitening layer if the recipe has one, the hidden blocks with batch norm on its
moving statistics and no dropout, the logits, softmax, and the average over the recipe's
test-time views (the mirror image, shifted copies; mlp.augment.evaluation_views). Its
`serving_default` signature takes `images` uint8 [N, 28, 28] and returns `probabilities` float32
[N, 10] and `classes` int32 [N]; the class names are the `class_names` signature's output and the
asset `class_names.txt`.

The weights are the ones `results.json` reports (the best epoch's under early stopping, the
moving average with --ema-decay, else the last): each candidate the checkpoint holds is put in
the model and the one whose SHA-256 is the reported `weights_digest` is exported.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from mlp.config import SIDE, ConfigError, check_finished_run
from mlp.data import CLASS_NAMES
from mlp.evaluation import view_log_probabilities
from mlp.exits import CannotWrite
from mlp.lock import DirectoryLock
from mlp.trained import chosen_model


def view_probabilities(model, pixels, test_time_flip, test_time_shifts=0):
    """Class probabilities of `pixels` [N, 784] in [0, 1] as the evaluator infers them: no
    dropout, batch norm on its moving statistics, averaged over the recipe's test-time views."""
    return tf.exp(view_log_probabilities(model, pixels, test_time_flip, test_time_shifts))


class Classifier(tf.Module):
    """The exported module: `serve(images)` as described above, with the model's variables."""

    def __init__(self, model, test_time_flip, test_time_shifts, class_names_file):
        super().__init__(name="classifier")
        self.model = model
        self.test_time_flip = bool(test_time_flip)
        self.test_time_shifts = int(test_time_shifts)
        self.class_names_file = tf.saved_model.Asset(str(class_names_file))
        self.names = tf.constant(CLASS_NAMES)

    @tf.function(input_signature=[tf.TensorSpec([None, SIDE, SIDE], tf.uint8, name="images")])
    def serve(self, images):
        pixels = tf.reshape(tf.cast(images, tf.float32) / 255.0, [-1, SIDE * SIDE])
        probabilities = view_probabilities(self.model, pixels, self.test_time_flip,
                                           self.test_time_shifts)
        return {"probabilities": probabilities,
                "classes": tf.argmax(probabilities, axis=1, output_type=tf.int32)}

    @tf.function(input_signature=[])
    def class_names(self):
        return {"class_names": self.names}


def export(run_dir, out_dir):
    """Write the run's SavedModel into `out_dir` (which must not exist yet), whole or not at all;
    returns the results the exported weights scored. Holds the run's lock meanwhile, so no
    training, study or search touches the run (or removes the export's staging directory,
    which may be inside it) until the export is done; DirectoryInUse if another process holds it."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ConfigError(f"--out: {out_dir} already exists; remove it or choose another --out")
    check_finished_run(Path(run_dir))  # before the lock, whose file would be made there
    with DirectoryLock(run_dir):
        model, config, results = chosen_model(run_dir)
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp",
                                            dir=out_dir.parent))
        except OSError as e:
            raise ConfigError(f"--out: cannot write in {out_dir.parent} ({e.strerror}); choose "
                              "another --out") from None
        try:
            _write(staging, model, config, results, run_dir)
            os.replace(staging / "model", out_dir)
        except OSError as e:
            raise CannotWrite(f"{out_dir}: {e.strerror}; free space or fix permissions, then "
                              "export again") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return results


def _write(staging, model, config, results, run_dir):
    """The SavedModel, its class names and export.json, into <staging>/model."""
    names = staging / "class_names.txt"
    names.write_text("\n".join(CLASS_NAMES) + "\n")
    classifier = Classifier(model, config.test_time_flip, config.test_time_shifts, names)
    tf.saved_model.save(classifier, str(staging / "model"), signatures={
        "serving_default": classifier.serve.get_concrete_function(),
        "class_names": classifier.class_names.get_concrete_function()})
    (staging / "model" / "export.json").write_text(json.dumps({
        "run": str(Path(run_dir).resolve()), "weights_digest": results["weights_digest"],
        "test_accuracy": results["test_accuracy"], "test_time_flip": config.test_time_flip,
        "test_time_shifts": config.test_time_shifts, "whitening": config.whitening,
        "precision": results["precision"]}, indent=2, sort_keys=True) + "\n")
