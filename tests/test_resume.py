"""Never lose a run: kill, interrupt, resume, determinism, divergence, on small generated data."""

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp import data as data_lib
from mlp.config import Config
from mlp.controller import NonFiniteLoss
from mlp.run import assemble, finish
from tests.conftest import REPO, SMALL_RUN_FLAGS, run_module, write_dataset

EPOCHS = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("resume-data"), n_train=3000, n_test=200)


def _args(data_dir, logdir, name, *extra):
    return ["--data-dir", data_dir, "--logdir", logdir, "--run-name", name, "--epochs", EPOCHS,
            "--deterministic", "--seed", "3", "--steps-per-loop", "7", *SMALL_RUN_FLAGS, *extra]


def _results(logdir, name):
    return json.loads((logdir / name / "results.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted_run(data_dir, tmp_path_factory):
    """The directory of a whole run of `_args`, for the tests to compare with or copy."""
    logdir = tmp_path_factory.mktemp("logs")
    done = run_module("improved", *_args(data_dir, logdir, "whole"))
    assert done.returncode == 0, done.stderr
    return logdir / "whole"


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run):
    return _results(uninterrupted_run.parent, "whole")


def _copy_run(run_dir, logdir, name):
    """A copy of a finished run as `logdir/name`, as if it had been made there under that name."""
    shutil.copytree(run_dir, logdir / name)
    return logdir / name


def _start(args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "experiments.improved", *map(str, args)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _checkpoints(run_dir):
    state = run_dir / "checkpoints" / "checkpoint"
    return tf.train.get_checkpoint_state(str(run_dir / "checkpoints")) if state.exists() else None


def _wait_for_checkpoints(process, run_dir, count, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        state = _checkpoints(run_dir)
        if state and len(state.all_model_checkpoint_paths) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {count} checkpoints in time; exit code {process.poll()}")


@pytest.mark.slow
def test_two_deterministic_runs_give_the_same_weights(data_dir, tmp_path, uninterrupted):
    done = run_module("improved", *_args(data_dir, tmp_path, "again"))
    assert done.returncode == 0, done.stderr
    assert _results(tmp_path, "again")["weights_digest"] == uninterrupted["weights_digest"]


def _kill_after_first_checkpoint(args, run_dir, delay):
    """Start a run, SIGKILL it `delay` seconds after its first checkpoint, and check it died of
    the kill (not by finishing first)."""
    process = _start(args)
    _wait_for_checkpoints(process, run_dir, 1)
    time.sleep(delay)  # anywhere: mid-epoch, mid-save, mid-summary
    process.kill()
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill"
    assert not (run_dir / "results.json").exists()


# Seeded, so a failure repeats with the same moments.
KILL_DELAYS = [0.0] + [round(random.Random(11).uniform(0.05, 0.6), 3)]


@pytest.mark.slow
@pytest.mark.parametrize("delay", KILL_DELAYS)
def test_sigkill_then_resume_equals_the_uninterrupted_run(data_dir, tmp_path, uninterrupted, delay):
    _kill_after_first_checkpoint(_args(data_dir, tmp_path, "killed"), tmp_path / "killed", delay)
    resumed = run_module("improved", *_args(data_dir, tmp_path, "killed"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    results = _results(tmp_path, "killed")
    assert results["weights_digest"] == uninterrupted["weights_digest"], f"delay {delay}"
    assert results["epochs_run"] == uninterrupted["epochs_run"]
    # TensorBoard: every epoch exactly once.
    steps = []
    for path in sorted((tmp_path / "killed" / "validation").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            steps += [event.step for value in event.summary.value if value.tag == "loss"]
    assert sorted(steps) == list(range(1, uninterrupted["epochs_run"] + 1))


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_resume_continues_exactly(data_dir, tmp_path, uninterrupted,
                                                                signum, code):
    process = _start(_args(data_dir, tmp_path, "stopped"))
    _wait_for_checkpoints(process, tmp_path / "stopped", 1)
    time.sleep(0.1)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    saved = _checkpoints(tmp_path / "stopped")
    assert saved is not None
    resumed = run_module("improved", *_args(data_dir, tmp_path, "stopped"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _results(tmp_path, "stopped")["weights_digest"] == uninterrupted["weights_digest"]


@pytest.mark.slow  # the shared whole run
def test_resuming_a_finished_run_says_so(data_dir, tmp_path, uninterrupted_run):
    args = _args(data_dir, tmp_path, "finished")
    _copy_run(uninterrupted_run, tmp_path, "finished")
    before = (tmp_path / "finished" / "results.json").read_text()
    again = run_module("improved", *args, "--resume")
    assert again.returncode == 0 and "already finished" in again.stdout
    assert (tmp_path / "finished" / "results.json").read_text() == before


def _unfinished_run(run_dir):
    """`run_dir` as a run killed after its last checkpoint leaves it: no results.json."""
    (run_dir / "results.json").unlink()


@pytest.mark.slow  # the shared whole run
def test_resume_without_flags_takes_the_saved_config(tmp_path, uninterrupted_run):
    _unfinished_run(_copy_run(uninterrupted_run, tmp_path, "bare"))
    resumed = run_module("improved", "--logdir", tmp_path, "--run-name", "bare", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _results(tmp_path, "bare")["experiment_config"]["epochs"] == EPOCHS


@pytest.mark.slow  # a whole run
def test_a_run_saved_before_the_added_settings_resumes(data_dir, tmp_path):
    from tests.test_config import FIRST_FORMAT

    done = run_module("improved", *_args(data_dir, tmp_path, "old", "--kernels", "tensorflow"))
    assert done.returncode == 0, done.stderr
    _unfinished_run(tmp_path / "old")
    saved = tmp_path / "old" / "config.json"
    saved.write_text(json.dumps({k: v for k, v in json.loads(saved.read_text()).items()
                                 if k in FIRST_FORMAT}))
    resumed = run_module("improved", "--logdir", tmp_path, "--run-name", "old", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _results(tmp_path, "old")["experiment_config"]["kernels"] == "tensorflow"


@pytest.mark.slow  # the shared whole run
def test_resume_refuses_a_config_that_changes_results(data_dir, tmp_path, uninterrupted_run):
    args = _args(data_dir, tmp_path, "mismatch")
    _unfinished_run(_copy_run(uninterrupted_run, tmp_path, "mismatch"))
    refused = run_module("improved", *args, "--resume", "--learning-rate", "0.5")
    assert refused.returncode == 2
    assert "--learning-rate 0.5 (saved: 0.001)" in refused.stderr
    assert not (tmp_path / "mismatch" / "results.json").exists()


def test_resume_of_a_missing_run_is_an_error(tmp_path):
    done = run_module("improved", "--logdir", tmp_path, "--run-name", "nope", "--resume")
    assert done.returncode == 2 and "no run to resume" in done.stderr


def test_divergence_stops_cleanly_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    # No batch norm, no L2, an absurd learning rate: the loss overflows within a few steps.
    done = run_module("improved", "--data-dir", data_dir, "--logdir", tmp_path,
                          "--run-name", "diverge", "--no-batch-norm", "--dropout", "0",
                          "--l2", "0", "--learning-rate", "1e12", "--epochs", "5",
                          *SMALL_RUN_FLAGS)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "not finite at epoch" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "diverge" / "results.json").exists()
    # The advice is one the program takes: a new run (a resume refuses another learning rate).
    last = done.stderr.strip().splitlines()[-1]
    assert "start a new run with a lower --learning-rate" in last
    refused = run_module("improved", "--data-dir", data_dir, "--logdir", tmp_path,
                             "--run-name", "diverge", "--learning-rate", "1e-3", "--resume")
    assert refused.returncode == 2 and "--learning-rate" in refused.stderr


def _trainer_run(splits, run_dir):
    config = Config(hidden_sizes=(16, 8), batch_size=32, validation_size=100, epochs=2,
                    verify_checksums=False, histograms=False, seed=5)
    return assemble(config, run_dir, resume=True, splits=splits, out=io.StringIO())


@pytest.mark.slow
@settings(max_examples=8, deadline=None)
@given(first=st.integers(1, 25), then=st.integers(1, 25))
def test_save_and_restore_at_any_step_continues_identically(first, then, tmp_path_factory):
    splits = data_lib.load(write_dataset(tmp_path_factory.mktemp("d"), 400, 50),
                           verify_checksums=False, validation_size=100)
    run_dir = tmp_path_factory.mktemp("run")

    def stream(run):
        return iter(run.parts.training_batches(int(run.parts.trainer.step.numpy())))

    original = _trainer_run(splits, run_dir)
    original_trainer = original.parts.trainer
    original_trainer.train_loop(stream(original), tf.constant(first))
    original.controller.save_checkpoint()
    original_trainer.train_loop(stream(original), tf.constant(then))

    restored = _trainer_run(splits, run_dir)
    trainer = restored.parts.trainer
    assert int(trainer.step.numpy()) == first
    trainer.train_loop(stream(restored), tf.constant(then))
    for a, b in zip(original.parts.model.variables, restored.parts.model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(original_trainer.optimizer.variables, trainer.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(original_trainer.epoch_sums.numpy(), trainer.epoch_sums.numpy())


def test_divergence_after_good_epochs_keeps_their_checkpoint(tmp_path):
    splits = data_lib.load(write_dataset(tmp_path / "d", 400, 50), verify_checksums=False,
                           validation_size=100)

    class Explode:
        """A decision action that sets an absurd learning rate after the first epoch."""
        name = "explode"

        def end_of_epoch(self, epoch, record):
            trainer.learning_rate = 1e30

        def state(self):
            return None

        def load_state(self, state):
            pass

    config = Config(hidden_sizes=(16, 8), batch_norm=False, dropout=0.0, l2=0.0, batch_size=32,
                    validation_size=100, epochs=3, verify_checksums=False, histograms=False)
    run = assemble(config, tmp_path / "run", splits=splits, out=io.StringIO())
    trainer = run.parts.trainer
    run.controller.decisions.append(Explode())
    with pytest.raises(NonFiniteLoss, match="not finite at epoch 2, step"):
        finish(run)
    steps_per_epoch = run.parts.steps_per_epoch
    latest = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
    assert latest.endswith(f"ckpt-{steps_per_epoch}")
    restored = assemble(config, tmp_path / "run", resume=True, splits=splits, out=io.StringIO())
    assert int(restored.parts.trainer.step.numpy()) == steps_per_epoch
    assert all(np.isfinite(v.numpy()).all() for v in restored.parts.model.variables)
    assert restored.controller.state.epochs_done == 1


def test_second_interrupt_exits_at_once():
    script = ("import os, signal, time\n"
              "from mlp.signals import SignalGuard\n"
              "with SignalGuard() as guard:\n"
              "    os.kill(os.getpid(), signal.SIGINT)\n"
              "    time.sleep(0.2)\n"
              "    assert guard.signum == signal.SIGINT, 'first signal only noted'\n"
              "    os.kill(os.getpid(), signal.SIGINT)\n"
              "    time.sleep(5)\n"
              "print('not reached')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 130, done.stderr
    assert "not reached" not in done.stdout and "second SIGINT" in done.stderr


def test_unwritable_checkpoint_directory_is_one_clear_line(data_dir, tmp_path):
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "checkpoints").write_text("a file where the directory should be")
    done = run_module("improved", "--data-dir", data_dir, "--logdir", tmp_path,
                          "--run-name", "blocked", "--epochs", "1", *SMALL_RUN_FLAGS)
    assert done.returncode == 1
    assert "cannot write" in done.stderr and "checkpoints" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("flags", [
    # best's machinery: whitening, bfloat16, warm-up then cosine, shifts and flips, test-time
    # views, smoothing; and the techniques tried beyond it: mixup, cutmix, SAM, Lookahead
    ["--whitening", "zca", "--whitening-epsilon", "0.3",
     "--precision", "mixed_bfloat16", "--lr-schedule", "cosine", "--warmup-epochs", "1",
     "--augment-shift", "1", "--augment-flip", "--test-time-flip", "--test-time-shifts", "1",
     "--label-smoothing", "0.1", "--mixup-alpha", "0.2", "--cutmix-alpha", "1.0",
     "--sam-rho", "0.05", "--lookahead-steps", "3", "--no-early-stopping", "--epochs", "2"],
    # an early-stopped run: no epoch after the first counts as an improvement
    ["--early-stopping-patience", "2", "--early-stopping-min-delta", "10", "--epochs", "8"]],
    ids=["best-machinery", "early-stopped"])
@pytest.mark.slow
def test_sigkill_and_resume_is_exact_for_other_machinery(data_dir, tmp_path, flags):
    whole = run_module("improved", *_args(data_dir, tmp_path, "whole"), *flags)
    assert whole.returncode == 0, whole.stderr
    _kill_after_first_checkpoint([*_args(data_dir, tmp_path, "killed"), *flags],
                                 tmp_path / "killed", 0.1)
    resumed = run_module("improved", *_args(data_dir, tmp_path, "killed"), *flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected, results = _results(tmp_path, "whole"), _results(tmp_path, "killed")
    assert results["weights_digest"] == expected["weights_digest"]
    for key in ("best_epoch", "epochs_run", "stopped_early", "test_accuracy",
                "test_accuracy_single_view"):
        assert results[key] == expected[key], key
    if "--early-stopping-min-delta" in flags:
        assert results["stopped_early"] and results["best_epoch"] == 1


def test_an_error_that_is_not_about_files_is_not_reported_as_one(data_dir, tmp_path,
                                                                 monkeypatch):
    from mlp.training import Trainer

    def out_of_memory(self, iterator, steps):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    monkeypatch.setattr(Trainer, "train_loop", out_of_memory)
    done = run_module("improved", *_args(data_dir, tmp_path, "oom"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "failed: ResourceExhaustedError: OOM when allocating tensor" in last
    assert "cannot write" not in last and "--resume" in last


def test_an_error_inside_a_tf_function_is_reported_by_its_cause(data_dir, tmp_path, monkeypatch):
    from mlp.training import Trainer

    @tf.function(input_signature=[tf.TensorSpec([None])])
    def out_of_range(values):
        return tf.gather(values, [5])

    def failing_step(self, iterator, steps):  # a real error of a running graph
        return out_of_range(tf.zeros([2]))

    monkeypatch.setattr(Trainer, "train_loop", failing_step)
    done = run_module("improved", *_args(data_dir, tmp_path, "graph"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "failed: InvalidArgumentError: indices[0] = 5 is not in [0, 2)" in last, last


def test_only_a_graph_errors_opening_lines_are_passed_over():
    from mlp.exits import from_tensorflow_error

    error = tf.errors.UnimplementedError(
        None, None, "File system scheme 'gs' not implemented\n(file: gs://bucket/run)")
    failed = from_tensorflow_error(error, False, Path("run"), "--resume")
    assert "UnimplementedError: File system scheme 'gs' not implemented;" in str(failed)
