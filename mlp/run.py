"""One run, start to end: build the parts, give them to a controller with the recipe's
end-of-epoch actions, train, pick the weights, write the report. Every experiment and every
study's runs go through `train_and_evaluate`; tests use its two halves, `assemble` and `finish`.
(The runnable experiments and studies are the package `experiments`.)
"""

import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from mlp import fused, report
from mlp.actions import (EarlyStoppingAction, EpochSummariesAction, PlateauLRAction,
                         PrintEpochAction, ValidateAction)
from mlp.build import Parts, build
from mlp.checkpointing import Checkpoints
from mlp.config import ConfigError
from mlp.controller import Controller
from mlp.distribute import WorkerRole, check_same_settings
from mlp.io import atomic_write_json, read_json
from mlp.precision import COMPUTE_DTYPES
from mlp.rules import EarlyStoppingRule, PlateauRule
from mlp.signals import SignalGuard
from mlp.summaries import Summaries


@dataclass
class Run:
    """An assembled run: its parts, the controller driving them, and what the end needs."""
    run_dir: Path
    parts: Parts
    controller: Controller
    stopping: object  # the EarlyStoppingAction, or None
    summaries: object  # mlp.summaries.Summaries on the chief, else None
    role: WorkerRole
    resumed: bool
    labels: dict  # extra hparams and results.json entries (e.g. a search's study and trial)


def assemble(config, run_dir, strategy=None, resume=False, splits=None, out=None,
             role=WorkerRole(), resume_hint="the same command plus --resume", extra_records=(),
             labels=None):
    """Build `config`'s parts under `strategy` and a controller with the recipe's actions (and
    `extra_records`, record actions of the caller's, last), restored from `run_dir`'s last
    checkpoint if `resume`. `labels` ({name: value}) go into the hparams and results.json."""
    run_dir = Path(run_dir)
    kernels = _auto_choice(config, run_dir, "kernels", fused.RESOLVED, resume)
    kernels_lost = None
    if resume and (kernels or config.kernels) == "fused":
        # A run that trained on the fused kernels continues where they cannot be built (no
        # compiler, a GPU) on TensorFlow's ops, rather than not at all (see
        # _continued_without_fused_kernels).
        kernels, _, kernels_lost = fused.resolve("auto")
        kernels_lost = kernels_lost if kernels == "tensorflow" else None
    parts = build(config, strategy, splits,
                  _auto_choice(config, run_dir, "precision", COMPUTE_DTYPES, resume), kernels)
    check_same_settings(parts.strategy, {**config.result_fields(), "kernels": parts.kernels,
                                         "precision": parts.precision}, role.count)
    if role.is_chief:
        _record_auto_choice(config, run_dir, "precision", parts.precision,
                            probe=parts.precision_probe)
        _record_auto_choice(config, run_dir, "kernels", parts.kernels, note=parts.kernels_note)
    with parts.strategy.scope():
        decisions = [ValidateAction(parts.evaluator, parts.evaluation_batches(
            parts.splits.validation_images, parts.splits.validation_labels))]
        stopping = None
        if config.early_stopping:
            stopping = EarlyStoppingAction(parts.model, EarlyStoppingRule(
                config.early_stopping_patience, config.early_stopping_min_delta,
                config.early_stopping_start_epoch, restore_best_weights=True))
            decisions.append(stopping)
        if config.lr_schedule == "plateau":
            decisions.append(PlateauLRAction(parts.trainer, PlateauRule(
                config.plateau_factor, config.plateau_patience, config.plateau_min_delta,
                config.plateau_cooldown, config.min_learning_rate)))
    trackables = {"trainer": parts.trainer}
    if stopping:
        trackables["best_weights"] = stopping.best_weights
    # Outside the scope: the loop's state is a string, which a strategy cannot mirror.
    checkpoints = Checkpoints(run_dir / "checkpoints", role.is_chief, **trackables)
    summaries = Summaries(run_dir) if role.is_chief else None
    records = ([EpochSummariesAction(summaries, parts.model, config.histograms)]
               if summaries else [])
    records.append(PrintEpochAction(config.epochs, out))
    records.extend(extra_records)
    controller = Controller(parts.trainer, parts.training_batches, parts.steps_per_epoch,
                            config.epochs, checkpoints, decisions, records, out,
                            config.steps_per_loop, resume_hint,
                            keep_iterator=config.strategy == "multi_worker")
    resumed = bool(resume and controller.restore())
    if kernels_lost and role.is_chief:
        _continued_without_fused_kernels(run_dir, controller.state.epochs_done, kernels_lost)
    return Run(run_dir, parts, controller, stopping, summaries, role, resumed, dict(labels or {}))


