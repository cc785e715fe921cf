"""The experiments as a user runs them: subprocesses on small generated IDX data."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from experiments.recipes import IMPROVED
from tests.conftest import REAL_DATA, REPO, SMALL_RUN_FLAGS, run_module, write_dataset

RESULT_KEYS = {"test_accuracy", "test_loss", "best_epoch", "epochs_run", "train_seconds",
               "epoch_seconds", "samples_per_second", "weights_digest", "experiment_config"}


def _scalars(directory):
    """{tag: [(step, value)]} of the scalar summaries in an event directory, read as TensorBoard
    reads them."""
    accumulator = event_accumulator.EventAccumulator(str(directory), size_guidance={
        event_accumulator.TENSORS: 0})
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags()["tensors"]:
        events = accumulator.Tensors(tag)
        values = [tf.make_ndarray(e.tensor_proto) for e in events]
        if all(v.ndim == 0 and v.dtype.kind in "fiu" for v in values):  # not text, histograms
            scalars[tag] = [(e.step, float(v)) for e, v in zip(events, values)]
    return scalars


def test_improved_run_writes_results_and_tensorboard_logs(small_data, tmp_path):
    done = run_module("improved", "--data-dir", small_data, "--logdir", tmp_path,
                          "--run-name", "e2e", "--epochs", "4", *SMALL_RUN_FLAGS,
                          "--histograms", "--figures")
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "e2e"
    results = json.loads((run_dir / "results.json").read_text())
    assert RESULT_KEYS <= set(results)
    assert results["epochs_run"] == len(results["epoch_seconds"]) == 4
    assert results["history"][-1]["loss"] < results["history"][0]["loss"]
    assert len(results["weights_digest"]) == 64
    assert results["experiment_config"]["hidden_sizes"] == [512, 256, 50]
    assert json.loads((run_dir / "config.json").read_text())["run_name"] == "e2e"
    assert "epoch   4/4" in done.stdout and "test" in done.stdout.splitlines()[-1]

    train = _scalars(run_dir / "train")
    assert {"loss", "data_loss", "l2_penalty", "accuracy", "learning_rate"} <= set(train)
    assert [step for step, _ in train["loss"]] == [1, 2, 3, 4]
    assert train["loss"][0][1] == pytest.approx(results["history"][0]["loss"], rel=1e-5)
    validation = _scalars(run_dir / "validation")
    assert [step for step, _ in validation["accuracy"]] == [1, 2, 3, 4]
    test = _scalars(run_dir / "test")
    assert test["accuracy"][0][1] == pytest.approx(results["test_accuracy"], rel=1e-6)
    accumulator = event_accumulator.EventAccumulator(str(run_dir / "train"))
    accumulator.Reload()
    assert "weights/dense_0/kernel" in accumulator.Tags()["tensors"]  # histograms are tensors
    assert PICTURES | TABLES <= _tensor_tags(run_dir / "test")


PICTURES = {"confusion_matrix", "most_confident_mistakes", "reliability_diagram"}
TABLES = {"confusion_matrix_table", "most_confident_mistakes_list"}


def _tensor_tags(directory):
    """The tags of the tensor summaries (images, text, histograms) in `directory`'s events."""
    accumulator = event_accumulator.EventAccumulator(str(directory))
    accumulator.Reload()
    return set(accumulator.Tags()["tensors"])


def test_baseline_runs_with_its_own_architecture(small_data, tmp_path):
    done = run_module("baseline", "--data-dir", small_data, "--logdir", tmp_path,
                          "--run-name", "b", "--epochs", "2", *SMALL_RUN_FLAGS)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    config = results["experiment_config"]
    assert config["hidden_sizes"] == [300, 80, 50] and not config["batch_norm"]
    assert config["l2"] == 0 and config["dropout"] == 0 and results["epochs_run"] == 2
    # --no-figures (in the small runs' flags): the report's tables, none of its pictures
    tags = _tensor_tags(tmp_path / "b" / "test")
    assert TABLES <= tags and not PICTURES & tags


