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

from experiments import recipes, search_report
from mlp.summaries import logged_epochs
from tests.conftest import REPO, run_module

# Small runs; the batch size is left to the spaces that search it.
SMALL = ["--no-verify-checksums", "--no-corruptions", "--validation-size", "100",
         "--no-histograms", "--no-figures", "--precision", "float32", "--kernels", "tensorflow"]


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
    command = ["--recipe", "tiny", "--study-name", "tiny", "--sampler", "grid", "--sampler-seed",
               "3", "--pruner", "median", "--pruner-startup-trials", "1", "--pruner-warmup-epochs",
               "0", "--data-dir", small_data, "--logdir", tmp_path, "--epochs", "3",
               "--batch-size", "50", "--no-early-stopping", *SMALL]
    first = run_module("search", *command, "--trials", "4")
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
    again = run_module("search", *command, "--trials", "4")
    assert again.returncode == 0, again.stderr
    trials = study_trials(storage, "tiny")
    assert [t.number for t in trials] == list(range(6))
    assert len({(t.params["learning_rate"], t.params["dropout"]) for t in trials}) == 6
    assert "trial 0:" not in again.stdout and "trial 4:" in again.stdout

    report = run_module("search", *command, "--report")
    assert report.returncode == 0, report.stderr
    table = (tmp_path / "tiny" / "search.md").read_text()
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert f"| {best.number} | {best.value:.4f} |" in table.splitlines()[4]
    assert "pruned" in table.splitlines()[0]
    # A record of search.json gives the same table back (experiments.results).
    saved = json.loads((tmp_path / "tiny" / "search.json").read_text())
    assert search_report.markdown(saved["study"], saved["trials"]) == table
    for picture in ("history.png", "importance.png"):
        assert (tmp_path / "tiny" / picture).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # a study of two trials
def test_a_diverging_trial_is_failed_with_its_reason_and_the_study_goes_on(small_data, tmp_path,
                                                                           spaces):
    # No batch norm, no L2, an absurd learning rate: the loss overflows within a few steps.
    spaces("wild", tiny_space({"learning_rate": [1e12, 1e13], "dropout": [0.0]}))
    done = run_module("search", "--recipe", "wild", "--sampler", "grid", "--trials", "2",
                          "--data-dir", small_data, "--logdir", tmp_path, "--epochs", "2",
                          "--no-batch-norm", "--l2", "0", *SMALL)
    assert done.returncode == 0, done.stderr
    trials = study_trials(f"sqlite:///{tmp_path / 'search.db'}", "wild")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert all("not finite" in t.user_attrs["fail_reason"] for t in trials)
    assert "Traceback" not in done.stderr


@pytest.mark.slow  # a whole run
def test_the_base_recipe_is_queued_once_as_the_studys_reference(small_data, tmp_path, spaces):
    spaces("around", tiny_space({"learning_rate": [3e-3, 1e-3], "dropout": [0.0, 0.2]}))
    command = ["--recipe", "around", "--study-name", "around", "--sampler", "random", "--trials",
               "1", "--enqueue-base", "--data-dir", small_data, "--logdir", tmp_path, "--epochs",
               "1", *SMALL]
    for _ in range(2):  # the second invocation queues nothing more
        done = run_module("search", *command)
        assert done.returncode == 0, done.stderr
    trials = study_trials(f"sqlite:///{tmp_path / 'search.db'}", "around")
    assert len(trials) == 2
    # The improved recipe's own learning rate and dropout, trained as trial 0.
    assert trials[0].params == {"learning_rate": 1e-3, "dropout": 0.2}
    config = json.loads((tmp_path / "around" / "trial-0000" / "config.json").read_text())
    assert (config["learning_rate"], config["dropout"]) == (1e-3, 0.2)
    assert ["fixed_params" in t.system_attrs for t in trials] == [True, False]

    spaces("elsewhere", tiny_space({"learning_rate": [3e-3], "dropout": [0.0]}))
    refused = run_module("search", "--recipe", "elsewhere", "--study-name", "elsewhere",
                             *command[4:])
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "the base recipe's learning_rate 0.001 is not among the space's choices" \
        in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, code, words", [
    (["--study-name", "a/b"], 2, "--study-name: must be a plain directory name"),
    (["--study-name", "a b"], 2, "--study-name must be a plain name (letters, digits"),
    (["--space", "improved"], 2, "--space was renamed: use --recipe NAME"),
    (["--storage", "nonsense://x"], 2, "--storage: cannot use 'nonsense://x'"),
    (["--storage", "postgresql://nobody@127.0.0.1:9/none"], 1, "cannot reach the database"),
    (["--recipe", "badfield"], 2, "suggests no_such_setting, not a setting of a run"),
    (["--dropout", "0.3"], 2, "--dropout: the space 'improved' searches this; leave it out"),
])
def test_bad_input_is_one_line_and_an_exit_code(small_data, tmp_path, spaces, flags, code,
                                                 words):
    spaces("badfield", recipes.SearchSpace(
        recipes.IMPROVED, lambda trial: {"no_such_setting": trial.suggest_float("x", 0, 1)},
        {}, "a space with a typo"))
    done = run_module("search", "--data-dir", small_data, "--logdir", tmp_path, *flags,
                          *SMALL)
    assert done.returncode == code, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not list(tmp_path.glob("*/trial-*"))


