"""The final report of a run: the chosen weights evaluated on the training, validation and test
sets (the test set once, here), written as results.json and as TensorBoard test summaries,
images and hparams."""

import numpy as np

from mlp import calibration
from mlp import corruptions
from mlp import data as data_lib
from mlp import figures
from mlp.sharpness import sharpness
from mlp.training import weights_digest

# What the HParams dashboard shows for each run.
HPARAMS_METRICS = ("test_accuracy", "validation_accuracy", "test_loss", "epochs_run",
                   "train_seconds")


def evaluate(parts):
    """The current weights on the three splits; evaluation runs on every worker (its reductions
    are collectives)."""
    evaluator, splits = parts.evaluator, parts.splits
    train = evaluator.evaluate(parts.evaluation_batches(parts.train_images, parts.train_labels))
    validation = evaluator.evaluate(parts.evaluation_batches(splits.validation_images,
                                                             splits.validation_labels))
    test_batches = parts.evaluation_batches(splits.test_images, splits.test_labels)
    test = evaluator.evaluate(test_batches)
    single_view = (evaluator.evaluate(test_batches, single_view=True)
                   if parts.config.test_time_flip or parts.config.test_time_shifts else test)
    return train, validation, test, single_view


def corruption_accuracy(parts):
    """{corruption: test accuracy on the corrupted test images, ..., "mean": their mean}
    (see mlp/corruptions.py), evaluated as the clean test set is, all in one pass."""
    labels = parts.splits.test_labels
    sets = corruptions.corrupted_test_sets(parts.splits.test_images)
    predicted = parts.evaluator.evaluate(parts.evaluation_batches(
        np.concatenate(list(sets.values())), np.tile(labels, len(sets))))["predictions"].numpy()
    correct = (predicted.reshape(len(sets), -1) == labels).mean(axis=1)
    accuracy = {name: float(value) for name, value in zip(sets, correct)}
    return {**accuracy, "mean": float(np.mean(correct))}


def results(parts, state, best_epoch, workers=1):
    """(the results dict, the test evaluation) of a finished run whose chosen weights are in the
    model."""
    train, validation, test, single_view = evaluate(parts)
    history = state.history
    confusion = test["confusion"].numpy()
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    epoch_seconds = [record["seconds"] for record in history]
    # Fitting the input whitening is training work too (done again by a resumed process).
    train_seconds = float(sum(epoch_seconds)) + parts.whitening_seconds
    return {
        "experiment_config": parts.config.to_dict(),
        "precision": parts.precision,
        # auto's measurement, seconds per step in each candidate (None: no probe ran)
        "precision_probe": parts.precision_probe,
        "kernels": parts.kernels,
        "strategy": parts.config.strategy,
        "replicas": parts.replicas,
        "workers": workers,
        "test_accuracy": float(test["accuracy"].numpy()),
        "test_loss": float(test["loss"].numpy()),
        "validation_accuracy": float(validation["accuracy"].numpy()),
        "validation_loss": float(validation["loss"].numpy()),
        "train_accuracy": float(train["accuracy"].numpy()),
        # Train accuracy (the plain training images, evaluated as the test set is) minus test.
        "generalization_gap": float(train["accuracy"].numpy() - test["accuracy"].numpy()),
        # What the same weights score on the test set on the plain images alone (no mirror, no
        # shifted copies).
        "test_accuracy_single_view": float(single_view["accuracy"].numpy()),
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "stopped_early": state.stopped_early,
        "train_seconds": train_seconds,
        "whitening_seconds": parts.whitening_seconds,
        # With --teacher: its run, weights digest, test accuracy and training seconds (None: no
        # teacher).
        "teacher": parts.teacher,
        "epoch_seconds": epoch_seconds,
        "samples_per_second": (len(parts.train_labels) * len(history) / train_seconds
                               if train_seconds else 0.0),
        "steps": int(parts.trainer.step.numpy()),
        "weights_digest": weights_digest(parts.model),
        # ECE / NLL / Brier on the test set, and after temperature scaling fitted on validation.
        "calibration": calibration.calibration(
            test["log_probabilities"].numpy(), parts.splits.test_labels,
            validation["log_probabilities"].numpy(), parts.splits.validation_labels),
        "corruption_accuracy": (corruption_accuracy(parts) if parts.config.corruptions
                                else None),
        # The training loss's curvature at the chosen weights (mlp/sharpness.py).
        "sharpness": (sharpness(parts.model, parts.config, parts.train_images,
                                parts.train_labels) if parts.config.sharpness else None),
        "confusion_matrix": confusion.tolist(),
        "per_class_accuracy": dict(zip(data_lib.CLASS_NAMES, map(float, per_class))),
        "history": history,
    }, test


def write(summaries, results, test, splits, labels=None, pictures=True):
    """The test summaries, tables and hparams of `results` (with `labels`, {name: value}, among
    the hparams), with the test evaluation `test` for the most confident mistakes; and, if
    `pictures`, the report's figures as images."""
    final_step = max(results["epochs_run"], 1)
    confusion = np.asarray(results["confusion_matrix"])
    predictions, confidences = test["predictions"].numpy(), test["confidences"].numpy()
    summaries.scalars("test", final_step, {"accuracy": results["test_accuracy"],
                                           "loss": results["test_loss"]})
    summaries.text("test", "confusion_matrix_table", figures.confusion_markdown(confusion),
                   final_step)
    # Distinct tags: TensorBoard's fast loader drops a tag written by two plugins.
    summaries.text("test", "most_confident_mistakes_list",
                   figures.mistakes_markdown(splits.test_labels, predictions, confidences),
                   final_step)
    if results["corruption_accuracy"] is not None:
        summaries.scalars("test", final_step, {f"corruption/{name}": value for name, value in
                                               results["corruption_accuracy"].items()})
    if pictures:
        summaries.image("test", "confusion_matrix", figures.confusion_image(confusion),
                        final_step, "rows: true class, columns: predicted; counts in the cells")
        summaries.image("test", "most_confident_mistakes",
                        figures.mistakes_grid(splits.test_images, splits.test_labels,
                                              predictions, confidences), final_step,
                        "each captioned true → predicted (confidence)")
        summaries.image("test", "reliability_diagram",
                        figures.reliability_image(np.exp(test["log_probabilities"].numpy()),
                                                  splits.test_labels), final_step,
                        "accuracy against confidence in 15 bins; the diagonal is perfect "
                        "calibration")
    if pictures and results["corruption_accuracy"] is not None:
        summaries.image("test", "corruption_accuracy",
                        figures.corruption_image(results["corruption_accuracy"],
                                                 results["test_accuracy"]), final_step,
                        "test accuracy on each corrupted copy of the test images "
                        "(mlp/corruptions.py)")
    hparams = {**results["experiment_config"], "replicas": results["replicas"],
               "workers": results["workers"], "precision_used": results["precision"],
               "kernels_used": results["kernels"], **(labels or {})}
    summaries.hparams(hparams, {f"hparams/{key}": results[key] for key in HPARAMS_METRICS},
                      final_step)
    summaries.flush()


def write_predictions(run_dir, test, splits):
    """test_predictions.npz in `run_dir`: the final evaluation's `probabilities` float32
    [N, 10] (with test-time flipping if the recipe uses it) and the `labels` [N], from which every
    test figure of results.json can be computed again without the model."""
    import io

    from mlp.io import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez(buffer, probabilities=np.exp(test["log_probabilities"].numpy()).astype(np.float32),
             labels=np.asarray(splits.test_labels, np.int64))
    atomic_write_bytes(run_dir / "test_predictions.npz", buffer.getvalue())
