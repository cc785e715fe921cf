"""Damaged or foreign state: hand-edited config.json / results.json, names that are not plain,
damaged checkpoints. Each gives one line and an exit code, never a traceback, and loses nothing."""

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp.config import Config, ConfigError
from tests.conftest import SMALL_RUN_FLAGS, run_module


def _saved_run(tmp_path, small_data, **changes):
    """A run directory whose config.json is a valid config, edited by `changes` (None deletes)."""
    run_dir = tmp_path / "edited"
    run_dir.mkdir()
    config = Config(data_dir=str(small_data), logdir=str(tmp_path), run_name="edited",
                    verify_checksums=False, validation_size=100, batch_size=50, epochs=1,
                    histograms=False).to_dict()
    for key, value in changes.items():
        if value is None:
            del config[key]
        else:
            config[key] = value
    (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


def _resume(tmp_path):
    return run_module("improved", "--logdir", tmp_path, "--run-name", "edited", "--resume")


def _one_line(done, code, *words):
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert all(word in lines[-1] for word in words), lines[-1]


@pytest.mark.parametrize("changes,words", [
    ({"learning_rat": 0.1}, ["unknown settings learning_rat"]),
    ({"l2": None}, ["missing settings l2"]),
    ({"epochs": "ten"}, ["--epochs", "must be int"]),
    ({"batch_norm": "yes"}, ["--batch-norm", "must be bool"]),
    ({"precision": "fp8"}, ["--precision", "must be one of"]),
    ({"lr_schedule": "linear"}, ["--lr-schedule", "must be one of"]),
    ({"initializer": "zeros"}, ["--initializer", "must be one of"]),
    ({"hidden_sizes": [64, "wide"]}, ["--hidden-sizes"]),
    ({"seed": -1}, ["--seed", "must be in"]),
])
def test_an_edited_config_is_one_line_and_exit_2(tmp_path, small_data, changes, words):
    run_dir = _saved_run(tmp_path, small_data, **changes)
    _one_line(_resume(tmp_path), 2, *words)
    assert not (run_dir / "checkpoints").exists()  # nothing started


def test_a_missing_setting_is_not_filled_from_a_default(tmp_path, small_data):
    # The improved recipe's default l2 is 1e-4: a missing l2 must not quietly become that.
    _saved_run(tmp_path, small_data, l2=None)
    _one_line(_resume(tmp_path), 2, "missing settings l2")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "", "\udcff"])
def test_an_unreadable_config_is_one_line_and_exit_2(tmp_path, small_data, content):
    run_dir = _saved_run(tmp_path, small_data)
    (run_dir / "config.json").write_text(content, errors="surrogateescape")
    _one_line(_resume(tmp_path), 2, "config.json")


@pytest.mark.parametrize("content", ["{not json", "{}", '{"test_accuracy": "high"}'])
def test_a_damaged_results_file_is_one_line_and_exit_2(tmp_path, small_data, content):
    run_dir = _saved_run(tmp_path, small_data)
    (run_dir / "results.json").write_text(content)
    _one_line(_resume(tmp_path), 2, "results.json")
    assert (run_dir / "results.json").read_text() == content  # left as it was


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "."])
def test_a_run_name_that_is_not_a_plain_name_is_refused_before_anything_is_read(tmp_path, name):
    outside = tmp_path / "x"
    outside.mkdir()
    (outside / "config.json").write_text("{not json")  # would be read if the name were used
    done = run_module("improved", "--logdir", tmp_path / "logs", "--run-name", name,
                          "--resume")
    _one_line(done, 2, "--run-name", "plain directory name")


@pytest.mark.parametrize("changes,flag", [
    ({"precision": "fp8"}, "--precision"), ({"batch_norm": 1}, "--batch-norm"),
    ({"initializer": "ones"}, "--initializer"), ({"seed": 2**31}, "--seed"),
    ({"epochs": 2.5}, "--epochs"), ({"hidden_sizes": (64, 0)}, "--hidden-sizes")])
def test_the_python_api_validates_like_the_command_line(changes, flag):
    with pytest.raises(ConfigError, match=flag):
        dataclasses.replace(Config(), **changes).validate()


# -- damaged checkpoints --------------------------------------------------------------------------