def _old_schema_database(path):
    """An Optuna database whose tables claim an older schema than this Optuna's."""
    import sqlite3

    import optuna

    optuna.create_study(storage=f"sqlite:///{path}", study_name="old")
    with sqlite3.connect(path) as connection:
        connection.execute("update alembic_version set version_num = 'v3.0.0.a'")
    return f"sqlite:///{path}"


@pytest.mark.parametrize("case, code, words", [
    ("malformed URL with a password", 2, "cannot use 'postgresql://alice:***@db:54x2/optuna'"),
    ("unreachable server with a password", 1, "cannot reach the database "
                                              "postgresql://alice:***@127.0.0.1:9/none"),
    ("a file that is not a database", 2, "(file is not a database)"),
    ("a connection option PostgreSQL does not have", 2, 'invalid connection option "bogus"'),
    ("tables of an older Optuna", 2, "is no longer compatible with the table schema"),
    ("a study named like the default database", 2, "--study-name: search.db is the name of the "
                                                   "study database"),
])
def test_a_database_that_cannot_be_used_is_one_line_exit_2_and_no_password_is_shown(
        small_data, tmp_path, case, code, words):
    text_file = tmp_path / "notes.db"
    text_file.write_text("not a database, only text\n")
    flags = {
        "malformed URL with a password": ["--storage", "postgresql://alice:s3cr3t@db:54x2/optuna"],
        "unreachable server with a password": ["--storage",
                                               "postgresql://alice:s3cr3t@127.0.0.1:9/none"],
        "a file that is not a database": ["--storage", f"sqlite:///{text_file}"],
        "a connection option PostgreSQL does not have": [
            "--storage", "postgresql://alice:s3cr3t@127.0.0.1:9/none?bogus=1"],
        "tables of an older Optuna": ["--storage", _old_schema_database(tmp_path / "old.db")],
        "a study named like the default database": ["--study-name", "search.db"],
    }[case]
    done = run_module("search", "--data-dir", small_data, "--logdir", tmp_path / "logs",
                          *flags, *SMALL)
    assert done.returncode == code, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "s3cr3t" not in done.stderr + done.stdout
    assert not (tmp_path / "logs" / "search.db").is_dir()
    assert not list(tmp_path.glob("logs/*/trial-*"))


def test_a_report_of_a_study_that_is_not_there_names_those_that_are_and_makes_none(
        small_data, tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'search.db'}"
    optuna.create_study(storage=storage, study_name="kept")
    done = run_module("search", "--study-name", "kpet", "--report", "--logdir", tmp_path,
                          "--data-dir", small_data, *SMALL)
    assert done.returncode == 2, done.stderr
    assert "no study 'kpet'" in done.stderr and "(it holds: kept)" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["kept"]
    assert not (tmp_path / "kpet").exists()
    # A --logdir with no database (mistyped, say): refused, and no database is made there.
    elsewhere = tmp_path / "elsewhere"
    done = run_module("search", "--study-name", "kept", "--report", "--logdir", elsewhere,
                          "--data-dir", small_data, *SMALL)
    assert done.returncode == 2 and "no study database" in done.stderr, done.stderr
    assert not (elsewhere / "search.db").exists()


