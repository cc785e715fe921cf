"""Hyperparameter search with Optuna: a base recipe and a search space (declared beside the
recipes, experiments/recipes.py: SEARCH_SPACES), trials kept in a database.

Each trial is an ordinary run directory, <logdir>/<study>/trial-<number>, trained by the
experiments' code path (config.json, checkpoints, TensorBoard, results.json; the study and trial
number among its hparams). The objective is the validation accuracy of the run's chosen weights;
the test set is read once per trial, at its end, and never drives a choice. After every epoch
the validation accuracy goes to the trial, and a trial the pruner gives up on stops there,
keeping its run directory, marked pruned.

The database: by default an SQLite file, <logdir>/search.db (nothing to install or start); for
many machines any URL Optuna accepts, e.g. postgresql://user@host/db (pip install -e
".[postgres]"). Every process running the same command on the same database joins the same
study: each takes the next trial, and no trial is trained twice. A password never goes on the
command line, where it would be shown: give postgresql://user@host/db and keep the password in
~/.pgpass (host:port:db:user:password, mode 0600) or $PGPASSWORD; messages never print one.

Running trials send heartbeats (a failed write, such as a database restart, is tried again at the
next beat). A trial without a heartbeat for --grace-period seconds (its process died, or froze)
is found stale by the next process that starts a trial, failed, and queued again. Its retry says
what it does: it resumes the stale trial's run from its last checkpoint where that run directory
is in its --logdir and no process holds it; otherwise (a separate logdir, or a frozen process
that still holds the run) it trains from scratch in its own directory. A frozen process that
wakes up stops its trial, which is no longer its own, with one line, and goes on with the next.
On PostgreSQL a process frozen in the middle of a write holds no one up: the server ends a
transaction idle for longer than --grace-period.
SIGINT/SIGTERM stop the current trial at a safe point (exit 130 / 143); the same command
continues it. A trial whose loss diverges is recorded as failed, with its reason, and the study
goes on.

    python -m experiments.search --recipe improved --trials 20
    python -m experiments.search --recipe improved --report
    optuna-dashboard sqlite:///tensorboard_logs/search.db

Every flag of the experiments (python -m experiments.improved --help) overrides the space's base
recipe, e.g. `--epochs 2 --train-subset 3000` for a smoke test.
"""

import argparse
import dataclasses
import io
import re
import sys
import time
import warnings
from pathlib import Path

PROG = "python -m experiments.search"
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
DEFAULT_DATABASE = "search.db"


def build_parser():
    from experiments.recipes import SEARCH_SPACES
    from experiments.study import add_study_name_argument, refuse_renamed_flags
    from mlp.cli import build_parser as experiment_parser

    parser = experiment_parser(PROG, SEARCH_SPACES["improved"].base, __doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:
        if action.dest in ("resume", "run_name"):  # the search decides these for each trial
            action.help = argparse.SUPPRESS
    # A run's own flags that a study decides for each trial.
    search = parser.add_argument_group("search")
    search.add_argument("--recipe", choices=sorted(SEARCH_SPACES), default="improved",
                        help="which recipe to search around, with the space declared beside it; "
                             + "; ".join(f"{name}: {space.about}"
                                         for name, space in sorted(SEARCH_SPACES.items())))
    add_study_name_argument(search, "the recipe's name", also=" and its name in the database")
    refuse_renamed_flags(search, {"--space": "--recipe NAME", "--study": "--study-name NAME"})
    search.add_argument("--storage", default=None,
                        help="the database: an SQLAlchemy URL Optuna accepts (default: "
                             f"sqlite:///<logdir>/{DEFAULT_DATABASE}); a PostgreSQL password "
                             "goes in ~/.pgpass or $PGPASSWORD, not in the URL")
    search.add_argument("--trials", type=int, default=10,
                        help="trials this process runs before it stops (default: 10)")
    search.add_argument("--timeout", type=float, default=None,
                        help="start no trial after this many seconds (default: no limit)")
    search.add_argument("--sampler", choices=("tpe", "random", "grid"), default="tpe",
                        help="how the next trial's parameters are chosen (default: tpe; grid "
                             "walks the space's declared grid)")
    search.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median",
                        help="when a trial is stopped early (default: median: below the median "
                             "of earlier trials at the same epoch)")
    search.add_argument("--pruner-startup-trials", type=int, default=3,
                        help="median pruner: trials that finish before any is pruned "
                             "(default: 3)")
    search.add_argument("--pruner-warmup-epochs", type=int, default=2,
                        help="median pruner: epochs of a trial never pruned (default: 2)")
    search.add_argument("--sampler-seed", type=int, default=None,
                        help="seed of the sampler (default: none, each process its own)")
    search.add_argument("--heartbeat-interval", type=int, default=HEARTBEAT_SECONDS,
                        help="seconds between a running trial's heartbeats (default: "
                             f"{HEARTBEAT_SECONDS})")
    search.add_argument("--grace-period", type=int, default=GRACE_SECONDS,
                        help="a running trial without a heartbeat for this long is taken for "
                             f"dead and queued again (default: {GRACE_SECONDS})")
    search.add_argument("--max-retries", type=int, default=3,
                        help="how often a dead trial is queued again (default: 3)")
    search.add_argument("--enqueue-base", action="store_true",
                        help="queue a trial of the base recipe's own values (once per study), "
                             "so the study holds the reference its other trials are compared "
                             "with")
    search.add_argument("--report", action="store_true",
                        help="train nothing: write the study's table and plots into "
                             "<logdir>/<study>/ and TensorBoard, and print the table")
    return parser


