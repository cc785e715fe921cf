import json
import math
import shlex

import pytest

from experiments.ablation import FULL, markdown, summarize
from tests.conftest import run_module

FLAGS = ["--quick", "--seeds", "2", "--no-verify-checksums", "--validation-size", "100",
         "--train-subset", "400", "--no-figures", "--variants", FULL, "baseline"]


def test_summary_means_stds_and_sorting():
    records = {
        FULL: [{"seed": 0, "test_accuracy": 0.90, "validation_accuracy": 0.91, "epochs_run": 10,
                "train_seconds": 5.0, "test_accuracy_single_view": 0.89},
               {"seed": 1, "test_accuracy": 0.92, "validation_accuracy": 0.93, "epochs_run": 12,
                "train_seconds": 7.0, "test_accuracy_single_view": 0.91}],
        "worse": [{"seed": 0, "test_accuracy": 0.80, "validation_accuracy": 0.8, "epochs_run": 3,
                   "train_seconds": 1.0, "test_accuracy_single_view": 0.79}],
        "better": [{"seed": 0, "test_accuracy": 0.95, "validation_accuracy": 0.9, "epochs_run": 3,
                    "train_seconds": 1.0, "test_accuracy_single_view": 0.95}],
    }
    rows = summarize(records)
    assert [row["variant"] for row in rows] == [FULL, "worse", "better"]
    full = rows[0]
    assert math.isclose(full["test_accuracy"]["mean"], 0.91)
    assert math.isclose(full["test_accuracy"]["std"], math.sqrt(2) * 0.01)
    assert math.isclose(rows[1]["change_vs_full"], -0.11)
    table = markdown(rows, "note")
    assert "| worse | 0.8000 ± 0.0000 | -11.00 pt | 0.7900 ± 0.0000 |" in table
    assert f"| {FULL} | 0.9100 ± 0.0141 | — | 0.9000 ± 0.0141 |" in table


def test_a_study_without_the_full_recipe_has_no_change_to_show():
    run = {"seed": 0, "test_accuracy": 0.9, "validation_accuracy": 0.9, "epochs_run": 3,
           "train_seconds": 1.0, "test_accuracy_single_view": 0.9}
    rows = summarize({"no whitening": [run], "no flip": [dict(run, test_accuracy=0.8)]})
    assert [row["change_vs_full"] for row in rows] == [None, None]
    json.dumps(rows, allow_nan=False)  # valid JSON: no NaN
    table = markdown(rows, "note")
    assert "| no whitening | 0.9000 ± 0.0000 | — |" in table and "nan" not in table


@pytest.mark.slow
def test_study_writes_tables_then_skips_and_resumes(small_data, tmp_path):
    args = ["--data-dir", small_data, "--logdir", tmp_path, *FLAGS]
    first = run_module("ablation", *args)
    assert first.returncode == 0, first.stderr
    study = tmp_path / "ablation-improved-quick-n400"
    report = json.loads((study / "ablation.json").read_text())
    assert {row["variant"] for row in report["rows"]} == {FULL, "baseline"}
    assert all(row["seeds"] == [0, 1] for row in report["rows"])
    table, measures = (study / "ablation.md").read_text().split("Beyond accuracy")
    assert table.count("\n| ") == 3  # header + 2 variants
    # The measures beyond accuracy, a row per variant, each with every measure.
    rows = [line for line in measures.splitlines() if line.startswith("| ") and "—" not in line]
    assert len(rows) == 3 and "ECE (scaled)" in rows[0]
    assert first.stdout.count("training in") == 4

    # Every run is a normal run directory with its hparams and results; --no-figures reached
    # each run's settings.
    for run in study.glob("*-seed*"):
        assert (run / "results.json").exists() and list(run.glob("events.out.tfevents.*"))
        assert json.loads((run / "config.json").read_text())["figures"] is False

    # An interrupted run (checkpoints but no results) is resumed; finished ones are skipped.
    (study / "baseline-seed1" / "results.json").unlink()
    second = run_module("ablation", *args)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("finished before, skipped") == 3
    assert "baseline, seed 1: resuming" in second.stdout
    again = json.loads((study / "ablation.json").read_text())
    assert again["rows"] == report["rows"]  # the resumed run finished with the same numbers


SWEEP = ["--quick", "--seeds", "2", "--no-verify-checksums", "--validation-size", "100",
         "--train-subset", "300", "--no-sharpness", "--no-figures", "--variants", FULL, "no L2",
         "--study-name", "sweep"]


@pytest.mark.slow
def test_sweep_lists_one_command_per_run_and_reports_what_finished(small_data, tmp_path):
    args = ["--data-dir", small_data, "--logdir", tmp_path, *SWEEP]
    listed = run_module("ablation", *args, "--list-commands")
    assert listed.returncode == 0, listed.stderr
    commands = listed.stdout.strip().splitlines()
    assert len(commands) == 4
    assert all(c.startswith("python -m experiments.ablation ") and "--list-commands" not in c
               for c in commands)
    assert sorted(shlex.split(c)[-1] for c in commands) == [
        "full-recipe-seed0", "full-recipe-seed1", "no-l2-seed0", "no-l2-seed1"]

    # A scheduler runs one of them: only that run trains.
    one = run_module("ablation", *shlex.split(commands[1])[3:])
    assert one.returncode == 0, one.stderr
    assert one.stdout.count("training in") == 1
    study = tmp_path / "sweep"
    finished = sorted(p.parent.name for p in study.glob("*/results.json"))
    assert finished == [shlex.split(commands[1])[-1]]

    # The report aggregates what finished and trains nothing.
    report = run_module("ablation", *args, "--report-only")
    assert report.returncode == 0, report.stderr
    assert "training in" not in report.stdout and report.stdout.count("not finished") == 3
    assert "1 of 4 runs finished" in (study / "ablation.md").read_text()


