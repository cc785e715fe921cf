"""Pictures a person can read, drawn with matplotlib (as TensorFlow's "images in TensorBoard" guide
does): the confusion matrix and the test images a run got most confidently wrong, as arrays
TensorBoard can show and as text naming the classes; and an ablation's table as a chart."""

import numpy as np

from mlp.config import SIDE
from mlp.data import CLASS_NAMES


def _figure_to_array(figure):
    """A matplotlib figure as a uint8 RGB image [1, H, W, 3] (for tf.summary.image)."""
    import matplotlib.pyplot as plt

    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return image[None]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def confusion_image(confusion):
    """The confusion matrix as people expect to read it: class names on both axes (rows: true
    class, columns: predicted), the count in every cell, cells shaded by the row's share; as a
    uint8 RGB image [1, H, W, 3]."""
    plt = _pyplot()
    confusion = np.asarray(confusion)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(8, 7), dpi=100)
    axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(CLASS_NAMES))
    axes.set_xticks(ticks, CLASS_NAMES, rotation=45, ha="right")
    axes.set_yticks(ticks, CLASS_NAMES)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    for i in ticks:
        for j in ticks:
            axes.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=8,
                      color="white" if rates[i, j] > 0.5 else "black")
    accuracy = np.trace(confusion) / max(confusion.sum(), 1)
    axes.set_title(f"test confusion matrix (accuracy {accuracy:.4f})")
    figure.tight_layout()
    return _figure_to_array(figure)


def confusion_markdown(confusion):
    """The confusion matrix as a markdown table with class names, per-class accuracy last."""
    names = [name.split("/")[0] for name in CLASS_NAMES]
    accuracy = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    lines = ["| true \\ predicted | " + " | ".join(names) + " | accuracy |",
             "|---" * (len(names) + 2) + "|"]
    for name, row, acc in zip(names, confusion, accuracy):
        lines.append(f"| **{name}** | " + " | ".join(str(int(v)) for v in row) + f" | {acc:.3f} |")
    return "\n".join(lines)


def most_confident_mistakes(labels, predictions, confidences, count=32):
    """Indices of the wrongly classified examples, most confident first."""
    wrong = np.flatnonzero(predictions != labels)
    return wrong[np.argsort(-confidences[wrong], kind="stable")][:count]


def mistakes_markdown(labels, predictions, confidences, count=32, columns=8):
    """The `count` most confidently misclassified examples as a markdown table, each with its
    cell (row, column) in mistakes_grid's picture."""
    lines = ["| cell | true | predicted | confidence |", "|---|---|---|---|"]
    for k, index in enumerate(most_confident_mistakes(labels, predictions, confidences, count)):
        r, c = divmod(k, columns)
        lines.append(f"| {r + 1},{c + 1} | {CLASS_NAMES[labels[index]]} | "
                     f"{CLASS_NAMES[predictions[index]]} | {confidences[index]:.3f} |")
    return "\n".join(lines)