def parse(argv):
    from mlp.cli import explicit_fields
    from mlp.config import from_arguments

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        parser.error("--resume: a study continues by running the same command again")
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    if args.enqueue_base and args.sampler == "grid":
        parser.error("--enqueue-base: the grid sampler walks only its grid; use tpe or random")
    if args.grace_period <= args.heartbeat_interval or args.heartbeat_interval < 1:
        parser.error("--grace-period must be longer than --heartbeat-interval (at least 1 s)")
    args.study_name = args.study_name or args.recipe
    # The flags given on the command line override the space's base recipe.
    config = from_arguments(args)
    fields = {field.name for field in dataclasses.fields(config)}
    given = explicit_fields(build_parser(), argv) & fields
    if "run_name" in given:
        parser.error("--run-name: a search names each trial's run itself (trial-<number>)")
    overrides = {field: getattr(config, field) for field in given - {"logdir"}}
    return parser, args, overrides


class _ProbeTrial:
    """Stands in for an optuna trial to learn which fields a space sets, before any trial."""

    number = 0

    def suggest_float(self, name, low, high, **kwargs):
        return low

    def suggest_int(self, name, low, high, **kwargs):
        return low

    def suggest_categorical(self, name, choices):
        return choices[0]


class _BaseTrial:
    """Stands in for an optuna trial to learn the parameters that give a base recipe's own
    values: {parameter: value} in `params`. (Every name is a setting: `trial_config` has
    checked the space first.)"""

    def __init__(self, base):
        self.base, self.params = base, {}

    def suggest_float(self, name, low, high, **kwargs):
        self.params[name] = getattr(self.base, name)
        return self.params[name]

    suggest_int = suggest_float

    def suggest_categorical(self, name, choices):
        from mlp.config import ConfigError

        value = getattr(self.base, name)
        spelled = "-".join(map(str, value)) if isinstance(value, tuple) else value
        if spelled not in choices:
            raise ConfigError(f"--enqueue-base: the base recipe's {name} {spelled!r} is not "
                              f"among the space's choices {list(choices)}")
        self.params[name] = spelled
        return spelled


def base_params(space, base):
    """{parameter: value} of a trial of `base`'s own values in `space` (ConfigError where the
    space cannot suggest them)."""
    probe = _BaseTrial(base)
    space.suggest(probe)
    return probe.params