def _continued_without_fused_kernels(run_dir, epochs_done, why):
    """Say, and record in kernels.json, that a run trained on the fused kernels goes on with
    TensorFlow's ops: its dropout masks from here on are other random draws (Philox instead of
    the kernels' hash), so it will not end with the weights an uninterrupted run would have."""
    print(f"warning: this run trained on the fused kernels, which cannot be used here ({why}); "
          f"it continues after epoch {epochs_done} on TensorFlow's ops, whose dropout masks are "
          "other random draws, so it will not end exactly as an uninterrupted run would",
          file=sys.stderr, flush=True)
    path = run_dir / "kernels.json"
    recorded = read_json(path) if path.exists() else {"kernels": "fused"}
    changes = recorded.get("continued_on_tensorflow_ops", [])
    atomic_write_json(path, {**recorded, "continued_on_tensorflow_ops": [
        *changes, {"after_epoch": epochs_done, "why": why}]})


def _auto_choice(config, run_dir, name, valid, resume):
    """What `auto` chose for the setting `name` when this run started (<run_dir>/<name>.json),
    so that a resumed run keeps it; None to choose now."""
    path = run_dir / f"{name}.json"
    if getattr(config, name) != "auto" or not resume or not path.exists():
        return None
    recorded = read_json(path)
    value = recorded.get(name) if isinstance(recorded, dict) else None
    if value not in valid:
        raise ConfigError(f"{path}: names no {name}; restore it, or delete it to choose again")
    return value


def _record_auto_choice(config, run_dir, name, value, **details):
    path = run_dir / f"{name}.json"
    if getattr(config, name) == "auto" and not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {name: value, **details})


def finish(run):
    """Train the assembled run to its end, put the chosen weights (the best epoch's with early
    stopping, else the last, averaged if EMA is on) in the model, and report; returns the
    results dict. The chief writes results.json last, so its presence means a finished run.
    A signal during the report lets the report finish (seconds) and is then only noted."""
    with SignalGuard() as guard:
        try:
            state = run.controller.train()
        except BaseException:
            # Whatever stopped the training (a signal, a pruned trial, an error), the epochs
            # already logged reach the event files.
            if run.summaries:
                run.summaries.close()
            raise
        guard.check("the training is finished and checkpointed, the final report not yet "
                    "written", run.controller.resume_hint)
        results = _report(run, state)
    if guard.signum is not None:
        print(f"{signal.Signals(guard.signum).name} came during the final report, which "
              "finished first", file=sys.stderr, flush=True)
    return results


def _report(run, state):
    best_epoch = run.stopping.restore_best() if run.stopping else None
    if best_epoch is None:
        best_epoch = len(state.history)
        run.parts.trainer.use_averaged_weights()
    results, test = report.results(run.parts, state, best_epoch, run.role.count)
    results.update(run.labels)
    if run.summaries:
        report.write(run.summaries, results, test, run.parts.splits, run.labels,
                     pictures=run.parts.config.figures)
        report.write_predictions(run.run_dir, test, run.parts.splits)
        run.summaries.close()
        atomic_write_json(run.run_dir / "results.json", results)
    return results


def train_and_evaluate(config, run_dir, strategy=None, resume=False, splits=None, out=None,
                       role=WorkerRole(), name="run", resume_hint="the same command plus --resume",
                       extra_records=(), labels=None):
    """One run, start to end; returns the results dict (results.json's). The steps:

    1. `assemble`: build the parts (data, model, optimizer, trainer, evaluator; mlp/build.py)
       and a controller with the recipe's end-of-epoch actions, restored from the last
       checkpoint if `resume`;
    2. say what is about to happen, in one line;
    3. `finish`: the controller trains to the end (mlp/controller.py), the chosen weights go
       into the model, and mlp/report.py evaluates and writes results.json.

    A signal stops it at the next point that loses nothing (between these steps, or at a step
    boundary inside the training); the caller's edge turns what it raises into one line and an
    exit code (mlp/exits.py)."""
    with SignalGuard() as guard:
        run = assemble(config, run_dir, strategy, resume, splits, out, role, resume_hint,
                       extra_records, labels)
        guard.check("stopped before training (re)started, nothing new to save", resume_hint)
        print(_start_line(run, config, name), file=out, flush=True)
        return finish(run)


def _start_line(run, config, name):
    parts = run.parts
    chosen = ""
    if parts.precision_probe:
        chosen = " chosen by probe: " + ", ".join(
            f"{p} {seconds * 1e3:.2f} ms" for p, seconds in parts.precision_probe.items())
    kernels = f"{parts.kernels} kernels" + (f" (fused: {parts.kernels_note})"
                                            if parts.kernels_note else "")
    return (f"{'resuming' if run.resumed else 'training'} {name} -> {run.run_dir} "
            f"({parts.precision}{chosen}, {kernels}, {config.strategy} x{parts.replicas}, "
            f"{len(parts.train_labels)} training images, {parts.steps_per_epoch} steps per "
            "epoch)")
