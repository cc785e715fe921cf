"""Run directories: one process per run (a lock), unique default names, and a killed process's
leftovers removed."""

import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlp.config import ConfigError
from mlp.lock import DirectoryInUse, DirectoryLock
from mlp.run_directory import new_run_name, remove_leftovers
from tests.conftest import REPO, SMALL_RUN_FLAGS, run_module


@pytest.mark.slow  # three runs
def test_a_run_directory_in_use_is_refused(small_data, tmp_path):
    args = ["--data-dir", small_data, "--logdir", tmp_path, "--run-name", "busy", "--epochs", 1,
            *SMALL_RUN_FLAGS]
    assert run_module("improved", *args).returncode == 0
    (tmp_path / "busy" / "results.json").unlink()  # as if it were still training
    with DirectoryLock(tmp_path / "busy"):
        done = run_module("improved", *args, "--resume")
    assert done.returncode == 2
    assert "in use by another process" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "busy" / "results.json").exists()
    # Released: the same command now continues it.
    assert run_module("improved", *args, "--resume").returncode == 0


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from mlp.lock import DirectoryLock; "
         f"lock = DirectoryLock({str(tmp_path)!r});"
         "print('locked', flush=True); time.sleep(120)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(DirectoryInUse, match=f"pid {holder.pid}"):
        DirectoryLock(tmp_path)
    holder.kill()
    holder.wait()
    DirectoryLock(tmp_path).release()


def _name(logdir):
    return new_run_name(Path(logdir), "improved")


def test_default_run_names_are_unique_when_runs_start_together(tmp_path):
    with concurrent.futures.ProcessPoolExecutor(8) as pool:
        names = list(pool.map(_name, [tmp_path] * 16))
    assert len(set(names)) == 16
    assert all((tmp_path / name).is_dir() for name in names)


@pytest.mark.slow  # a whole run
def test_leftovers_of_a_killed_process_are_removed_when_the_run_is_continued(small_data, tmp_path):
    args = ["--data-dir", small_data, "--logdir", tmp_path, "--run-name", "left", "--epochs", 1,
            *SMALL_RUN_FLAGS]
    assert run_module("improved", *args).returncode == 0
    run_dir = tmp_path / "left"
    (run_dir / "results.json").unlink()
    half_written = run_dir / ".results.json.x1y2.tmp"
    half_written.write_text('{"test_acc')
    shards = run_dir / "checkpoints" / "ckpt-99_temp"
    shards.mkdir()
    (shards / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half")
    assert run_module("improved", *args, "--resume").returncode == 0
    assert not half_written.exists() and not shards.exists()
    assert (run_dir / "results.json").exists()


def test_a_lock_file_that_is_a_symbolic_link_is_refused_and_its_target_untouched(small_data,
                                                                                 tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    run_dir = tmp_path / "logs" / "linked"
    run_dir.mkdir(parents=True)
    (run_dir / ".lock").symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        DirectoryLock(run_dir)
    done = run_module("improved", "--data-dir", small_data, "--logdir", tmp_path / "logs",
                          "--run-name", "linked", "--epochs", 1, *SMALL_RUN_FLAGS)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is a symbolic link" in done.stderr.strip().splitlines()[-1]
    assert target.read_text() == "keep me"


def test_a_filesystem_that_cannot_lock_is_refused_in_one_line(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(ConfigError, match="does not support locks.*local disk"):
        DirectoryLock(tmp_path)


def test_leftovers_that_are_links_are_unlinked_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data").write_text("not the run's")
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "ckpt-9_temp").symlink_to(outside)
    (run_dir / ".results.json.x.tmp").symlink_to(outside / "data")
    remove_leftovers(run_dir)
    assert not os.path.lexists(run_dir / "checkpoints" / "ckpt-9_temp")
    assert not os.path.lexists(run_dir / ".results.json.x.tmp")
    assert (outside / "data").read_text() == "not the run's"


def test_a_bare_resume_takes_the_run_that_started_last_not_the_last_touched(tmp_path):
    from mlp.config import Config
    from mlp.run_directory import prepare

    names = ["improved-20261201-090000", "improved-20261201-100000",
             "improved-20261201-100000-2", "improved-20261130-235959"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(
            json.dumps(Config(logdir=str(tmp_path)).to_dict()))
    os.utime(tmp_path / names[0] / "config.json", (2e9, 2e9))  # touched last, started first
    _, run_dir, finished = prepare("improved", Config(logdir=str(tmp_path)), True, set())
    assert run_dir.name == "improved-20261201-100000-2" and not finished


def test_a_study_continues_a_run_saved_before_the_added_settings(tmp_path):
    # A study compares every setting that changes results with the saved config.json; a run
    # saved before a setting existed had that setting's older value, not a different one.
    import dataclasses

    from mlp.config import Config
    from mlp.run_directory import prepare
    from tests.test_config import FIRST_FORMAT

    older = {f.name: f.metadata["older_runs"] for f in dataclasses.fields(Config)
             if f.name not in FIRST_FORMAT}
    config = dataclasses.replace(Config(logdir=str(tmp_path), run_name="old"), **older)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(
        {k: v for k, v in config.to_dict().items() if k in FIRST_FORMAT}))
    resumed, run_dir, finished = prepare("improved", config, True, set(config.result_fields()))
    assert (resumed, run_dir, finished) == (config, tmp_path / "old", False)
    # A setting that did change is still refused.
    with pytest.raises(ConfigError, match=r"--sam-rho 0.05 \(saved: 0.0\)"):
        prepare("improved", dataclasses.replace(config, sam_rho=0.05), True, {"sam_rho"})