def trial_config(space, overrides, trial, study_dir, space_name):
    """The Config of `trial`: the space's base recipe, the command line's overrides, the
    trial's suggestions; its run directory named after the trial. Raises ConfigError for a
    suggestion that is not a Config field or not a valid value."""
    from mlp.config import ConfigError

    changes = space.suggest(trial)
    fields = {field.name for field in dataclasses.fields(space.base)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ConfigError(f"search space {space_name!r} suggests {', '.join(unknown)}, not a "
                          "setting of a run (see python -m experiments.improved --help)")
    searched = sorted(set(changes) & set(overrides))
    if searched:
        flags = ", ".join("--" + name.replace("_", "-") for name in searched)
        raise ConfigError(f"{flags}: the space {space_name!r} searches "
                          f"{'this' if len(searched) == 1 else 'these'}; leave "
                          f"{'it' if len(searched) == 1 else 'them'} out")
    config = dataclasses.replace(space.base, **{**overrides, **changes},
                                 logdir=str(study_dir), run_name=run_name(trial.number))
    return config.validate()


def run_name(number):
    return f"trial-{number:04d}"


def retried_trial(trial):
    """The trial `trial` retries (the one whose failure queued it), or None."""
    if isinstance(trial, _ProbeTrial):
        return None
    history = _frozen(trial).system_attrs.get("retry_history") or []
    return _numbered(trial.study, history[-1]) if history else None


def _frozen(trial):
    return _numbered(trial.study, trial.number)


def _numbered(study, number):
    """The FrozenTrial of `study` numbered `number`."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def claim_trial_run(study_dir, trial, retried):
    """(run directory, its lock, what this trial does there) for `trial`, the retry of
    `retried` (a FrozenTrial) or None. A retry continues the run `retried` left when that run is
    in `study_dir` and no live process holds it; otherwise it trains from scratch in its own
    directory. Raises DirectoryInUse only for the trial's own directory."""
    from mlp import run_directory
    from mlp.lock import DirectoryInUse

    how = None
    if retried is not None:
        left = Path(retried.user_attrs.get("run_dir", run_name(retried.number)))
        previous = study_dir / left.name
        if not (previous / "config.json").is_file():
            why = f"trial {retried.number}'s run is not in {study_dir}"
        else:
            try:
                return (previous, run_directory.claim(previous),
                        f"resuming trial {retried.number}'s run")
            except DirectoryInUse:
                why = (f"trial {retried.number}'s run {previous} is still held by a live process "
                       "(frozen, then found stale)")
        how = f"retry of trial {retried.number}: {why}; training from scratch"
    own = study_dir / run_name(trial.number)
    return own, run_directory.claim(own), how


class HeartbeatStorage:
    """Mixed into Optuna's RDBStorage: a heartbeat that fails to be written (a database restart,
    a dropped connection) is tried again at the next beat, instead of ending the thread that
    sends them for good, which would let the running trial go stale."""

    def record_heartbeat(self, trial_id):
        import sqlalchemy.exc

        try:
            super().record_heartbeat(trial_id)
        except sqlalchemy.exc.SQLAlchemyError:
            pass  # the next beat tries again; only a longer outage than the grace period counts


def open_storage(url, args):
    """Optuna's RDB storage at `url` with heartbeats, retrying a dead trial's parameters up to
    --max-retries times. Raises ConfigError for a URL or a database it cannot use and DataError
    (exit 1) for a database it cannot reach; no message shows the URL's password."""
    import optuna
    import sqlalchemy.exc

    from mlp.config import ConfigError
    from mlp.data import DataError

    class Storage(HeartbeatStorage, optuna.storages.RDBStorage):
        pass

    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=args.max_retries)
    shown = without_password(url)
    try:
        for attempt in range(5):
            try:
                return Storage(url, heartbeat_interval=args.heartbeat_interval,
                               grace_period=args.grace_period,
                               heartbeat_stale_trial_callback=retry,
                               engine_kwargs=_engine_kwargs(url, args.grace_period))
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
                # Another process created the tables at the same moment: they exist now. Any
                # other error of these kinds (a bad connection option, say) is the URL's.
                if attempt == 4 or not _creation_race(e):
                    raise
                time.sleep(0.5 * (attempt + 1))
    except sqlalchemy.exc.OperationalError as e:
        raise DataError(f"--storage: cannot reach the database {shown}: "
                        f"{redact(_first_line(e.orig or e), url)}") from None
    except sqlalchemy.exc.DatabaseError as e:  # not a database, a bad option, a foreign schema
        raise ConfigError(f"--storage: cannot use the database {shown} "
                          f"({redact(_first_line(e.orig or e), url)}); check the URL's "
                          "options, or give another database") from None
    except RuntimeError as e:  # tables of another Optuna version
        raise ConfigError(f"--storage: {shown}: "
                          f"{redact(_first_line(e), url).replace('$STORAGE_URL', shown)}") from None
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError,
            ImportError, TypeError) as e:
        raise ConfigError(f"--storage: cannot use {shown!r} ({redact(_first_line(e), url)}); "
                          "give an SQLAlchemy URL such as sqlite:///search.db or "
                          "postgresql://user@host/db") from None