@pytest.mark.slow  # a whole run
def test_best_runs_its_recipe_and_reports_the_single_view_accuracy(small_data, tmp_path):
    done = run_module("best", "--data-dir", small_data, "--logdir", tmp_path,
                          "--run-name", "best", "--epochs", "4", "--warmup-epochs", "2",
                          *SMALL_RUN_FLAGS)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "best" / "results.json").read_text())
    config = results["experiment_config"]
    assert config["hidden_sizes"] == [1024, 512, 256] and config["lr_schedule"] == "cosine"
    assert config["test_time_flip"] and config["augment_flip"] and config["augment_shift"] == 1
    assert config["test_time_shifts"] == 1
    rates = [record["learning_rate"] for record in results["history"]]
    # half-way through the warm-up, its end, then the cosine decay
    assert rates[0] == pytest.approx(5e-4, rel=1e-3) and rates[1] == pytest.approx(1e-3, rel=1e-3)
    assert rates[1] > rates[2] > rates[3]
    # best leaves the precision to `auto`: measured here, the faster of the two CPU candidates
    probe = results["precision_probe"]
    assert config["precision"] == "auto" and set(probe) == {"float32", "mixed_bfloat16"}
    assert results["precision"] == min(probe, key=probe.get)
    # and the kernels to `auto`: the fused ones, on a CPU with a C++ compiler
    assert config["kernels"] == "auto" and results["kernels"] == "fused"
    assert results["test_accuracy"] > 0.3 and results["test_accuracy_single_view"] > 0.3


def test_help_explains_every_flag():
    done = run_module("improved", "--help")
    assert done.returncode == 0
    for flag in ("--epochs", "--batch-size", "--learning-rate", "--seed", "--data-dir", "--logdir",
                 "--run-name", "--precision", "--resume", "--deterministic"):
        assert flag in done.stdout


@pytest.mark.parametrize("flags,complaint", [
    (["--learning-rate", "-0.1"], "--learning-rate: must be positive"),
    (["--batch-size", "0"], "--batch-size: must be positive"),
    (["--dropout", "1.0"], "--dropout: must be in [0, 1)"),
    (["--test-time-shifts", "28"], "--test-time-shifts: must be less than the image's side"),
    (["--logdir", "{file}/sub"], "--logdir: cannot create"),
])
def test_bad_arguments_exit_2_with_one_line_before_training(flags, complaint, tmp_path, small_data):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    flags = [f.format(file=blocker) for f in flags]
    logdir = [] if "--logdir" in flags else ["--logdir", tmp_path / "logs"]
    done = run_module("improved", "--data-dir", small_data, *logdir, *SMALL_RUN_FLAGS, *flags)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and complaint in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "logs").glob("*/config.json"))


def test_corrupted_data_file_is_one_line_and_exit_1(tmp_path):
    data_dir = write_dataset(tmp_path / "data", 300, 50)
    target = data_dir / "train-images-idx3-ubyte.gz"
    import gzip
    content = gzip.open(target).read()
    with gzip.open(target, "wb") as f:
        f.write(content[:-100])
    done = run_module("improved", "--data-dir", data_dir, "--logdir", tmp_path / "logs",
                          *SMALL_RUN_FLAGS)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "train-images-idx3-ubyte.gz: truncated" in done.stderr


def test_existing_run_is_never_overwritten(small_data, tmp_path):
    args = ["--data-dir", small_data, "--logdir", tmp_path, "--run-name", "same", "--epochs", "1",
            *SMALL_RUN_FLAGS]
    assert run_module("improved", *args).returncode == 0
    before = (tmp_path / "same" / "results.json").read_text()
    again = run_module("improved", *args)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert (tmp_path / "same" / "results.json").read_text() == before


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="the real Fashion-MNIST is not installed "
                    "(apt-get install dataset-fashion-mnist)")
@pytest.mark.slow
def test_one_epoch_of_the_improved_recipe_on_real_data(tmp_path):
    done = run_module("improved", "--epochs", "1", "--logdir", tmp_path, "--run-name", "real",
                          "--data-dir", REAL_DATA)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "real" / "results.json").read_text())
    assert results["history"][0]["val_accuracy"] >= 0.80


@pytest.mark.parametrize("tool", ["benchmark", "profile"])
def test_tools_report_missing_data_in_one_line(tool, tmp_path):
    done = run_module(tool, "--data-dir", tmp_path, "--logdir", tmp_path / "out")
    assert done.returncode == 1
    assert f"python -m experiments.{tool}: data error: {tmp_path}: missing" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory):
    """One benchmark of improved's widths with the breakdown, on 2,000 real training images (the
    figures are not the point here; what is timed and how it is reported is). Best's widths are
    another setting of the same loop: a table of their own, left out to keep the test short."""
    if not REAL_DATA.is_dir():
        pytest.skip("the real Fashion-MNIST is not installed (apt-get install "
                    "dataset-fashion-mnist)")
    logdir = tmp_path_factory.mktemp("benchmark")
    done = run_module("benchmark", "--repeats", "1", "--skip-keras", "--precisions",
                          "float32", "--batch-sizes", "512", "--widths", "improved",
                          "--breakdown", "--train-subset", "2000", "--data-dir", REAL_DATA,
                          "--logdir", logdir)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(logdir.glob("benchmark-*/benchmark.json")).read_text())
    return done, report


