"""What a finished run shows about its errors: the confusion matrix and the test images it got
most confidently wrong, as arrays TensorBoard can show and as text naming the classes."""

import numpy as np

from mlp.data import CLASS_NAMES

CELL = 24  # pixels per confusion-matrix cell


def confusion_image(confusion):
    """A heat map of the row-normalized confusion matrix (rows: true class, columns: predicted),
    as a uint8 RGB image [1, H, W, 3]: white is 0, dark blue is 1; the diagonal is outlined."""
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    white, blue = np.array([255, 255, 255]), np.array([8, 48, 107])
    cells = white + (blue - white) * rates[..., None]  # [10, 10, 3]
    image = np.kron(cells, np.ones((CELL, CELL, 1)))
    n = len(confusion)
    for i in range(n):  # a grey frame around each diagonal cell
        block = image[i * CELL:(i + 1) * CELL, i * CELL:(i + 1) * CELL]
        block[[0, -1], :] = 128
        block[:, [0, -1]] = 128
    return image.astype(np.uint8)[None]


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


def mistakes_grid(images, labels, predictions, confidences, count=32, columns=8, scale=2):
    """The `count` most confidently misclassified images in a grid, as uint8 [1, H, W, 1], and a
    markdown list (row by row) of what each was and what it was taken for."""
    chosen = most_confident_mistakes(labels, predictions, confidences, count)
    rows = max(1, -(-len(chosen) // columns))
    side = 28 * scale + 2
    grid = np.full((rows * side, columns * side), 255, np.uint8)
    lines = ["| cell | true | predicted | confidence |", "|---|---|---|---|"]
    for k, index in enumerate(chosen):
        picture = (images[index].reshape(28, 28) * 255).astype(np.uint8)
        picture = np.kron(picture, np.ones((scale, scale), np.uint8))
        r, c = divmod(k, columns)
        grid[r * side + 1:r * side + 1 + 28 * scale, c * side + 1:c * side + 1 + 28 * scale] = picture
        lines.append(f"| {r + 1},{c + 1} | {CLASS_NAMES[labels[index]]} | "
                     f"{CLASS_NAMES[predictions[index]]} | {confidences[index]:.3f} |")
    return grid[None, :, :, None], "\n".join(lines)