def _creation_race(error):
    """Whether `error` is what a process gets that creates Optuna's tables as another does."""
    import sqlalchemy.exc

    return (isinstance(error, sqlalchemy.exc.IntegrityError)
            or "already exists" in str(error.orig or error).lower())


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _engine_kwargs(url, grace_period):
    if url.startswith("sqlite"):
        # Several processes on one SQLite file wait for each other's writes.
        return {"connect_args": {"timeout": 60}}
    if not url.startswith("postgresql"):
        return {}
    # A process stopped between a write and its commit (a suspended machine) holds its trial's
    # row locked, and the process that fails that trial as stale would wait for it forever: the
    # server ends such a transaction once it has been idle for the grace period.
    from sqlalchemy.engine import make_url

    given = make_url(url).query.get("options", ())  # a tuple where the URL repeats it
    given = " ".join([given] if isinstance(given, str) else given)
    idle = f"-c idle_in_transaction_session_timeout={grace_period * 1000}"
    return {"pool_pre_ping": True,
            "connect_args": {"connect_timeout": 10, "options": f"{given} {idle}".strip()}}


# user:password@ in a URL's authority, whether or not SQLAlchemy can parse the rest.
_PASSWORD = re.compile(r"^(?P<head>[^:/?#]+://[^:/?#@]*:)(?P<password>[^@/?#]*)@")


def without_password(url):
    """`url` with its password, if any, replaced by ***."""
    return _PASSWORD.sub(lambda m: m.group("head") + "***@", url, count=1)


def redact(text, url):
    """`text` with every occurrence of `url`'s password replaced by ***."""
    found = _PASSWORD.match(url)
    if found and found.group("password"):
        from urllib.parse import unquote

        for password in {found.group("password"), unquote(found.group("password"))}:
            text = text.replace(password, "***")
    return text


def make_sampler(args, space):
    import optuna

    from mlp.config import ConfigError

    if args.sampler == "grid":
        if not space.grid:
            raise ConfigError(f"--sampler grid: the space {args.recipe!r} declares no grid")
        return optuna.samplers.GridSampler(space.grid, seed=args.sampler_seed)
    if args.sampler == "random":
        return optuna.samplers.RandomSampler(seed=args.sampler_seed)
    return optuna.samplers.TPESampler(seed=args.sampler_seed)


def make_pruner(args, epochs):
    import optuna

    if args.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=args.pruner_startup_trials,
                                           n_warmup_steps=args.pruner_warmup_epochs)
    if args.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.NopPruner()


def main(argv=None):
    from mlp.exits import run_guarded
    from mlp.signals import SignalGuard

    argv = sys.argv[1:] if argv is None else list(argv)
    parser, args, overrides = parse(argv)
    with SignalGuard() as guard:
        return run_guarded(PROG, _main, args, overrides, guard)


