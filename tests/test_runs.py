"""Run directories: one process per run (a lock), unique default names, and recipes that state
every field, so a library default never changes an experiment."""

import concurrent.futures
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import baseline, best, improved, speedrun
from mlp.cli import _new_run_name
from mlp.config import RECIPE_FIELDS, Config, recipe
from mlp.io import RunInUse, RunLock
from tests.conftest import REPO, SMALL_RUN_FLAGS, run_experiment


def test_a_run_directory_in_use_is_refused(small_data, tmp_path):
    args = ["--data-dir", small_data, "--logdir", tmp_path, "--run-name", "busy", "--epochs", 1,
            *SMALL_RUN_FLAGS]
    assert run_experiment("improved", *args).returncode == 0
    (tmp_path / "busy" / "results.json").unlink()  # as if it were still training
    with RunLock(tmp_path / "busy"):
        done = run_experiment("improved", *args, "--resume")
    assert done.returncode == 2
    assert "in use by another process" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "busy" / "results.json").exists()
    # Released: the same command now continues it.
    assert run_experiment("improved", *args, "--resume").returncode == 0


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time; from mlp.io import RunLock; lock = RunLock({str(tmp_path)!r});"
         "print('locked', flush=True); time.sleep(120)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunInUse, match=f"pid {holder.pid}"):
        RunLock(tmp_path)
    holder.kill()
    holder.wait()
    RunLock(tmp_path).release()


def _name(logdir):
    return _new_run_name(Path(logdir), "improved")


def test_default_run_names_are_unique_when_runs_start_together(tmp_path):
    with concurrent.futures.ProcessPoolExecutor(8) as pool:
        names = list(pool.map(_name, [tmp_path] * 16))
    assert len(set(names)) == 16
    assert all((tmp_path / name).is_dir() for name in names)


def test_a_recipe_must_state_every_recipe_field():
    values = {name: getattr(improved.CONFIG, name) for name in RECIPE_FIELDS}
    assert recipe(**values) == improved.CONFIG
    del values["dropout"]
    with pytest.raises(TypeError, match="must state dropout"):
        recipe(**values)


def test_every_field_that_changes_results_is_a_recipe_field_or_an_execution_choice():
    execution = {"seed", "deterministic", "kernels", "strategy", "cpu_devices",
                 "sync_batch_norm", "verify_checksums", "validation_size", "train_subset"}
    assert set(Config().result_fields()) - set(RECIPE_FIELDS) == execution


@pytest.mark.parametrize("module", [improved, baseline, best, speedrun])
def test_recipes_do_not_take_the_library_defaults(module):
    # Were every default different, the recipes would be the same: they state each field.
    source = Path(module.__file__).read_text()
    for name in RECIPE_FIELDS:
        assert f"    {name}=" in source, f"{module.__name__} does not state {name}"


def test_leftovers_of_a_killed_process_are_removed_when_the_run_is_continued(small_data, tmp_path):
    args = ["--data-dir", small_data, "--logdir", tmp_path, "--run-name", "left", "--epochs", 1,
            *SMALL_RUN_FLAGS]
    assert run_experiment("improved", *args).returncode == 0
    run_dir = tmp_path / "left"
    (run_dir / "results.json").unlink()
    half_written = run_dir / ".results.json.x1y2.tmp"
    half_written.write_text('{"test_acc')
    shards = run_dir / "checkpoints" / "ckpt-99_temp"
    shards.mkdir()
    (shards / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half")
    assert run_experiment("improved", *args, "--resume").returncode == 0
    assert not half_written.exists() and not shards.exists()
    assert (run_dir / "results.json").exists()