@pytest.mark.slow
def test_a_run_locked_by_another_process_is_skipped(small_data, tmp_path):
    from mlp.lock import DirectoryLock

    run_dir = tmp_path / "locked" / "no-l2-seed0"
    run_dir.mkdir(parents=True)
    with DirectoryLock(run_dir):
        done = run_module("ablation", "--data-dir", small_data, "--logdir", tmp_path,
                              *SWEEP[:-1], "locked", "--runs", "no-l2-seed0", "full-recipe-seed0")
    assert done.returncode == 0, done.stderr
    assert "no L2, seed 0: in use by another process, skipped" in done.stdout
    assert not (run_dir / "results.json").exists()
    assert (tmp_path / "locked" / "full-recipe-seed0" / "results.json").exists()


@pytest.mark.slow
def test_a_saved_run_with_other_settings_is_not_reused(small_data, tmp_path):
    args = ["--data-dir", small_data, "--logdir", tmp_path, *SWEEP, "--runs", "no-l2-seed0"]
    assert run_module("ablation", *args).returncode == 0
    config_path = tmp_path / "sweep" / "no-l2-seed0" / "config.json"
    saved = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**saved, "learning_rate": 0.5}))
    done = run_module("ablation", *args)
    assert done.returncode == 2
    assert "--learning-rate" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("study", ["ablation", "generalization", "speedrun", "search"])
def test_every_study_is_named_by_study_name(tmp_path, study):
    done = run_module(study, "--logdir", tmp_path, "--study-name", "../elsewhere")
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"python -m experiments.{study}: error: argument --study-name: must "
                           "be a plain directory name, got '../elsewhere' (see --help)\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("study, old, new", [
    ("ablation", "--study", "--recipe NAME for the recipe to take apart"),
    ("speedrun", "--name", "--study-name NAME"),
    ("search", "--study", "--study-name NAME"),
    ("search", "--space", "--recipe NAME"),
])
def test_a_flag_an_earlier_version_spelt_otherwise_is_refused_with_its_new_name(tmp_path, study,
                                                                                old, new):
    # An old command must not run with another meaning (ablation's --study picked the recipe).
    done = run_module(study, old, "best", "--logdir", tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"python -m experiments.{study}: error: {old} was renamed: "
                                  f"use {new}")
    assert len(done.stderr.splitlines()) == 1, done.stderr  # one line, not argparse's usage
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_best_study_compares_like_with_like(small_data, tmp_path):
    from experiments.recipes import best_variants

    # Variants trained without flips are evaluated without mirror images too, and those trained
    # without shifts without shifted copies.
    for name, config in best_variants().items():
        assert config.test_time_flip == config.augment_flip, name
        assert bool(config.test_time_shifts) == bool(config.augment_shift), name
    # Test-time views have their own row: the full recipe's runs on the plain images.
    done = run_module("ablation", "--recipe", "best", "--data-dir", small_data, "--logdir",
                          tmp_path, "--quick", "--seeds", "1", "--no-verify-checksums",
                          "--validation-size", "100", "--train-subset", "200",
                          "--variants", FULL, "no augmentation (flip, shift)", "--precision",
                          "float32", "--no-figures")
    assert done.returncode == 0, done.stderr
    report = json.loads(next(tmp_path.glob("ablation-best*/ablation.json")).read_text())
    rows = {row["variant"]: row for row in report["rows"]}
    full_results = json.loads(next(tmp_path.glob("ablation-best*/full-recipe-seed0/results.json"))
                              .read_text())
    tta_row = rows["no test-time views (the full recipe's runs, plain images)"]
    assert tta_row["test_accuracy"]["mean"] == full_results["test_accuracy_single_view"]
    assert tta_row["change_vs_full"] == pytest.approx(
        full_results["test_accuracy_single_view"] - full_results["test_accuracy"])
    plain = json.loads(next(tmp_path.glob("ablation-best*/no-augmentation*-seed0/results.json"))
                       .read_text())
    assert plain["test_accuracy"] == plain["test_accuracy_single_view"]


@pytest.mark.slow
def test_the_study_draws_its_chart_beside_the_table_and_in_tensorboard(small_data, tmp_path):
    import tensorflow as tf

    done = run_module("ablation", "--data-dir", small_data, "--logdir", tmp_path,
                          *SWEEP[:-1], "chart", "--seeds", "1")
    assert done.returncode == 0, done.stderr
    png = (tmp_path / "chart" / "ablation.png").read_bytes()
    pixels = tf.io.decode_png(png).numpy()
    assert pixels.shape[0] >= 200 and pixels.shape[1] >= 600
    assert len(set(map(tuple, pixels.reshape(-1, pixels.shape[2])))) > 50  # not blank
    tags = set()
    for path in (tmp_path / "chart" / "summary").glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags |= {value.tag for value in event.summary.value}
    assert {"ablation", "ablation_table"} <= tags