def _main(args, overrides, guard):
    import logging

    import optuna
    import sqlalchemy.exc

    from experiments.recipes import SEARCH_SPACES
    from mlp.config import ConfigError, check_writable_dir

    space = SEARCH_SPACES[args.recipe]
    name = args.study_name  # a plain directory name (its argparse type) or the recipe's
    if not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"--study-name must be a plain name (letters, digits, - _ .), got "
                          f"{name!r}")
    if not args.storage and name == DEFAULT_DATABASE:
        raise ConfigError(f"--study-name: {DEFAULT_DATABASE} is the name of the study database in "
                          "--logdir; choose another name")
    study_dir = Path(args.logdir) / name
    storage_url = args.storage or f"sqlite:///{Path(args.logdir).resolve() / DEFAULT_DATABASE}"
    # Our own line per trial; Optuna's would print a failed trial's traceback.
    optuna.logging.set_verbosity(logging.ERROR)
    # Heartbeats and their retry callback are marked experimental; they are what we rely on.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.report:
        return _report(args, storage_url, study_dir)
    check_writable_dir(study_dir, "logdir")
    # Any field a space suggests must be a setting: refused before any trial or database.
    trial_config(space, overrides, _ProbeTrial(), study_dir, args.recipe)
    base = dataclasses.replace(space.base, **overrides)
    reference = base_params(space, base) if args.enqueue_base else None
    storage = open_storage(storage_url, args)
    try:
        study = optuna.create_study(storage=storage, study_name=args.study_name,
                                    direction="maximize", sampler=make_sampler(args, space),
                                    pruner=make_pruner(args, base.epochs), load_if_exists=True)
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        raise _storage_error(e, storage_url) from None
    # A study's trials are comparable only under one space and one base: a study continued with
    # others is refused, not mixed.
    settings = {"space": args.recipe, "base": base.result_fields()}
    for key, value in settings.items():
        saved = study.user_attrs.get(key)
        if saved is None:
            study.set_user_attr(key, value)
        elif saved != value:
            changed = (sorted(k for k in set(saved) | set(value) if saved.get(k) != value.get(k))
                       if key == "base" else [f"--recipe {saved}"])
            raise ConfigError(f"study {args.study_name!r} was started with other settings "
                              f"({', '.join(changed)}); give the same ones, or another "
                              "--study-name")
    if reference:  # once: a queued or finished trial of the same values is enough
        study.enqueue_trial(reference, skip_if_exists=True)
    objective = Objective(args, space, overrides, study_dir, guard)
    started = time.perf_counter()
    print(f"search {args.study_name!r} (around {args.recipe}, {args.sampler} sampler, "
          f"{args.pruner} pruner) in {without_password(storage_url)}; runs in {study_dir}",
          flush=True)
    try:
        _optimize(study, objective, args)
    except optuna.exceptions.StorageInternalError as e:
        raise _storage_error(e, storage_url) from None
    guard.check("stopped between trials; every finished trial is kept",
                "the same search command")
    counts = _state_counts(study)
    print(f"this process: {objective.trials} trials in {time.perf_counter() - started:.0f}s; "
          f"the study: {counts}", flush=True)
    if _has_complete(study):
        best = study.best_trial
        print(f"best: trial {best.number} validation {best.value:.4f} "
              f"(test {best.user_attrs.get('test_accuracy', float('nan')):.4f}) {best.params}")
    return 0


def _optimize(study, objective, args):
    """Optuna's loop over this process's trials, carried on past a trial another process took
    over (Optuna cannot record the end of a trial that is no longer running, and says so with a
    ValueError)."""
    from mlp.config import ConfigError

    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while objective.trials < args.trials:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        try:
            study.optimize(objective, n_trials=args.trials - objective.trials, timeout=left,
                           catch=(_Diverged,), callbacks=[objective.finished])
            return
        except ValueError as e:
            if objective.taken_over:
                objective.taken_over = False
                continue
            if isinstance(e, ConfigError) or args.sampler != "grid":
                raise
            # A suggested value the space's grid does not hold: the space's declaration is wrong.
            raise ConfigError(f"--sampler grid: the space {args.recipe!r}: {e}") from None


def _report(args, storage_url, study_dir):
    """--report: the study's table and plots; a study that is not in the database is refused,
    never made."""
    import optuna

    from experiments.search_report import report
    from mlp.config import ConfigError, check_writable_dir

    database = Path(args.logdir) / DEFAULT_DATABASE
    if not args.storage and not database.is_file():
        raise ConfigError(f"--report: no study database {database}; give the --logdir the "
                          "search ran with, or its --storage")
    storage = open_storage(storage_url, args)
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    if args.study_name not in names:
        raise ConfigError(f"--report: no study {args.study_name!r} in "
                          f"{without_password(storage_url)} (it holds: "
                          f"{', '.join(names) or 'none'})")
    check_writable_dir(study_dir, "logdir")
    report(optuna.load_study(study_name=args.study_name, storage=storage), study_dir)
    return 0


def _storage_error(error, url):
    from mlp.data import DataError

    return DataError(f"--storage: the database {without_password(url)} failed: "
                     f"{redact(_first_line(error), url)}")


def _state_counts(study):
    from collections import Counter

    counts = Counter(trial.state.name.lower() for trial in study.get_trials(deepcopy=False))
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials"


def _has_complete(study):
    from optuna.trial import TrialState

    return any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