RUN_FLAGS = ["--epochs", 3, "--deterministic", "--seed", 4, *SMALL_RUN_FLAGS]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, small_data):
    """A finished 3-epoch run: its results, and a copy of its checkpoints directory."""
    logdir = tmp_path_factory.mktemp("ck")
    done = run_module("improved", "--data-dir", small_data, "--logdir", logdir,
                          "--run-name", "whole", *RUN_FLAGS)
    assert done.returncode == 0, done.stderr
    return logdir / "whole"


def _interrupted_copy(finished_run, tmp_path):
    """The finished run as if killed after its last checkpoint (no results.json yet)."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "results.json").unlink()
    return run_dir


def _newest(run_dir):
    return max(int(p.name[5:-6]) for p in (run_dir / "checkpoints").glob("ckpt-*.index"))


def _damage(path, how):
    content = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(content[:len(content) // 2]))
    else:
        content[len(content) // 2] ^= 0xFF
        path.write_bytes(bytes(content))


def _resume_run(run_dir):
    return run_module("improved", "--logdir", run_dir.parent, "--run-name", run_dir.name,
                          "--resume")


@pytest.mark.slow  # a finished run, then one resumed run per damage
@pytest.mark.parametrize("part,how", [("data-00000-of-00001", "truncate"),
                                      ("data-00000-of-00001", "flip"), ("index", "truncate")])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path,
                                                                    part, how):
    run_dir = _interrupted_copy(finished_run, tmp_path)
    newest = _newest(run_dir)
    _damage(run_dir / "checkpoints" / f"ckpt-{newest}.{part}", how)
    done = _resume_run(run_dir)
    assert done.returncode == 0, done.stderr
    damaged = [line for line in done.stderr.splitlines() if "is damaged" in line]
    assert len(damaged) == 1 and f"ckpt-{newest}" in damaged[0]
    assert "continuing from the previous one" in damaged[0]
    assert "epoch   3/3" in done.stdout and "epoch   2/3" not in done.stdout  # redid the last
    expected = json.loads((finished_run / "results.json").read_text())["weights_digest"]
    assert json.loads((run_dir / "results.json").read_text())["weights_digest"] == expected


@pytest.mark.slow  # a finished run, then a resumed one
def test_a_damaged_index_file_never_restarts_from_step_0(finished_run, tmp_path):
    run_dir = _interrupted_copy(finished_run, tmp_path)
    (run_dir / "checkpoints" / "checkpoint").write_text("garbage {{{")
    done = _resume_run(run_dir)
    assert done.returncode == 0, done.stderr
    # all 3 epochs were done: nothing to train again
    assert not [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert json.loads((run_dir / "results.json").read_text())["epochs_run"] == 3


def _two_saves(directory, warned):
    """Checkpoints of one variable, saved as ckpt-3 (value 1) and ckpt-7 (value 2), and the
    index file's text as it was between the two saves."""
    import tensorflow as tf

    from mlp.checkpointing import Checkpoints, RunState

    value = tf.Variable(1.0)
    checkpoints = Checkpoints(directory, warn=warned.append, value=value)
    checkpoints.save(RunState(epochs_done=1), 3)
    after_first = (directory / "checkpoint").read_text()
    value.assign(2.0)
    checkpoints.save(RunState(epochs_done=2), 7)
    value.assign(0.0)
    return checkpoints, value, after_first


@settings(max_examples=15, deadline=None)
@given(kept=st.floats(0, 0.999))
def test_a_first_save_killed_at_any_byte_starts_the_run_from_the_beginning(tmp_path_factory,
                                                                           kept):
    # TensorFlow writes ckpt-N.index in place and the manager writes its index file after it:
    # a process killed in its first save leaves a short ckpt-N.index and no index file.
    directory = tmp_path_factory.mktemp("first")
    warned = []
    checkpoints, value, _ = _two_saves(directory, warned)
    for name in ["checkpoint", *(f.name for f in directory.glob("ckpt-3.*"))]:
        (directory / name).unlink()
    index = directory / "ckpt-7.index"
    index.write_bytes(index.read_bytes()[:int(kept * index.stat().st_size)])
    assert checkpoints.restore() is None
    [said] = warned
    assert "ckpt-7 was never finished" in said and "starting from the beginning" in said
    assert index.exists()  # left as it was


def test_a_later_save_killed_in_the_middle_continues_from_the_one_before(tmp_path):
    warned = []
    checkpoints, value, after_first = _two_saves(tmp_path, warned)
    (tmp_path / "checkpoint").write_text(after_first)
    index = tmp_path / "ckpt-7.index"
    index.write_bytes(index.read_bytes()[:20])
    assert checkpoints.restore().epochs_done == 1 and value.numpy() == 1.0
    [said] = warned
    assert "ckpt-7 was never finished" in said and "continuing from the previous one" in said