@pytest.mark.slow
def test_benchmark_prints_the_floor_and_every_ratio_to_it(benchmark_run):
    from experiments.benchmark import report_tables
    from mlp.machine import cpu_id

    done, report = benchmark_run
    assert report["examples"] == 2000
    rows = {(row["widths"], row["what"]): row for row in report["rows"]}
    floor = rows["improved", "floor: matrix products + one Adam pass"]["median_epoch_seconds"]
    fused_floor = rows["improved", "floor with the fused Adam kernel"]["median_epoch_seconds"]
    gemms = rows["improved", "matmul floor float32"]["median_epoch_seconds"]
    ours = rows["improved", "ours float32"]["median_epoch_seconds"]
    # How the contenders compare is a measurement, not a test (a round on a busy machine
    # can put the matrix products alone above a floor): each is timed and reported.
    assert min(floor, fused_floor, gemms, ours) > 0
    assert f"| floor: matrix products + one Adam pass | {floor:.3f} |" in done.stdout
    assert f"| floor with the fused Adam kernel | {fused_floor:.3f} |" in done.stdout
    assert f"| {fused_floor / floor:.2f} |" in done.stdout
    assert f"| ours float32 | {ours:.3f} |" in done.stdout
    assert f"| {ours / floor:.2f} |" in done.stdout
    assert "improved widths (512-256-50), batch 512" in done.stdout
    assert report["cpu_model"] and report["cpu_id"] == cpu_id()
    # A record of benchmark.json gives the printed tables back (experiments.results).
    assert report_tables(report) == report["table"] and report["table"] in done.stdout


@pytest.mark.slow
def test_benchmark_breakdown_times_the_loop_without_each_part_of_the_recipe(benchmark_run):
    done, report = benchmark_run
    rows = {row["what"]: row for row in report["rows"] if row["widths"] == "improved"}
    full = {"batch_norm": IMPROVED.batch_norm, "dropout": IMPROVED.dropout, "l2": IMPROVED.l2,
            "kernels": "fused"}
    assert full["batch_norm"] and full["dropout"] and full["l2"]  # each can be taken out
    expected = {"ours float32": full,
                "ours float32, tensorflow kernels": {**full, "kernels": "tensorflow"},
                "ours float32 without dropout": {**full, "dropout": 0.0},
                "ours float32 without batch norm": {**full, "batch_norm": False},
                "ours float32 without L2": {**full, "l2": 0.0},
                "ours float32 without all three": {**full, "batch_norm": False, "dropout": 0.0,
                                                   "l2": 0.0}}
    floor = rows["floor: matrix products + one Adam pass"]["median_epoch_seconds"]
    for name, recipe in expected.items():
        assert rows[name]["recipe"] == recipe
        seconds = rows[name]["median_epoch_seconds"]
        assert f"| {name} | {seconds:.3f} | " in done.stdout
        assert f"| {seconds / floor:.2f} |" in done.stdout


@pytest.mark.slow
def test_a_run_leaves_nothing_in_the_temporary_directory(small_data, tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    done = run_module("improved", "--data-dir", small_data, "--logdir", tmp_path / "logs",
                          "--epochs", 1, *SMALL_RUN_FLAGS,
                          env={**os.environ, "TMPDIR": str(temporary)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in temporary.iterdir()) == []


@pytest.mark.slow  # a whole run in its own process
def test_the_first_line_a_user_sees_is_the_runs(small_data, tmp_path):
    """Without TF_CPP_MIN_LOG_LEVEL, none of TensorFlow's C++ start-up lines (CUDA probes on a
    machine without a GPU) come before or after the run's own; a level the user sets is kept."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "experiments.improved", "--data-dir", small_data, "--logdir",
         tmp_path, "--epochs", "1", *SMALL_RUN_FLAGS], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert done.stdout.startswith("training improved -> "), done.stdout
    # The user's own level is theirs: at 0, TensorFlow's informational lines are shown.
    shown = subprocess.run(
        [sys.executable, "-c", "import mlp, tensorflow as tf; tf.constant(1) + 1"], cwd=REPO,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"}, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and "I0000" in shown.stderr, shown.stderr


def test_the_benchmark_drops_tensorflows_retracing_warning_and_nothing_else():
    import logging

    import tensorflow as tf

    from experiments.benchmark import without_retracing_warnings

    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger = tf.get_logger()
    logger.addHandler(handler)
    logger.addFilter(without_retracing_warnings)
    try:
        identity = tf.function(lambda x: x)
        for size in range(8):  # a new shape each call: a trace each time, as a new model's
            identity(tf.zeros([size]))
        logger.warning("another warning")
    finally:
        logger.removeFilter(without_retracing_warnings)
        logger.removeHandler(handler)
    assert [record.getMessage() for record in seen] == ["another warning"]
