"""Significance in the comparison tables: the paired t-interval, McNemar's test and the binomial
sampling error against hand-computed values, and the ablation's table that uses them."""

import math

import numpy as np
import pytest

from experiments.ablation import FULL, markdown, summarize
from mlp.significance import binomial_half_width, mcnemar, paired_interval


def test_the_paired_interval_of_three_seeds_by_hand():
    mean, low, high = paired_interval([0.01, 0.02, 0.03])
    half = 4.303 * 0.01 / math.sqrt(3)  # t(0.975, 2 df) x sd / sqrt(n)
    assert mean == pytest.approx(0.02) and (low, high) == pytest.approx((0.02 - half,
                                                                         0.02 + half))
    assert paired_interval([0.01]) is None


def test_mcnemar_counts_the_discordant_images_and_tests_them():
    assert mcnemar([([1, 1, 0, 0, 1], [1, 0, 1, 0, 0])]) == (2, 1, 1.0)  # (|2-1|-1)^2 = 0
    b, c, p = mcnemar([([1] * 10 + [0] * 5, [0] * 10 + [0] * 5)])
    assert (b, c) == (10, 0) and p == pytest.approx(0.004427, abs=1e-5)  # chi2 = 81/10, 1 df
    # Pooled over seeds: the counts add up.
    assert mcnemar([([1, 0], [0, 0]), ([1, 1], [0, 1])])[:2] == (2, 0)


def test_the_binomial_sampling_error_of_an_accuracy():
    assert binomial_half_width(0.9, 10_000) == pytest.approx(1.96 * 0.003)


def _run(tmp_path, name, seed, accuracy, correct):
    run_dir = tmp_path / f"{name}-{seed}"
    run_dir.mkdir()
    correct = np.asarray(correct, bool)
    labels = np.zeros(len(correct), np.int64)
    probabilities = np.zeros((len(correct), 10), np.float32)
    probabilities[np.arange(len(correct)), np.where(correct, 0, 1)] = 1.0
    np.savez(run_dir / "test_predictions.npz", probabilities=probabilities, labels=labels)
    return {"seed": seed, "run_dir": str(run_dir), "test_accuracy": accuracy,
            "test_accuracy_single_view": accuracy, "validation_accuracy": accuracy,
            "epochs_run": 1, "train_seconds": 1.0}


def test_the_ablation_table_shows_the_interval_mcnemar_and_the_sampling_error(tmp_path):
    full = [[1] * 90 + [0] * 10, [1] * 91 + [0] * 9, [1] * 92 + [0] * 8]
    records = {
        FULL: [_run(tmp_path, "full", s, sum(c) / 100, c) for s, c in enumerate(full)],
        # Clearly worse on every seed: 20 images the full recipe gets right, it gets wrong.
        "worse": [_run(tmp_path, "worse", s, (sum(c) - 20) / 100, [0] * 20 + c[20:])
                  for s, c in enumerate(full)],
        # Seeds either way: its interval contains 0.
        "noisy": [_run(tmp_path, "noisy", s, sum(c) / 100 + d, c)
                  for s, (c, d) in enumerate(zip(full, [0.01, -0.01, 0.002]))],
    }
    rows = {row["variant"]: row for row in summarize(records)}
    worse, noisy = rows["worse"], rows["noisy"]
    assert worse["mcnemar"]["only_base_right"] == 60 and worse["mcnemar"]["p"] < 1e-10
    assert worse["within_noise"] is False and worse["change_interval"][1] < 0
    assert noisy["within_noise"] is True
    assert rows[FULL]["change_interval"] is None
    table = markdown(list(rows.values()), "note", test_examples=100)
    assert "(within noise) |" in table.split("| noisy |")[1].splitlines()[0]
    assert "(within noise)" not in table.split("| worse |")[1].splitlines()[0]
    half = binomial_half_width(0.91, 100) * 100
    assert f"Test-set sampling error: ±{half:.2f} pt" in table