@pytest.mark.parametrize("index_file", ["as written", "garbage {{{"])
def test_a_short_checkpoint_the_index_file_does_not_prove_unfinished_is_not_skipped(tmp_path,
                                                                                    index_file):
    from mlp.exits import CheckpointError

    warned = []
    checkpoints, _, _ = _two_saves(tmp_path, warned)
    for f in tmp_path.glob("ckpt-3.*"):
        f.unlink()
    if index_file != "as written":
        (tmp_path / "checkpoint").write_text(index_file)
    index = tmp_path / "ckpt-7.index"
    index.write_bytes(index.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*ckpt-7"):
        checkpoints.restore()
    assert warned == []


@pytest.mark.slow  # a finished run, then a resume that cannot start
def test_no_usable_checkpoint_is_one_line_naming_the_file_and_exit_1(finished_run, tmp_path):
    run_dir = _interrupted_copy(finished_run, tmp_path)
    for data in (run_dir / "checkpoints").glob("ckpt-*.data-*"):
        _damage(data, "flip")
    done = _resume_run(run_dir)
    _one_line(done, 1, "cannot resume", f"ckpt-{_newest(run_dir)}")
    assert "cannot write" not in done.stderr
    assert not (run_dir / "results.json").exists()


# -- stopping is bounded --------------------------------------------------------------------------

def _start_improved(args):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "experiments.improved", *map(str, args)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
def test_signals_at_any_moment_end_the_run_promptly_and_cleanly(small_data, tmp_path):
    import random
    import signal
    import time

    rng = random.Random(1234)  # seeded: the same moments every time
    flags = ["--data-dir", small_data, "--logdir", tmp_path, "--epochs", 12,
             "--augment-shift", 1, "--augment-flip", "--test-time-flip", *SMALL_RUN_FLAGS]
    # One moment in each quarter of a run's life (start-up, training, the final report), in
    # a random order of quarters.
    quarters = rng.sample(range(4), 4)
    trials = [(signal.SIGTERM if i % 2 else signal.SIGINT,
               0.1 + (quarter + rng.random()) * 6.4 / 4) for i, quarter in enumerate(quarters)]
    outcomes = []
    for pair in range(0, len(trials), 2):  # two at a time: one per core
        started = [(i, signum, delay, time.time(),
                    _start_improved([*flags, "--run-name", f"run{i}"]))
                   for i, (signum, delay) in enumerate(trials[pair:pair + 2], pair)]
        sent = {}
        for i, signum, delay, at, process in sorted(started, key=lambda s: s[3] + s[2]):
            time.sleep(max(0.0, at + delay - time.time()))
            process.send_signal(signum)
            sent[i] = time.time()
        for i, signum, delay, at, process in started:
            out, err = process.communicate(timeout=60)
            outcomes.append((i, signum, delay, time.time() - sent[i], process.returncode, out, err))
    for i, signum, delay, seconds, code, out, err in outcomes:
        where = f"run{i}, {signal.Signals(signum).name} after {delay:.1f}s"
        assert "Traceback" not in err, where + err[-2000:]
        assert seconds < 30, where  # bounded: never the minutes of a stuck teardown
        finished = (tmp_path / f"run{i}" / "results.json").exists()
        if code == 0:
            assert finished, where  # the run had finished (or was in its final report)
        else:
            assert code == 128 + signum, where + err[-2000:]
            assert not finished and "continue with" in err.strip().splitlines()[-1], where
    # Not all trivially at one moment: some stopped, and a stopped run continues with --resume.
    stopped = [o for o in outcomes if o[4] != 0]
    assert stopped
    i = stopped[-1][0]
    resumed = run_module("improved", *flags, "--run-name", f"run{i}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]


# -- any command line, any bytes ------------------------------------------------------------------

FLAG_VALUES = {
    "--epochs": ["1", "0", "-3", "x"], "--batch-size": ["50", "0", "big"],
    "--dropout": ["0.1", "1.5", "nan"], "--precision": ["float32", "fp8", "mixed_bfloat16"],
    "--hidden-sizes": [["16", "8"], ["0"], ["-1"]], "--learning-rate": ["1e-3", "inf", "abc"],
    "--seed": ["0", "-1", "99999999999"], "--strategy": ["one_device", "bogus", "mirrored"],
    "--cpu-devices": ["2", "-1"], "--validation-size": ["100", "100000", "0"],
    "--train-subset": ["0", "5", "-2"], "--run-name": ["ok", "../bad", ""],
    "--l2": ["0", "-1"], "--lr-schedule": ["cosine", "linear"], "--warmup-epochs": ["0.5", "9"],
}


@settings(max_examples=20, deadline=None, derandomize=True)
@given(flags=st.dictionaries(st.sampled_from(sorted(FLAG_VALUES)), st.integers(0, 2),
                             max_size=4),
       resume=st.booleans(),
       damage=st.sampled_from(["none", "data", "config", "results"]),
       garbage=st.binary(min_size=0, max_size=300))
@pytest.mark.slow
def test_any_flags_and_any_bytes_give_exit_0_1_or_2_and_never_a_traceback(
        flags, resume, damage, garbage, small_data, tmp_path_factory):
    import shutil

    tmp = tmp_path_factory.mktemp("fuzz")
    data_dir = tmp / "data"
    shutil.copytree(small_data, data_dir)
    if damage == "data":
        (data_dir / "train-labels-idx1-ubyte.gz").write_bytes(garbage)
    args = ["--data-dir", data_dir, "--logdir", tmp / "logs", "--epochs", "1", *SMALL_RUN_FLAGS]
    for flag, choice in flags.items():
        value = FLAG_VALUES[flag][choice % len(FLAG_VALUES[flag])]
        args += [flag, *([value] if isinstance(value, str) else value)]
    if "--run-name" not in flags:
        args += ["--run-name", "fuzz"]
    if damage in ("config", "results"):
        run_dir = tmp / "logs" / "fuzz"
        run_dir.mkdir(parents=True)
        saved = Config(data_dir=str(data_dir), verify_checksums=False, validation_size=100,
                       batch_size=50, epochs=1, histograms=False).to_dict()
        (run_dir / "config.json").write_text(json.dumps(saved))
        (run_dir / f"{damage}.json").write_bytes(garbage)
    done = run_module("improved", *args, *(["--resume"] if resume else []), timeout=120)
    assert done.returncode in (0, 1, 2), (args, done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, (args, done.stderr[-3000:])
    if done.returncode:
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("python -m experiments.improved: "), (args, last)


# -- inputs that once ended in a traceback ---------------------------------------------------------

@pytest.mark.parametrize("flags,words", [
    (["--epochs", "1" + "0" * 400], "--epochs: must be at most 2147483647 in size"),
    (["--run-name", "caf\udce9"], "--run-name: must be text that UTF-8 can write"),
    (["--run-name", "x" * 300], "--run-name: is 300 bytes long"),
    (["--heartbeat-timeout", "1e300"], "--heartbeat-timeout: must be at most 86400 s"),
])
def test_inputs_that_once_raised_are_one_line_and_exit_2(flags, words, small_data, tmp_path):
    done = run_module("improved", "--data-dir", small_data, "--logdir", tmp_path,
                          *SMALL_RUN_FLAGS, *flags)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m experiments.improved: error: ") and words in last, last


def test_an_idx_header_whose_dimensions_overflow_is_a_data_error():
    from mlp import data as data_lib

    # 2^22 x 2^22 x 2^20 = 2^64 bytes, which wraps to 0 in int64: a header with no data would
    # look complete, and reshaping nothing to that shape would raise.
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2**22, 2**22, 2**20))
    with pytest.raises(data_lib.DataError, match="truncated"):
        data_lib.parse_idx(header, "huge")


def test_a_full_disk_when_the_run_directory_is_made_is_one_line_and_exit_1(small_data, tmp_path,
                                                                          monkeypatch):
    import errno

    from mlp import run_directory

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_directory, "atomic_write_json", full)
    done = run_module("improved", "--data-dir", small_data, "--logdir", tmp_path,
                          "--run-name", "full", *SMALL_RUN_FLAGS)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m experiments.improved: cannot write: ") and "No space" in last
    assert not (tmp_path / "full" / "config.json").exists()


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=12))
def test_a_plain_name_stays_directly_inside_its_directory(name):
    import os

    from mlp.config import is_plain_name

    inside = os.path.normpath(os.path.join("/base", name))
    stays = bool(name) and os.path.dirname(inside) == "/base" and inside != "/base" \
        and "\0" not in name and os.path.basename(inside) == name
    assert is_plain_name(name) == stays, name