class _Diverged(Exception):
    """A trial whose loss stopped being finite: failed, the study goes on."""


class _TakenOver(Exception):
    """The trial was failed by another process that found it stale: it is no longer ours."""


class Objective:
    """One trial: its run, trained and reported as every experiment's; returns the validation
    accuracy of the chosen weights."""

    def __init__(self, args, space, overrides, study_dir, guard):
        self.args = args
        self.space = space
        self.overrides = overrides
        self.study_dir = study_dir
        self.guard = guard
        self.splits = None
        self.trials = 0
        self.taken_over = False  # the last trial was failed by another process (see _optimize)

    def __call__(self, trial):
        import optuna

        from mlp.signals import Interrupted

        self.trials += 1
        continue_with = "the same search command"
        try:
            self.guard.check("stopped before the trial started", continue_with)
            results = self._train(trial, continue_with)
        except Interrupted:
            # Back in the queue: the same command continues it from its checkpoint.
            optuna.storages.RetryHeartbeatStaleTrialCallback()(trial.study, _frozen(trial))
            raise
        # Frozen after its last report and found stale meanwhile: the study has its retry.
        if _frozen(trial).state.is_finished():
            self.taken_over = True
            print(f"trial {trial.number}: finished, but another process had taken it for dead "
                  f"and queued it again; its run is kept in {trial.user_attrs['run_dir']}",
                  flush=True)
            raise _TakenOver("finished after it was taken over")
        for key in ("test_accuracy", "epochs_run", "train_seconds"):
            trial.set_user_attr(key, results[key])
        print(f"trial {trial.number}: validation {results['validation_accuracy']:.4f}  test "
              f"{results['test_accuracy']:.4f}  epochs {results['epochs_run']}  training "
              f"{results['train_seconds']:.1f}s", flush=True)
        return results["validation_accuracy"]

    def _train(self, trial, continue_with):
        import optuna

        from mlp import data as data_lib
        from mlp import run_directory
        from mlp.actions import ReportToTrialAction, TrialPruned, TrialTakenOver
        from mlp.cli import train_run
        from mlp.exits import NonFiniteLoss

        config = trial_config(self.space, self.overrides, trial, self.study_dir, self.args.recipe)
        retried = retried_trial(trial)
        run_dir, lock, how = claim_trial_run(self.study_dir, trial, retried)
        config = dataclasses.replace(config, run_name=run_dir.name)
        trial.set_user_attr("run_dir", str(run_dir))
        with lock:
            exists = (run_dir / "config.json").exists()
            config, run_dir, _ = run_directory.prepare("search", config, exists,
                                                set(config.result_fields()))
            if not exists:
                run_directory.save_config(run_dir, config)
            what = "resuming" if exists else "training"
            print(f"trial {trial.number}: {what} in {run_dir}: {trial.params}"
                  + (f" ({how})" if how else ""), flush=True)
            self.splits = self.splits or data_lib.load(config.data_dir, config.verify_checksums,
                                                       config.validation_size)
            try:
                return train_run("search", config, run_dir, resume=exists, splits=self.splits,
                                 out=io.StringIO(), continue_with=continue_with,
                                 extra_records=[ReportToTrialAction(trial)],
                                 labels={"study": self.args.study_name, "trial": trial.number})
            except TrialPruned as e:
                print(f"trial {trial.number}: pruned after epoch {e.epoch}", flush=True)
                raise optuna.TrialPruned(str(e)) from None
            except TrialTakenOver as e:
                self.taken_over = True
                print(f"trial {trial.number}: stopped after epoch {e.epoch}: this process sent "
                      f"no heartbeat for over {self.args.grace_period} s (frozen?), so another "
                      f"one took the trial for dead and queued it again; its run is kept in "
                      f"{run_dir}", flush=True)
                raise _TakenOver(str(e)) from None
            except NonFiniteLoss as e:
                trial.set_user_attr("fail_reason", str(e))
                print(f"trial {trial.number}: failed: {e}", flush=True)
                raise _Diverged(str(e)) from None

    def finished(self, study, trial):
        """After each trial: stop this process at once if a signal came meanwhile."""
        if self.guard.signum is not None:
            study.stop()


if __name__ == "__main__":
    sys.exit(main())
