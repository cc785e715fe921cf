"""A run directory's life: its name, its lock, its config.json, the leftovers of a killed
process, and which directory `--resume` continues. Every experiment and every study's run goes
through here, so a run directory means the same thing whoever made it.

    config, run_dir, finished = prepare(name, config, resume, explicit, role)
    with claim(run_dir):                           # the lock, and a killed process's leftovers gone
        save_config(run_dir, config)               # a new run's
        ...                                        # train
"""

import dataclasses
import shutil
import time
from pathlib import Path

from mlp.config import Config, ConfigError, check_writable_dir
from mlp.distribute import WorkerRole
from mlp.exits import CannotWrite
from mlp.io import atomic_write_json, read_json
from mlp.lock import DirectoryLock


def prepare(name, config, resume, explicit, role=WorkerRole()):
    """Return (config, run_dir, finished) for a new run or a resumed one, or raise ConfigError.

    A new run's directory is made here (so two runs never get the same default name); a worker
    that is not the chief only reads: the chief makes and writes the run directory."""
    logdir = Path(config.logdir)
    if config.strategy == "multi_worker" and not config.run_name:
        raise ConfigError("--run-name: multi_worker runs need one, the same on every worker")
    if not resume:
        run_name = config.run_name or new_run_name(logdir, name)
        run_dir = logdir / run_name
        if role.is_chief and (run_dir / "config.json").exists():
            raise ConfigError(f"--run-name: {run_dir} already holds a run; pass --resume to "
                              "continue it or choose another --run-name")
        return dataclasses.replace(config, run_name=run_name), run_dir, False
    if config.run_name:
        run_dir = logdir / config.run_name
    else:
        candidates = sorted((p for p in logdir.glob(f"{name}-*") if (p / "config.json").exists()),
                            key=lambda p: _started(p, name))
        if not candidates:
            raise ConfigError(f"--resume: no run of {name} in {logdir} to resume")
        run_dir = candidates[-1]
    if not (run_dir / "config.json").exists():
        raise ConfigError(f"--resume: no run to resume in {run_dir}")
    saved = read_json(run_dir / "config.json")
    if not isinstance(saved, dict):
        raise ConfigError(f"{run_dir / 'config.json'}: not a JSON object of settings; restore "
                          "it or start a new run")
    saved = Config.with_older_runs({**saved, "run_name": run_dir.name})
    given = config.to_dict()
    differ = [key for key in sorted(explicit) if key in Config().result_fields()
              and given[key] != saved.get(key)]
    if differ:
        details = ", ".join(f"--{key.replace('_', '-')} {given[key]} (saved: {saved.get(key)})"
                            for key in differ)
        raise ConfigError(f"--resume: the run in {run_dir} was made with other settings: "
                          f"{details}; resume with its settings or start a new run")
    merged = {**saved, **{key: given[key] for key in explicit if key in given}}
    merged["logdir"] = config.logdir
    return (Config.from_dict(merged, run_dir / "config.json"), run_dir,
            (run_dir / "results.json").exists())


def finished_line(run_dir):
    """What to say about a finished run (its results.json read strictly)."""
    results = read_json(run_dir / "results.json")
    accuracy = results.get("test_accuracy") if isinstance(results, dict) else None
    if not isinstance(accuracy, (int, float)):
        raise ConfigError(f"{run_dir / 'results.json'}: has no test_accuracy; it was edited or "
                          "damaged: restore it, or delete it and resume to report again")
    return f"{run_dir} already finished (test accuracy {accuracy:.4f}); nothing to resume"


def _started(run_dir, name):
    """When the run in `run_dir` started, as a sortable key: the time its default name records
    (<name>-YYYYmmdd-HHMMSS, then -2, -3, ... for runs of the same second); for another name the
    time its config.json was written, which for a new run is when it started."""
    stem, _, rest = run_dir.name.partition(f"{name}-")
    parts = rest.split("-")
    if (not stem and len(parts) in (2, 3) and all(p.isdigit() for p in parts)
            and len(parts[0]) == 8 and len(parts[1]) == 6):
        return parts[0] + parts[1], int(parts[2]) if len(parts) == 3 else 1
    written = time.localtime((run_dir / "config.json").stat().st_mtime)
    return time.strftime("%Y%m%d%H%M%S", written), 0


def new_run_name(logdir, name):
    """<name>-<timestamp>, with -2, -3, ... when runs start in the same second: the directory is
    made here, and mkdir fails for all but one of the processes that race for a name."""
    stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    logdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        run_name = stem if attempt == 1 else f"{stem}-{attempt}"
        try:
            (logdir / run_name).mkdir()
            return run_name
        except FileExistsError:
            continue
        except OSError as e:
            raise ConfigError(f"--logdir: cannot create {logdir / run_name}: "
                              f"{e.strerror}") from None
    raise ConfigError(f"--run-name: too many runs named {stem}* in {logdir}; choose a --run-name")


def claim(run_dir):
    """Lock `run_dir` for this process, after checking it can be written, and remove what a
    killed process left there; the lock (a context manager). DirectoryInUse if another process holds
    it. The CLI, the studies and the search all take their runs' directories here."""
    check_writable_dir(run_dir, "logdir")
    lock = DirectoryLock(run_dir)
    remove_leftovers(run_dir)
    return lock


def save_config(run_dir, config):
    """Write a new run's config.json (atomically); CannotWrite if the disk refuses."""
    try:
        atomic_write_json(Path(run_dir) / "config.json", config.to_dict())
    except OSError as e:
        raise CannotWrite(f"{Path(run_dir) / 'config.json'}: {e.strerror}; free space or fix "
                          "permissions, then run the same command again") from None


def remove_leftovers(run_dir):
    """Temporary files a killed process left in the run directory (half-written JSON, a
    checkpoint's unfinished temporary shards). Only call it holding the run's lock."""
    leftovers = [*run_dir.glob(".*.tmp"), *(run_dir / "checkpoints").glob("*_temp*")]
    for path in leftovers:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)  # a link goes, never what it points to
