"""experiments.search on real databases: an SQLite study that prunes, fails a diverging trial and
continues where it stopped; a real PostgreSQL server shared by two worker processes, one of them
killed mid-trial; bad input refused in one line."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from experiments import recipes
from mlp.summaries import logged_epochs
from tests.conftest import REPO, run_experiment

# Small runs; the batch size is left to the spaces that search it.
SMALL = ["--no-verify-checksums", "--no-corruptions", "--validation-size", "100",
         "--no-histograms", "--precision", "float32", "--kernels", "tensorflow"]


def study_trials(storage, name):
    import optuna

    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def tiny_space(grid):
    """A space over the learning rate and dropout of the improved recipe, whose grid includes a
    learning rate that learns nothing (the pruner's obvious victim)."""
    def suggest(trial):
        return {"learning_rate": trial.suggest_categorical("learning_rate",
                                                           grid["learning_rate"]),
                "dropout": trial.suggest_categorical("dropout", grid["dropout"])}
    return recipes.SearchSpace(recipes.IMPROVED, suggest, grid, "a test space")


@pytest.fixture
def spaces(monkeypatch):
    def add(name, space):
        monkeypatch.setitem(recipes.SEARCH_SPACES, name, space)
    return add


@pytest.mark.slow  # seven runs
def test_an_sqlite_study_prunes_continues_and_keeps_every_trial_a_run(small_data, tmp_path,
                                                                      spaces):
    spaces("tiny", tiny_space({"learning_rate": [3e-3, 1e-9], "dropout": [0.0, 0.1, 0.2]}))
    command = ["--space", "tiny", "--study", "tiny", "--sampler", "grid", "--sampler-seed", "3",
               "--pruner", "median", "--pruner-startup-trials", "1", "--pruner-warmup-epochs",
               "0", "--data-dir", small_data, "--logdir", tmp_path, "--epochs", "3",
               "--batch-size", "50", "--no-early-stopping", *SMALL]
    first = run_experiment("search", *command, "--trials", "4")
    assert first.returncode == 0, first.stderr
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    trials = study_trials(storage, "tiny")
    assert [t.number for t in trials] == [0, 1, 2, 3]
    states = [t.state.name for t in trials]
    assert "PRUNED" in states and "COMPLETE" in states, states
    for t in trials:
        run_dir = tmp_path / "tiny" / f"trial-{t.number:04d}"
        assert t.user_attrs["run_dir"] == str(run_dir)
        config = json.loads((run_dir / "config.json").read_text())
        assert config["learning_rate"] == t.params["learning_rate"]
        assert config["dropout"] == t.params["dropout"]
        if t.state.name == "COMPLETE":
            results = json.loads((run_dir / "results.json").read_text())
            assert t.value == results["validation_accuracy"]  # the objective: validation
            assert t.user_attrs["test_accuracy"] == results["test_accuracy"]
            assert (results["study"], results["trial"]) == ("tiny", t.number)
        else:  # pruned: stopped at once, its checkpoint and logs kept, no report
            assert t.params["learning_rate"] == 1e-9
            assert not (run_dir / "results.json").exists()
            assert list((run_dir / "checkpoints").glob("ckpt-*.index"))
            assert sorted(logged_epochs(run_dir, "validation", "accuracy")) == sorted(
                t.intermediate_values)
    # The same command again continues the study: the grid's two remaining points, no repeat.
    again = run_experiment("search", *command, "--trials", "4")
    assert again.returncode == 0, again.stderr
    trials = study_trials(storage, "tiny")
    assert [t.number for t in trials] == list(range(6))
    assert len({(t.params["learning_rate"], t.params["dropout"]) for t in trials}) == 6
    assert "trial 0:" not in again.stdout and "trial 4:" in again.stdout

    report = run_experiment("search", *command, "--report")
    assert report.returncode == 0, report.stderr
    table = (tmp_path / "tiny" / "search.md").read_text()
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert f"| {best.number} | {best.value:.4f} |" in table.splitlines()[4]
    assert "pruned" in table.splitlines()[0]
    for picture in ("history.png", "importance.png"):
        assert (tmp_path / "tiny" / picture).read_bytes()[:4] == b"\x89PNG"


def test_a_diverging_trial_is_failed_with_its_reason_and_the_study_goes_on(small_data, tmp_path,
                                                                           spaces):
    # No batch norm, no L2, an absurd learning rate: the loss overflows within a few steps.
    spaces("wild", tiny_space({"learning_rate": [1e12, 1e13], "dropout": [0.0]}))
    done = run_experiment("search", "--space", "wild", "--sampler", "grid", "--trials", "2",
                          "--data-dir", small_data, "--logdir", tmp_path, "--epochs", "2",
                          "--no-batch-norm", "--l2", "0", *SMALL)
    assert done.returncode == 0, done.stderr
    trials = study_trials(f"sqlite:///{tmp_path / 'search.db'}", "wild")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert all("not finite" in t.user_attrs["fail_reason"] for t in trials)
    assert "Traceback" not in done.stderr


def test_the_base_recipe_is_queued_once_as_the_studys_reference(small_data, tmp_path, spaces):
    spaces("around", tiny_space({"learning_rate": [3e-3, 1e-3], "dropout": [0.0, 0.2]}))
    command = ["--space", "around", "--study", "around", "--sampler", "random", "--trials", "1",
               "--enqueue-base", "--data-dir", small_data, "--logdir", tmp_path, "--epochs", "1",
               *SMALL]
    for _ in range(2):  # the second invocation queues nothing more
        done = run_experiment("search", *command)
        assert done.returncode == 0, done.stderr
    trials = study_trials(f"sqlite:///{tmp_path / 'search.db'}", "around")
    assert len(trials) == 2
    # The improved recipe's own learning rate and dropout, trained as trial 0.
    assert trials[0].params == {"learning_rate": 1e-3, "dropout": 0.2}
    config = json.loads((tmp_path / "around" / "trial-0000" / "config.json").read_text())
    assert (config["learning_rate"], config["dropout"]) == (1e-3, 0.2)
    assert ["fixed_params" in t.system_attrs for t in trials] == [True, False]

    spaces("elsewhere", tiny_space({"learning_rate": [3e-3], "dropout": [0.0]}))
    refused = run_experiment("search", "--space", "elsewhere", "--study", "elsewhere",
                             *command[4:])
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "the base recipe's learning_rate 0.001 is not among the space's choices" \
        in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, code, words", [
    (["--study", "a/b"], 2, "--study must be a plain name"),
    (["--storage", "nonsense://x"], 2, "--storage: cannot use 'nonsense://x'"),
    (["--storage", "postgresql://nobody@127.0.0.1:9/none"], 1, "cannot reach the database"),
    (["--space", "badfield"], 2, "suggests no_such_setting, not a setting of a run"),
    (["--dropout", "0.3"], 2, "--dropout: the space 'improved' searches this; leave it out"),
])
def test_bad_input_is_one_line_and_an_exit_code(small_data, tmp_path, spaces, flags, code,
                                                 words):
    spaces("badfield", recipes.SearchSpace(
        recipes.IMPROVED, lambda trial: {"no_such_setting": trial.suggest_float("x", 0, 1)},
        {}, "a space with a typo"))
    done = run_experiment("search", "--data-dir", small_data, "--logdir", tmp_path, *flags,
                          *SMALL)
    assert done.returncode == code, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not list(tmp_path.glob("*/trial-*"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin(name):
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL cluster on a free port, run by the `postgres` user; its URL."""
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install "
                    "postgresql; ./setup.sh does it)")
    as_postgres = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
    # Outside pytest's temporary tree, whose directories only root may enter.
    cluster = Path(tempfile.mkdtemp(prefix="mlp-postgres-"))
    if as_postgres:
        shutil.chown(cluster, "postgres")
    port = _free_port()
    subprocess.run([*as_postgres, initdb, "-D", str(cluster / "data"), "-A", "trust", "-U",
                    "postgres"], check=True, capture_output=True)
    subprocess.run([*as_postgres, pg_ctl, "-D", str(cluster / "data"), "-l",
                    str(cluster / "log"), "-w", "-o",
                    f"-p {port} -k {cluster} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*as_postgres, pg_ctl, "-D", str(cluster / "data"), "-m", "immediate",
                    "stop"], capture_output=True)
    shutil.rmtree(cluster, ignore_errors=True)


def _worker_arguments(url, logdir, small_data, trials):
    """A search on the shared database (small runs of the improved space)."""
    return ["--storage", url, "--study", "shared", "--space", "improved", "--sampler", "random",
            "--pruner", "none", "--trials", str(trials), "--heartbeat-interval", "1",
            "--grace-period", "4", "--data-dir", str(small_data), "--logdir", str(logdir),
            "--epochs", "6", "--no-early-stopping", "--train-subset", "400", *SMALL]


def _worker(url, logdir, small_data, trials, log):
    """A search process on the shared database, its output to `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.search",
         *_worker_arguments(url, logdir, small_data, trials)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.mark.slow  # a database server and three search processes
def test_two_workers_share_a_postgresql_study_and_a_killed_ones_trial_is_retried(
        postgres, small_data, tmp_path):
    # Two workers of two trials each and, beside them, a third killed mid-trial (after a
    # checkpoint). The next worker to start a trial after the grace period finds the killed one's
    # trial stale, fails it and runs its retry, which resumes it: one of the two if it starts a
    # trial late enough, else the survivor started afterwards.
    logs = [open(tmp_path / f"worker{k}.log", "w+") for k in range(3)]
    first, second, doomed = (_worker(postgres, tmp_path, small_data, trials, log)
                             for trials, log in zip((2, 2, 1), logs))
    deadline = time.time() + 300
    killed = None
    while killed is None or not list((tmp_path / "shared" / f"trial-{killed:04d}" /
                                      "checkpoints").glob("ckpt-*.index")):
        assert doomed.poll() is None and time.time() < deadline, logs[2].seek(0) or logs[2].read()
        found = re.search(r"trial (\d+): training in", logs[2].seek(0) or logs[2].read())
        killed = int(found.group(1)) if found else None
        time.sleep(0.1)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    killed_at = time.time()
    assert first.wait(timeout=600) == 0 and second.wait(timeout=600) == 0
    time.sleep(max(0.0, killed_at + 5 - time.time()))  # past the grace period
    survivor = run_experiment("search", *_worker_arguments(postgres, tmp_path, small_data, 1))
    assert survivor.returncode == 0, survivor.stderr

    trials = study_trials(postgres, "shared")
    assert [t.number for t in trials] == list(range(6))  # 2 + 2 + the killed one + 1
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1 and states[killed] == "FAIL", states
    assert states.count("COMPLETE") == 5, states
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert retry.params == trials[killed].params
    said = "".join(log.seek(0) or log.read() for log in logs) + survivor.stdout
    for t in trials:  # each trial trained once, by one worker; the retry in the killed one's run
        if t.number == retry.number:
            assert f"trial {t.number}: resuming in {tmp_path / 'shared' / f'trial-{killed:04d}'}" \
                in said, said
        elif t.number != killed:
            assert said.count(f"trial {t.number}: training in") == 1, said
            assert (tmp_path / "shared" / f"trial-{t.number:04d}" / "results.json").exists()
    results = json.loads((tmp_path / "shared" / f"trial-{killed:04d}" / "results.json").read_text())
    assert results["trial"] == retry.number and results["epochs_run"] == 6


@pytest.mark.slow  # a search process stopped by a signal
def test_a_signal_stops_the_trial_at_a_safe_point_and_the_same_command_resumes_it(
        small_data, tmp_path):
    command = [sys.executable, "-m", "experiments.search", "--study", "stopped", "--sampler",
               "random", "--pruner", "none", "--trials", "1", "--data-dir", str(small_data),
               "--logdir", str(tmp_path), "--epochs", "12", "--no-early-stopping",
               "--train-subset", "400", *SMALL]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    checkpoints = tmp_path / "stopped" / "trial-0000" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not list(checkpoints.glob("ckpt-*.index")):
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "continue with the same search command" in err
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    trials = study_trials(storage, "stopped")
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    stopped_at = json.loads((tmp_path / "stopped" / "trial-0000" / "config.json").read_text())

    again = run_experiment("search", *command[3:])  # the same command, in this process
    assert again.returncode == 0, again.stderr
    assert "trial 1: resuming in" in again.stdout and "trial-0000" in again.stdout
    trials = study_trials(storage, "stopped")
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == trials[0].params
    results = json.loads((tmp_path / "stopped" / "trial-0000" / "results.json").read_text())
    assert results["epochs_run"] == 12 and results["experiment_config"] == stopped_at


def test_a_study_continued_with_other_settings_is_refused_not_mixed(small_data, tmp_path):
    command = ["--study", "fixed", "--sampler", "random", "--trials", "1", "--data-dir",
               small_data, "--logdir", tmp_path, "--train-subset", "200", *SMALL]
    first = run_experiment("search", *command, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    other = run_experiment("search", *command, "--epochs", "2")
    assert other.returncode == 2
    assert "started with other settings (epochs)" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    assert len(study_trials(f"sqlite:///{tmp_path / 'search.db'}", "fixed")) == 1