def test_under_the_grid_sampler_an_error_that_is_not_the_grids_is_reported_as_itself(
        small_data, tmp_path, spaces):
    spaces("tiny", tiny_space({"learning_rate": [3e-3], "dropout": [0.0]}))
    damaged = tmp_path / "tiny" / "trial-0000"
    damaged.mkdir(parents=True)
    (damaged / "config.json").write_text("{ damaged")
    done = run_module("search", "--recipe", "tiny", "--sampler", "grid", "--trials", "1",
                          "--data-dir", small_data, "--logdir", tmp_path, "--epochs", "1", *SMALL)
    assert done.returncode == 2, done.stderr
    assert "config.json: cannot be read as JSON" in done.stderr, done.stderr
    assert "--sampler grid" not in done.stderr and "Traceback" not in done.stderr


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
    """A throwaway PostgreSQL cluster run by the `postgres` user; its URL. It listens on no TCP
    address, only on a socket in a directory only its owner (and root) may enter, so no other
    local user reaches its trust-authenticated superuser."""
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install "
                    "postgresql; ./setup.sh does it)")
    as_postgres = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
    # Outside pytest's temporary tree, whose directories only root may enter.
    cluster = Path(tempfile.mkdtemp(prefix="mlp-postgres-"))
    if as_postgres:
        shutil.chown(cluster, "postgres")
    os.chmod(cluster, 0o700)
    port = _free_port()  # names the socket file; nothing listens on it
    subprocess.run([*as_postgres, initdb, "-D", str(cluster / "data"), "-A", "trust", "-U",
                    "postgres"], check=True, capture_output=True)
    subprocess.run([*as_postgres, pg_ctl, "-D", str(cluster / "data"), "-l",
                    str(cluster / "log"), "-w", "-o",
                    f"-p {port} -k {cluster} -c listen_addresses=''", "start"],
                   check=True, capture_output=True)
    yield f"postgresql://postgres@/postgres?host={cluster}&port={port}"
    subprocess.run([*as_postgres, pg_ctl, "-D", str(cluster / "data"), "-m", "immediate",
                    "stop"], capture_output=True)
    shutil.rmtree(cluster, ignore_errors=True)


