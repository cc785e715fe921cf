"""experiments.test_time_views: the shifted copies are the image moved, and the recipe's own
views give the accuracy the run reported."""

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.test_time_views import shifted
from tests.conftest import run_experiment
from tests.test_export import exported_model  # noqa: F401  (a finished run)


@settings(max_examples=60, deadline=None)
@given(row=st.integers(0, 27), column=st.integers(0, 27), rows=st.integers(-2, 2),
       columns=st.integers(-2, 2))
def test_a_shift_moves_each_pixel_and_drops_what_leaves_the_image(row, column, rows, columns):
    image = np.zeros((1, 28, 28), np.float32)
    image[0, row, column] = 1.0
    moved = shifted(image, rows, columns)
    to = (row + rows, column + columns)
    if 0 <= to[0] < 28 and 0 <= to[1] < 28:
        assert moved.sum() == 1.0 and moved[0, to[0], to[1]] == 1.0
    else:
        assert moved.sum() == 0.0


def test_the_recipes_own_views_give_the_reported_accuracy(exported_model, tmp_path):  # noqa: F811
    results = json.loads((exported_model / "results.json").read_text())
    done = run_experiment("test_time_views", exported_model, "--split", "test")
    assert done.returncode == 0, done.stderr
    [row] = [line for line in done.stdout.splitlines() if line.startswith(f"| {exported_model}")]
    own, more, change = (cell.strip() for cell in row.split("|")[2:5])
    assert own == f"{results['test_accuracy']:.4f}"
    assert 0.0 <= float(more) <= 1.0 and change.endswith(" pt")

    missing = run_experiment("test_time_views", tmp_path)
    assert missing.returncode != 0 and "not a run directory" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