def mistakes_grid(images, labels, predictions, confidences, count=32, columns=8, scale=5):
    """The `count` most confidently misclassified images in a grid, each captioned
    "true → predicted (confidence)", as uint8 RGB [1, H, W, 3] (mistakes_markdown lists them).

    The images are tiled into one picture (each pixel `scale` screen pixels wide) and drawn once,
    with the captions on a fixed grid: a subplot per image, with a layout fitted around every
    caption, costs about a second of every run's report."""
    plt = _pyplot()
    chosen = most_confident_mistakes(labels, predictions, confidences, count)
    rows = max(1, -(-len(chosen) // columns))
    dpi, side = 100, SIDE * scale
    cell_width, cell_height, title_height = side + 50, side + 45, 40  # pixels
    width, height = columns * cell_width, rows * cell_height + title_height
    canvas = np.zeros((height, width))  # white in the reversed gray scale below
    figure = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.axis("off")
    for k, index in enumerate(chosen):
        r, c = divmod(k, columns)
        top = title_height + r * cell_height + cell_height - side - 5
        left = c * cell_width + (cell_width - side) // 2
        canvas[top:top + side, left:left + side] = np.kron(
            images[index].reshape(SIDE, SIDE), np.ones((scale, scale)))
        true, predicted = CLASS_NAMES[labels[index]], CLASS_NAMES[predictions[index]]
        axes.text(c * cell_width + cell_width / 2, top - 4,
                  f"{true} →\n{predicted} ({confidences[index]:.2f})", fontsize=8,
                  ha="center", va="bottom")
    axes.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest",
                extent=(0, width, height, 0))
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.text(width / 2, title_height / 2, "most confident mistakes: true → predicted "
              "(confidence)", fontsize=12, ha="center", va="center")
    return _figure_to_array(figure)


def ablation_chart(rows, title):
    """The ablation table as a chart: mean ± std test accuracy per variant (error bars), the full
    recipe's mean as a line and its bar in another colour; as uint8 RGB [1, H, W, 3]."""
    plt = _pyplot()
    names = [row["variant"] for row in rows]
    means = np.array([row["test_accuracy"]["mean"] for row in rows])
    stds = np.array([row["test_accuracy"]["std"] for row in rows])
    full = [i for i, row in enumerate(rows) if row["variant"] == "full recipe"]
    colors = ["tab:orange" if i in full else "tab:blue" for i in range(len(rows))]
    figure, axes = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5), dpi=100)
    positions = np.arange(len(rows))[::-1]
    axes.barh(positions, means, xerr=stds, color=colors, capsize=3)
    axes.set_yticks(positions, names)
    low = max(0.0, float((means - stds).min()) - 0.01)
    axes.set_xlim(low, min(1.0, float((means + stds).max()) + 0.01))
    if full:
        axes.axvline(means[full[0]], color="tab:orange", linestyle="--", linewidth=1)
    axes.set_xlabel("test accuracy (mean ± std over seeds; orange: the full recipe)")
    axes.set_title(title)
    figure.tight_layout()
    return _figure_to_array(figure)


def reliability_image(probabilities, labels, bins=15):
    """A reliability diagram: per equal-width bin of the top-class probability, the accuracy
    (bars) against the bin's mean confidence, the diagonal for perfect calibration, and the
    expected calibration error in the title; as a uint8 RGB image [1, H, W, 3]."""
    from mlp.calibration import confidence_bins, expected_calibration_error

    plt = _pyplot()
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = confidence_bins(confidence, bins)
    edges = np.linspace(0, 1, bins + 1)
    figure, axes = plt.subplots(figsize=(5, 5), dpi=100)
    for b in range(bins):
        members = which == b
        if members.any():
            axes.bar(edges[b], correct[members].mean(), width=1 / bins, align="edge",
                     color="tab:blue", edgecolor="white")
    axes.plot([0, 1], [0, 1], color="tab:orange", linestyle="--")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence (top-class probability)")
    axes.set_ylabel("accuracy")
    ece = expected_calibration_error(probabilities, labels, bins)
    axes.set_title(f"test reliability (ECE {ece:.4f})")
    figure.tight_layout()
    return _figure_to_array(figure)


def corruption_image(corruption_accuracy, clean_accuracy):
    """Test accuracy on each corrupted copy of the test set (bars, mean last) against the clean
    test accuracy (a dashed line); as a uint8 RGB image [1, H, W, 3]."""
    plt = _pyplot()
    names = [name for name in corruption_accuracy if name != "mean"] + ["mean"]
    values = [corruption_accuracy[name] for name in names]
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(names) + 1.4), dpi=100)
    positions = np.arange(len(names))[::-1]
    axes.barh(positions, values, color=["tab:blue"] * (len(names) - 1) + ["tab:orange"])
    for position, value in zip(positions, values):
        axes.text(value, position, f" {value:.3f}", va="center", fontsize=8)
    axes.axvline(clean_accuracy, color="black", linestyle="--", linewidth=1)
    axes.set_yticks(positions, [name.replace("_", " ") for name in names])
    axes.set_xlim(0, 1.08)
    axes.set_xlabel(f"test accuracy (dashed: the clean test set, {clean_accuracy:.4f})")
    axes.set_title("accuracy on corrupted test images")
    figure.tight_layout()
    return _figure_to_array(figure)