def _worker_arguments(url, logdir, small_data, trials):
    """A search on the shared database (small runs of the improved space)."""
    return ["--storage", url, "--study-name", "shared", "--recipe", "improved", "--sampler",
            "random", "--pruner", "none", "--trials", str(trials), "--heartbeat-interval", "1",
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
    # Two workers of a trial each and, beside them, a third killed mid-trial, as its first
    # checkpoint appears (sometimes while it is still being written: then the retry starts the
    # trial's training from the beginning, in the same directory). The next worker to start a
    # trial after the grace period, one started after the others end, finds the killed one's
    # trial stale, fails it and runs its retry, which resumes it.
    logs = [open(tmp_path / f"worker{k}.log", "w+") for k in range(3)]
    first, second, doomed = (_worker(postgres, tmp_path, small_data, 1, log) for log in logs)
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
    survivor = run_module("search", *_worker_arguments(postgres, tmp_path, small_data, 1))
    assert survivor.returncode == 0, survivor.stderr

    trials = study_trials(postgres, "shared")
    assert [t.number for t in trials] == list(range(4))  # 1 + 1 + the killed one + its retry
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1 and states[killed] == "FAIL", states
    assert states.count("COMPLETE") == 3, states
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
    command = [sys.executable, "-m", "experiments.search", "--study-name", "stopped", "--sampler",
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

    again = run_module("search", *command[3:])  # the same command, in this process
    assert again.returncode == 0, again.stderr
    assert "trial 1: resuming in" in again.stdout and "trial-0000" in again.stdout
    trials = study_trials(storage, "stopped")
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == trials[0].params
    results = json.loads((tmp_path / "stopped" / "trial-0000" / "results.json").read_text())
    assert results["epochs_run"] == 12 and results["experiment_config"] == stopped_at


@pytest.mark.slow  # a whole run
def test_a_study_continued_with_other_settings_is_refused_not_mixed(small_data, tmp_path):
    command = ["--study-name", "fixed", "--sampler", "random", "--trials", "1", "--data-dir",
               small_data, "--logdir", tmp_path, "--train-subset", "200", *SMALL]
    first = run_module("search", *command, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    other = run_module("search", *command, "--epochs", "2")
    assert other.returncode == 2
    assert "started with other settings (epochs)" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    assert len(study_trials(f"sqlite:///{tmp_path / 'search.db'}", "fixed")) == 1


def test_a_retry_resumes_the_run_it_can_reach_and_otherwise_starts_in_its_own_directory(tmp_path):
    from types import SimpleNamespace

    from experiments.search import claim_trial_run
    from mlp.lock import DirectoryLock

    study_dir = tmp_path / "study"
    previous = study_dir / "trial-0003"
    previous.mkdir(parents=True)
    (previous / "config.json").write_text("{}")
    retried = SimpleNamespace(number=3, user_attrs={"run_dir": "/elsewhere/study/trial-0003"})
    retry = SimpleNamespace(number=7)

    run_dir, lock, how = claim_trial_run(study_dir, retry, retried)  # no one holds it
    lock.release()
    assert run_dir == previous and how == "resuming trial 3's run"

    with DirectoryLock(previous):  # the stale trial's process is alive (it was frozen)
        run_dir, lock, how = claim_trial_run(study_dir, retry, retried)
        lock.release()
    assert run_dir == study_dir / "trial-0007"
    assert "still held by a live process" in how and how.endswith("training from scratch")

    elsewhere = tmp_path / "another-logdir" / "study"  # another machine's logdir
    run_dir, lock, how = claim_trial_run(elsewhere, retry, retried)
    lock.release()
    assert run_dir == elsewhere / "trial-0007"
    assert f"trial 3's run is not in {elsewhere}" in how

    run_dir, lock, how = claim_trial_run(study_dir, SimpleNamespace(number=8), None)
    lock.release()
    assert (run_dir, how) == (study_dir / "trial-0008", None)


@pytest.mark.slow  # a database server, a search process frozen past the grace period
def test_a_worker_frozen_past_the_grace_period_stops_its_trial_cleanly_and_none_is_lost(
        postgres, small_data, tmp_path):
    arguments = ["--storage", postgres, "--study-name", "frozen", "--sampler", "random", "--pruner",
                 "none", "--trials", "1", "--heartbeat-interval", "1", "--grace-period", "3",
                 "--data-dir", str(small_data), "--logdir", str(tmp_path), "--epochs", "20",
                 "--no-early-stopping", "--train-subset", "400", *SMALL]
    log = open(tmp_path / "frozen.log", "w+")
    frozen = subprocess.Popen([sys.executable, "-m", "experiments.search", *arguments], cwd=REPO,
                              stdout=log, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    checkpoints = tmp_path / "frozen" / "trial-0000" / "checkpoints"
    deadline = time.time() + 300
    while not list(checkpoints.glob("ckpt-*.index")):
        assert frozen.poll() is None and time.time() < deadline, log.seek(0) or log.read()
        time.sleep(0.05)
    frozen.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3 + 2)  # no heartbeat for longer than the grace period
        retry = run_module("search", *arguments)
    finally:
        frozen.send_signal(signal.SIGCONT)
    assert retry.returncode == 0, retry.stderr
    assert (f"trial 1: training in {tmp_path / 'frozen' / 'trial-0001'}" in retry.stdout
            and "retry of trial 0" in retry.stdout
            and "still held by a live process" in retry.stdout), retry.stdout

    assert frozen.wait(timeout=300) == 0, log.seek(0) or log.read()
    said = log.seek(0) or log.read()
    assert "Traceback" not in said and "Error" not in said, said
    stopped = [line for line in said.splitlines() if line.startswith("trial 0: ") and (
        "took the trial for dead" in line or "had taken it for dead" in line)]
    assert len(stopped) == 1, said
    trials = study_trials(postgres, "frozen")
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == trials[0].params
    results = json.loads((tmp_path / "frozen" / "trial-0001" / "results.json").read_text())
    assert results["trial"] == 1 and results["epochs_run"] == 20
    assert not (tmp_path / "frozen" / "trial-0000" / "results.json").exists()


# A worker's report of an epoch, stopped (SIGSTOP) between its INSERT and the commit: the
# INSERT's foreign-key check holds a lock on the trial's row until then. It prints what its report
# raised once it is woken.
_STOPPED_MID_WRITE = """
import os, signal, sys
from types import SimpleNamespace
import optuna, sqlalchemy
from experiments.search import open_storage
from mlp.actions.report_to_trial import ReportToTrialAction
args = SimpleNamespace(max_retries=1, heartbeat_interval=1, grace_period=2)
storage = open_storage(sys.argv[1], args)
trial = optuna.create_study(study_name="mid-write", storage=storage).ask()
storage.record_heartbeat(trial._trial_id)

@sqlalchemy.event.listens_for(storage.engine, "after_cursor_execute")
def stop(connection, cursor, statement, *rest):
    if statement.startswith("INSERT INTO trial_intermediate_values"):
        print("stopping", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)

try:
    ReportToTrialAction(trial).end_of_epoch(0, {"val_accuracy": 0.5})
    print("reported", flush=True)
except Exception as e:
    print(type(e).__name__, flush=True)
"""

# Another worker finds that trial stale and fails it, as a search does before its next trial.
_FAIL_STALE = """
import sys
from types import SimpleNamespace
import optuna
from experiments.search import open_storage
args = SimpleNamespace(max_retries=1, heartbeat_interval=1, grace_period=2)
study = optuna.load_study(study_name="mid-write", storage=open_storage(sys.argv[1], args))
optuna.storages.fail_stale_trials(study)
print([t.state.name for t in study.get_trials()])
"""


@pytest.mark.slow  # a database server and two processes
def test_a_worker_stopped_in_the_middle_of_a_write_holds_no_other_worker_up(postgres):
    # The database ends a transaction left open for longer than the grace period, so the lock of
    # a frozen worker (a suspended machine) is released; woken, that worker finds its trial
    # taken over, as it does when it was frozen between two writes.
    stopped = subprocess.Popen([sys.executable, "-c", _STOPPED_MID_WRITE, postgres], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert stopped.stdout.readline() == "stopping\n", stopped.communicate()
        time.sleep(2 + 1)  # past the grace period
        other = subprocess.run([sys.executable, "-c", _FAIL_STALE, postgres], cwd=REPO,
                               capture_output=True, text=True, timeout=30)
    finally:
        stopped.send_signal(signal.SIGCONT)
    out, err = stopped.communicate(timeout=30)
    assert other.returncode == 0, other.stderr
    assert other.stdout.split("\n")[-2:] == ["['FAIL', 'WAITING']", ""], other.stdout
    assert out == "TrialTakenOver\n", (out, err)
    assert "Traceback" not in err and "Error" not in err, err


def test_the_idle_transaction_limit_keeps_the_urls_own_connection_options(postgres):
    from types import SimpleNamespace

    import sqlalchemy

    from experiments.search import open_storage

    args = SimpleNamespace(max_retries=1, heartbeat_interval=1, grace_period=7)
    storage = open_storage(f"{postgres}&options=-c%20statement_timeout%3D5000", args)
    with storage.engine.connect() as connection:
        shown = [connection.execute(sqlalchemy.text(f"show {name}")).scalar()
                 for name in ("statement_timeout", "idle_in_transaction_session_timeout")]
    assert shown == ["5s", "7s"]


def test_the_test_database_listens_only_on_a_private_socket(postgres):
    import psycopg

    socket_dir = Path(re.search(r"host=([^&]+)", postgres).group(1))
    port = int(re.search(r"port=(\d+)", postgres).group(1))
    assert oct(socket_dir.stat().st_mode & 0o777) == "0o700"
    assert (socket_dir / f".s.PGSQL.{port}").is_socket()
    with psycopg.connect(host=str(socket_dir), port=port, user="postgres",
                         dbname="postgres") as connection:
        assert connection.execute("show listen_addresses").fetchone() == ("",)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                        connect_timeout=5)


def test_a_heartbeat_that_cannot_be_written_is_tried_again_at_the_next_beat(tmp_path,
                                                                            monkeypatch):
    from types import SimpleNamespace

    import optuna
    import sqlalchemy.exc
    from optuna.storages._heartbeat import HeartbeatThread

    from experiments.search import open_storage

    args = SimpleNamespace(max_retries=1, heartbeat_interval=1, grace_period=3)
    storage = open_storage(f"sqlite:///{tmp_path / 'search.db'}", args)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    write = optuna.storages.RDBStorage.record_heartbeat
    beats = []

    def restarting_database(self, trial_id):
        beats.append(trial_id)
        if len(beats) == 1:
            raise sqlalchemy.exc.OperationalError("UPDATE trial_heartbeats", {},
                                                  Exception("the server restarted"))
        write(self, trial_id)

    monkeypatch.setattr(optuna.storages.RDBStorage, "record_heartbeat", restarting_database)
    sender = HeartbeatThread(trial._trial_id, storage)  # what Optuna runs beside each trial
    sender.start()
    try:
        time.sleep(2.5)
        alive = sender._thread.is_alive()
    finally:
        sender.join()
    assert alive and len(beats) >= 3  # it went on beating after the failed write
    assert storage._get_stale_trial_ids(study._study_id) == []
