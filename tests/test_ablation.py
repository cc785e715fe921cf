import json
import math

from experiments.ablation import FULL, markdown, summarize
from tests.conftest import run_experiment

FLAGS = ["--quick", "--seeds", "2", "--no-verify-checksums", "--validation-size", "100",
         "--train-subset", "400", "--variants", FULL, "no dropout", "baseline"]


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


def test_study_writes_tables_then_skips_and_resumes(small_data, tmp_path):
    args = ["--data-dir", small_data, "--logdir", tmp_path, *FLAGS]
    first = run_experiment("ablation", *args)
    assert first.returncode == 0, first.stderr
    study = tmp_path / "ablation-improved-quick-n400"
    report = json.loads((study / "ablation.json").read_text())
    assert {row["variant"] for row in report["rows"]} == {FULL, "no dropout", "baseline"}
    assert all(row["seeds"] == [0, 1] for row in report["rows"])
    assert (study / "ablation.md").read_text().count("\n| ") == 4  # header + 3 variants
    assert first.stdout.count("training in") == 6

    # Every run is a normal run directory with its hparams and results.
    for run in study.glob("*-seed*"):
        assert (run / "results.json").exists() and list(run.glob("events.out.tfevents.*"))

    # An interrupted run (checkpoints but no results) is resumed; finished ones are skipped.
    (study / "baseline-seed1" / "results.json").unlink()
    second = run_experiment("ablation", *args)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("finished before, skipped") == 5
    assert "baseline, seed 1: resuming" in second.stdout
    again = json.loads((study / "ablation.json").read_text())
    assert again["rows"] == report["rows"]  # the resumed run finished with the same numbers
