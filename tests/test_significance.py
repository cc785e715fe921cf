"""Significance in the comparison tables: the paired t-interval, McNemar's test, the bootstrap
over seeds and test images and the binomial sampling error against known answers, and the
ablation's table that uses them."""

import math

import numpy as np
import pytest

from experiments.ablation import FULL, markdown, summarize
from mlp.significance import (binomial_half_width, bootstrap_change, mcnemar, p_text,
                              paired_interval, t_quantile)


def test_the_paired_interval_of_three_seeds_by_hand():
    mean, low, high = paired_interval([0.01, 0.02, 0.03])
    half = 4.302653 * 0.01 / math.sqrt(3)  # t(0.975, 2 df) x sd / sqrt(n)
    assert mean == pytest.approx(0.02) and (low, high) == pytest.approx((0.02 - half,
                                                                         0.02 + half))
    assert paired_interval([0.01]) is None


def test_the_t_quantile_is_exact_for_any_number_of_seeds():
    # Tables: t(0.975) with 2, 9, 40 and 120 degrees of freedom.
    for df, value in ((2, 4.303), (9, 2.262), (40, 2.021), (120, 1.980)):
        assert t_quantile(df) == pytest.approx(value, abs=5e-4)
    mean, low, high = paired_interval([0.01 * (k % 3) for k in range(41)])
    assert high - mean == pytest.approx(2.021 * np.std([0.01 * (k % 3) for k in range(41)],
                                                       ddof=1) / math.sqrt(41), rel=1e-3)


def test_mcnemar_counts_the_discordant_images_and_tests_them():
    # Few discordant images: the exact binomial test, never above 1.
    assert mcnemar([([1, 1, 0, 0, 1], [1, 0, 1, 0, 0])]) == (2, 1, 1.0)
    assert mcnemar([([1, 0], [0, 1])]) == (1, 1, 1.0)  # b = c: no evidence at all
    b, c, p = mcnemar([([1] * 10 + [0] * 5, [0] * 10 + [0] * 5)])
    assert (b, c) == (10, 0) and p == pytest.approx(2 * 0.5 ** 10)
    b, c, p = mcnemar([([1] * 3 + [0] * 9, [0] * 3 + [1] * 9)])
    assert (b, c) == (3, 9) and p == pytest.approx(2 * 299 / 4096)  # 2 P(X <= 3), X ~ B(12, 1/2)
    # Many: the continuity-corrected chi-square.
    b, c, p = mcnemar([([1] * 100 + [0] * 150, [0] * 100 + [1] * 150)])
    assert (b, c) == (100, 150) and p == pytest.approx(math.erfc(math.sqrt(49 ** 2 / 250 / 2)))
    # Pooled over seeds: the counts add up.
    assert mcnemar([([1, 0], [0, 0]), ([1, 1], [0, 1])])[:2] == (2, 0)


def _changed(correct, images):
    """`correct` with `images` more right (fewer if negative), the first such ones."""
    changed = np.array(correct, bool)
    where = np.flatnonzero(~changed if images > 0 else changed)[:abs(images)]
    changed[where] = images > 0
    return changed


def test_the_bootstrap_counts_the_seeds_variance_that_pooled_mcnemar_ignores():
    rng = np.random.default_rng(1)
    base = [rng.random(1000) < 0.85 for _ in range(3)]
    # Two seeds 40 images better, one 10 worse: the seeds disagree on the sign.
    mixed = [_changed(base[0], 40), _changed(base[1], 40), _changed(base[2], -10)]
    assert mcnemar(zip(base, mixed))[2] < 1e-10  # pooled, as if 3,000 independent images
    result = bootstrap_change(base, mixed)
    assert result["change"] == pytest.approx(70 / 3000)
    # Only when all three draws are the worse seed (1/27) is the mean change below 0.
    assert result["p"] == pytest.approx(2 / 27, abs=0.02)
    assert result["interval"][0] < 0 < result["interval"][1]
    # The same 40 images better on every seed: clear.
    steady = bootstrap_change(base, [_changed(b, 40) for b in base])
    assert steady["p"] < 0.01 and steady["interval"][0] > 0.02
    assert bootstrap_change(base, base)["p"] == 1.0


def test_the_bootstrap_over_images_has_the_binomial_spread():
    # One seed, 300 of 10,000 images better: the change is 0.03 with the standard error of a
    # proportion, sqrt(0.03 * 0.97 / 10,000), so the 95% interval is 0.03 +- 1.96 of it.
    base = np.zeros((1, 10_000), bool)
    better = base.copy()
    better[0, :300] = True
    result = bootstrap_change(base, better, replicates=4000)
    half = 1.96 * math.sqrt(0.03 * 0.97 / 10_000)
    assert result["change"] == pytest.approx(0.03)
    assert result["interval"][0] == pytest.approx(0.03 - half, abs=0.0006)
    assert result["interval"][1] == pytest.approx(0.03 + half, abs=0.0006)


def test_a_p_at_the_bootstraps_floor_is_printed_as_the_bound_it_is():
    base = np.zeros((2, 1000), bool)
    clear = bootstrap_change(base, ~base, replicates=999)  # every replicate above 0
    assert clear["p"] == 1 / 1000 and p_text(clear["p"], 999) == "< 0.001"
    assert p_text(0.0432) == "0.043" and p_text(2e-4, 10_000) == "0.0002"


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


def test_the_ablation_table_shows_the_interval_the_bootstrap_and_the_sampling_error(tmp_path):
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
    assert worse["bootstrap"]["change"] == pytest.approx(-0.2) and worse["bootstrap"]["p"] < 0.01
    assert worse["within_noise"] is False and worse["change_interval"][1] < 0
    assert noisy["within_noise"] is True
    assert rows[FULL]["change_interval"] is None
    table = markdown(list(rows.values()), "note", test_examples=100)
    assert "(within noise) |" in table.split("| noisy |")[1].splitlines()[0]
    assert "(within noise)" not in table.split("| worse |")[1].splitlines()[0]
    half = binomial_half_width(0.91, 100) * 100
    assert f"Test-set sampling error: ±{half:.2f} pt" in table
