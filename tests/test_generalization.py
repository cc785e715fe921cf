"""The learning-curve study: the power-law fit recovers known curves, and a small study trains,
compares, fits, draws and continues where it stopped."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments import generalization
from tests.conftest import run_module

SIZES = generalization.log_spaced(1_000, 55_000, 6)


def test_the_default_sizes_are_six_log_spaced_from_1000_to_55000():
    assert SIZES[0] == 1_000 and SIZES[-1] == 55_000 and len(SIZES) == 6
    ratios = np.diff(np.log(SIZES))
    assert np.allclose(ratios, ratios[0], rtol=0.01)


def test_quick_is_a_smoke_test_of_a_few_short_runs_without_the_costly_measures(tmp_path):
    # Its cost is the number of runs times each run's start-up, tracing and report: nine short
    # runs (under two minutes on a 2-core CPU), not the 36 eight-epoch ones it once planned.
    _, args = generalization.parse(["--quick", "--logdir", str(tmp_path)])
    _, overrides, plan = generalization.plan_study(args)
    assert len(plan) == 9 and {seed for _, seed, _ in plan} == {0}
    assert sorted({config.train_subset for _, _, config in plan}) == [1_000, 2_000, 4_000]
    for _, _, config in plan:
        assert config.epochs == 3 and not config.sharpness and not config.corruptions
    _, args = generalization.parse(["--logdir", str(tmp_path)])  # the full study keeps them
    _, _, plan = generalization.plan_study(args)
    assert len(plan) == 36 and all(c.sharpness and c.corruptions for _, _, c in plan)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.02, 0.6), st.floats(-1.2, -0.2), st.floats(0.0, 0.2))
def test_the_power_law_fit_recovers_known_parameters(reducible_at_1000, b, c):
    a = reducible_at_1000 / 1000.0 ** b
    errors = generalization.power_law(np.array(SIZES, float), a, b, c)
    fit = generalization.fit_power_law(SIZES, errors)
    fitted = generalization.power_law(np.array(SIZES, float), fit["a"], fit["b"], fit["c"])
    assert np.allclose(fitted, errors, rtol=1e-4, atol=1e-6)
    assert fit["b"] == pytest.approx(b, abs=0.01) and fit["c"] == pytest.approx(c, abs=2e-3)


STUDY = ["--no-verify-checksums", "--validation-size", "100", "--sizes", "100", "200", "400",
         "--seeds", "1", "--epochs", "1", "--recipes", "baseline", "improved",
         "--study-name", "curves", "--no-sharpness", "--no-figures"]


@pytest.mark.slow  # six runs
def test_a_small_study_writes_its_curves_tables_and_plot_and_continues(small_data, tmp_path):
    args = ["--data-dir", small_data, "--logdir", tmp_path, *STUDY]
    first = run_module("generalization", *args)
    assert first.returncode == 0, first.stderr
    study = tmp_path / "curves"
    summary = json.loads((study / "generalization.json").read_text())
    assert list(summary) == ["baseline", "improved"]
    for name, curve in summary.items():
        assert curve["sizes"] == [100, 200, 400] and len(curve["test_error"]) == 3
        assert {"a", "b", "c", "intervals", "c_identified"} <= set(curve["fit"])
        results = [json.loads((study / f"{name}-m{m}-seed0" / "results.json").read_text())
                   for m in (100, 200, 400)]
        assert [r["experiment_config"]["train_subset"] for r in results] == [100, 200, 400]
        assert curve["test_error"] == pytest.approx([1 - r["test_accuracy"] for r in results])
        # Each run's measures, means over seeds; sharpness left out on request.
        assert {"ece", "corruption_accuracy", "generalization_gap"} <= set(curve["measures"][-1])
        assert "hessian_top_eigenvalue" not in curve["measures"][-1]
    # The compared recipe carries the bootstrap's p at each size (an interval needs two seeds).
    improved = summary["improved"]
    assert improved["change_interval"] == [None] * 3
    assert all(0 <= p <= 1 for p in improved["p"])
    assert summary["baseline"]["change_interval"] == [None] * 3
    table = (study / "generalization.md").read_text()
    assert "| 200 |" in table and "a·m^b + c" in table and "λ_max" in table
    assert (study / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"

    again = run_module("generalization", *args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("finished before, skipped") == 6
    assert "training in" not in again.stdout

    # Its record (experiments.results collect) gives the same tables back, its figures and
    # bootstrap intervals computed again from what the record keeps of each run.
    from experiments import results

    record = results.collect("curves", "python -m experiments.generalization", "0" * 40,
                             results.study_groups(study), tmp_path / "records")
    assert [run["group"] for run in record["runs"]] == [
        f"{name} m={m}" for name in ("baseline", "improved") for m in (100, 200, 400)]
    generated = results.table("curve curves", tmp_path / "records")
    assert generated.startswith(table.split("\n\n", 1)[1])  # all but the study's note


def test_sizes_beyond_the_training_set_are_refused_in_one_line(small_data, tmp_path):
    done = run_module("generalization", "--data-dir", small_data, "--logdir", tmp_path,
                          "--no-verify-checksums", "--validation-size", "100", "--sizes", "100",
                          "5000", "--seeds", "1", "--epochs", "1", "--recipes", "baseline")
    assert done.returncode == 2, done.stderr
    assert "--train-subset: 5,000 is more than the 500 training images" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    # The whole plan is checked before its first run: the size that fits was not trained.
    assert "training in" not in done.stdout
    assert not list(tmp_path.glob("generalization*/*/results.json"))


def test_each_recipe_is_compared_with_the_first_on_paired_seeds(tmp_path):
    import argparse

    from tests.test_significance import _run

    args = argparse.Namespace(recipes=["baseline", "improved"], sizes=[100, 200, 400])
    records = {}
    for size in args.sizes:
        base = [[1] * 70 + [0] * 30, [1] * 72 + [0] * 28]
        records[generalization.variant("baseline", size)] = [
            _run(tmp_path, f"baseline-{size}", s, sum(c) / 100, c) for s, c in enumerate(base)]
        # Ten more test images right on each seed than the baseline.
        records[generalization.variant("improved", size)] = [
            _run(tmp_path, f"improved-{size}", s, (sum(c) + 10) / 100, [1] * 10 + c[:90])
            for s, c in enumerate(base)]
    # The fit is not tested here: few bootstrap refits.
    summary = generalization.summarize(args.recipes, args.sizes, records, fit_replicates=20)
    improved = summary["improved"]
    assert improved["test_error"] == pytest.approx([0.19] * 3)
    assert improved["change_interval"] == [pytest.approx([0.10, 0.10])] * 3
    assert improved["within_noise"] == [False] * 3
    assert all(p < 0.01 for p in improved["p"])
    table = generalization.markdown(args.recipes[0], args.sizes, summary, "note", 100)
    assert "+10.00 to +10.00 pt" in table and "within noise" not in table


def _records(errors_by_size, sizes, name="best"):
    """Run records of `name` at `sizes` with the given per-seed test errors (no run directory,
    so no predictions or measures)."""
    return {generalization.variant(name, m): [
        {"seed": s, "run_dir": "/nonexistent/run", "test_accuracy": 1 - e,
         "validation_accuracy": 1 - e, "epochs_run": 1, "train_seconds": 1.0,
         "test_accuracy_single_view": 1 - e}
        for s, e in enumerate(errors)] for m, errors in zip(sizes, errors_by_size)}


def test_a_floor_at_its_bound_is_reported_as_not_identified_and_not_extrapolated():
    import argparse

    sizes = [1_000, 2_000, 4_000, 8_000]  # the quick study's range, and beyond
    rng = np.random.default_rng(0)
    args = argparse.Namespace(recipes=["best"], sizes=sizes, seeds=3, quick=True)
    # A pure power law (no floor): the fit puts c at 0.
    straight = [[0.7 * m ** -0.2 * (1 + 0.01 * rng.standard_normal()) for _ in range(3)]
                for m in sizes]
    summary = generalization.summarize(args.recipes, args.sizes, _records(straight, sizes))
    fit = summary["best"]["fit"]
    assert fit["c"] < generalization.AT_BOUND and not fit["c_identified"]
    assert fit["intervals"]["b"][0] < -0.2 < fit["intervals"]["b"][1]
    table = generalization.markdown(args.recipes[0], args.sizes, summary, "n")
    row = next(line for line in table.splitlines() if line.startswith("| best | "))
    assert "(not identified)" in row and row.endswith("— (beyond the data, c not identified) |")
    assert "c sits on its bound for best" in table
    # A clear floor of 0.08: identified, inside its interval, and extrapolated.
    floored = [[2.0 * m ** -0.5 + 0.08 + 0.0005 * rng.standard_normal() for _ in range(3)]
               for m in sizes]
    summary = generalization.summarize(args.recipes, args.sizes, _records(floored, sizes))
    fit = summary["best"]["fit"]
    assert fit["c_identified"] and fit["intervals"]["c"][0] < 0.08 < fit["intervals"]["c"][1]
    assert fit["c"] == pytest.approx(0.08, abs=0.01)
    table = generalization.markdown(args.recipes[0], args.sizes, summary, "n")
    row = next(line for line in table.splitlines() if line.startswith("| best | "))
    assert "not identified" not in row and "c sits on its bound" not in table
