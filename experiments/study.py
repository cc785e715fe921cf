"""Run a planned list of runs, as the ablation and the speedrun do: each run an ordinary run
directory trained by the experiments' code path; finished runs are skipped, interrupted ones
resumed after checking that their saved config is the one planned, and a run another process
holds (its directory's lock) is left to it."""

import argparse
import contextlib
import dataclasses
import functools
import io
import statistics
from pathlib import Path

from mlp.config import PRECISIONS, is_plain_name


def study_name(text):
    """The argparse type of --study-name: one plain directory name."""
    if not is_plain_name(text):
        raise argparse.ArgumentTypeError(f"must be a plain directory name, got {text!r}")
    return text


def add_study_name_argument(parser, default, also=""):
    """--study-name, the one flag every study names itself by: its directory under --logdir
    (`also` says what else the name is)."""
    parser.add_argument("--study-name", type=study_name, default=None, metavar="NAME",
                        help=f"the study's directory under --logdir{also} (default: {default}); "
                             "the same name continues the same study")


class _Renamed(argparse.Action):
    def __init__(self, option_strings, dest, new, **kwargs):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} was renamed: use {self.new}")


def refuse_renamed_flags(parser, renamed):
    """Flags that earlier versions spelt otherwise, {old: what to use now}: each is refused with
    one line naming its new spelling, never read with another meaning."""
    for old, new in renamed.items():
        parser.add_argument(old, action=_Renamed, new=new, dest=f"renamed_{old.strip('-')}")


def add_study_arguments(parser):
    """The flags every study shares: where the data is, where the runs go, and the overrides
    every run of the study takes (see `study_overrides`)."""
    parser.add_argument("--precision", default=None, choices=PRECISIONS,
                        help="override every run's precision (default: the recipe's)")
    parser.add_argument("--data-dir", default=None, help="directory of the four IDX files")
    parser.add_argument("--no-verify-checksums", action="store_true",
                        help="accept IDX files other than the published ones (tests)")
    parser.add_argument("--validation-size", type=int, default=None,
                        help="override the validation split size (tests)")
    parser.add_argument("--logdir", default="tensorboard_logs", help="(default: tensorboard_logs)")
    parser.add_argument("--no-sharpness", dest="sharpness", action="store_false",
                        help="leave out each run's sharpness measurement (a second or two per "
                             "run; measured by default in a study)")
    parser.add_argument("--no-figures", dest="figures", action="store_false",
                        help="leave out each run's pictures for TensorBoard (about a second per "
                             "run; their tables and numbers are written either way)")


def study_overrides(args, keys=("precision", "data_dir", "validation_size")):
    """{config field: value} for each of `keys` given on the command line, --no-verify-checksums
    and --no-figures; and whether the runs measure their sharpness (--no-sharpness) and
    corrupted accuracy (always)."""
    overrides = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    if args.no_verify_checksums:
        overrides["verify_checksums"] = False
    if not args.figures:
        overrides["figures"] = False
    # A study compares its runs' measures, sharpness among them (a run alone leaves it out).
    overrides["sharpness"] = args.sharpness
    overrides["corruptions"] = True
    return overrides


def run_and_report(prog, name, plan, study_dir, guard, report_only, write_report, written):
    """A study's whole course: `run_plan`, then `write_report(records)` of the finished runs, then
    one line naming the files `written` in study_dir and the time taken. Returns the exit code."""
    import time

    started = time.perf_counter()
    code, records = run_plan(prog, name, plan, study_dir, guard, f"the same {name} command",
                             report_only=report_only)
    if code:
        return code
    if not records:
        print(f"no finished runs in {study_dir} yet")
        return 0
    write_report(records)
    print(f"wrote {', '.join(written)} in {study_dir} in "
          f"{time.perf_counter() - started:.0f}s")
    return 0


def run_plan(prog, name, plan, study_dir, guard, continue_with, report_only=False):
    """For the study `prog` (runs named after `name`): train (or, with `report_only`, only read)
    each (variant, seed, config) of `plan`, whose run directories are
    <study_dir>/<config.run_name>. Returns (exit code, {variant: [record, ...]}), a record being a
    finished run's seed and final figures; stops at the first run that fails, whose one line is
    printed. Raises ConfigError or DataError (mlp/exits.py) for a run that cannot start."""
    from mlp import run_directory
    from mlp.cli import train_run
    from mlp.config import ConfigError
    from mlp.exits import HANDLED, exit_code
    from mlp.io import read_json
    from mlp.lock import DirectoryInUse

    splits = None
    records = {}
    for index, (variant, seed, config) in enumerate(plan, 1):
        guard.check("stopped between runs; every finished run is kept", continue_with)
        label = f"[{index}/{len(plan)}] {variant}, seed {seed}"
        run_dir = study_dir / config.run_name
        lock = contextlib.nullcontext()
        try:
            if not report_only:
                # Lock first, then look: what another worker finished meanwhile is not redone.
                lock = run_directory.claim(run_dir)
            # As `--resume` of an experiment: a saved config must be the planned one.
            exists = (run_dir / "config.json").exists()
            config, run_dir, finished = run_directory.prepare(name, config, exists,
                                                              set(config.result_fields()))
            if not finished and not report_only and splits is None:
                splits = _load_for(plan)  # before the first run that trains writes anything
            if not exists and not report_only:
                run_directory.save_config(run_dir, config)
        except DirectoryInUse:
            print(f"{label}: in use by another process, skipped", flush=True)
            continue
        except ConfigError as e:
            lock.__exit__(None, None, None)
            raise ConfigError(f"{label}: {e}") from None
        with lock:
            if finished:
                print(f"{label}: finished before, skipped", flush=True)
            elif report_only:
                print(f"{label}: not finished", flush=True)
                continue
            else:
                print(f"{label}: {'resuming' if exists else 'training'} in {run_dir}", flush=True)
                # The study prints one line per run; a run's per-epoch lines go nowhere.
                # A run that fails ends the study with its one line; the finished ones are kept.
                try:
                    train_run(name, config, run_dir, resume=exists, splits=splits,
                              out=io.StringIO(), continue_with=continue_with)
                except HANDLED as error:
                    return exit_code(prog, error), records
        try:
            results = read_json(run_dir / "results.json")
            float(results["test_accuracy"])
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{label}: {run_dir / 'results.json'} is damaged ({e}); delete it "
                              "and run the same command to report the run again") from None
        records.setdefault(variant, []).append({"seed": seed, "run_dir": str(run_dir), **{
            k: results[k] for k in (
                "test_accuracy", "validation_accuracy", "epochs_run", "train_seconds")},
            "precision": results.get("precision"),
            "whitening_seconds": results.get("whitening_seconds", 0.0),
            # Runs from before test-time views existed were all single-view.
            "test_accuracy_single_view": results.get("test_accuracy_single_view",
                                                     results["test_accuracy"])})
        print(f"    test {results['test_accuracy']:.4f}  validation "
              f"{results['validation_accuracy']:.4f}  epochs {results['epochs_run']}  "
              f"training {results['train_seconds']:.1f}s", flush=True)
    return 0, records


def _load_for(plan):
    """The data the runs of `plan` train on, once every planned training size is checked to
    fit it: a plan that cannot finish is refused before its first run trains."""
    from mlp import data as data_lib
    from mlp.config import ConfigError

    first = plan[0][2]
    splits = data_lib.load(first.data_dir, first.verify_checksums, first.validation_size)
    available = len(splits.train_images)
    too_large = sorted({config.train_subset for _, _, config in plan
                        if config.train_subset > available})
    if too_large:
        raise ConfigError(f"--train-subset: {', '.join(f'{m:,}' for m in too_large)} "
                          f"{'is' if len(too_large) == 1 else 'are'} more than the "
                          f"{available:,} training images (the rest are validation); nothing "
                          "was trained: give smaller sizes")
    return splits


def shortened(config):
    """`config` with its warm-up cut to at most a tenth of its epochs: cosine schedules and
    warm-up are defined over --epochs, so a study that shortens one shortens both."""
    if config.lr_schedule != "cosine":
        return config
    return dataclasses.replace(config, warmup_epochs=min(config.warmup_epochs, config.epochs / 10))


def paired_comparison(base_runs, runs, with_test=True, correct=None):
    """`runs` against `base_runs` (records as `run_plan` returns them) on the seeds both have:
    {"paired_seeds": how many, "mean_change": the mean paired change in test accuracy,
    "change_interval": [low, high] its 95% t-interval, "within_noise": whether it contains 0,
    "bootstrap": mlp.significance.bootstrap_change over the seeds and the test images (where
    every run's right/wrong test images are known: `correct(run)`, by default from its
    test_predictions.npz)}; None where not enough."""
    from mlp.significance import bootstrap_change, paired_interval

    correct = correct or correct_on_test
    base = {run["seed"]: run for run in base_runs}
    pairs = [(base[run["seed"]], run) for run in runs if run["seed"] in base]
    changes = [run["test_accuracy"] - first["test_accuracy"] for first, run in pairs]
    interval = paired_interval(changes)
    right = [correct(first) for first, _ in pairs], [correct(run) for _, run in pairs]
    test = None
    if with_test and pairs and all(c is not None for c in right[0] + right[1]):
        test = bootstrap_change(*right)
    return {"paired_seeds": len(pairs),
            "mean_change": sum(changes) / len(changes) if changes else None,
            "change_interval": list(interval[1:]) if interval else None,
            "within_noise": interval[1] <= 0 <= interval[2] if interval else None,
            "bootstrap": test}


def correct_on_test(run):
    """Which test images the run (a record of `run_plan`) classified right, from its
    test_predictions.npz; None if the run has none."""
    return correct_in(run["run_dir"]) if run.get("run_dir") else None


@functools.lru_cache(maxsize=None)
def correct_in(run_dir):
    """Which test images the run in `run_dir` classified right (its test_predictions.npz), or
    None. A study compares one run with several others: each file is read once."""
    import numpy as np

    path = Path(run_dir) / "test_predictions.npz"
    if not path.is_file():
        return None
    saved = np.load(path)
    return saved["probabilities"].argmax(axis=1) == saved["labels"]


# What a run reports beyond accuracy, by its path in results.json.
MEASURES = {
    "test_accuracy": ("test_accuracy",),
    "test_accuracy_single_view": ("test_accuracy_single_view",),
    "train_accuracy": ("train_accuracy",),
    "generalization_gap": ("generalization_gap",),
    "hessian_top_eigenvalue": ("sharpness", "hessian_top_eigenvalue"),
    "epsilon_sharpness": ("sharpness", "epsilon_sharpness"),
    "ece": ("calibration", "ece"),
    "ece_scaled": ("calibration", "scaled", "ece"),
    "nll": ("calibration", "nll"),
    "temperature": ("calibration", "temperature"),
    "corruption_accuracy": ("corruption_accuracy", "mean"),
    "epochs_run": ("epochs_run",),
    "train_seconds": ("train_seconds",),
}


def measures_of(results):
    """{measure: value} for each of MEASURES a run's results.json (as a dict) holds."""
    out = {}
    for key, path in MEASURES.items():
        value = results
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def mean_measures(runs):
    """{measure: its mean over `runs` (records of `run_plan`)} for each of MEASURES every run's
    results.json has (runs from before a measure existed leave it out)."""
    from mlp.io import read_json

    from mlp.config import ConfigError

    try:
        measured = [measures_of(read_json(Path(run["run_dir"]) / "results.json"))
                    for run in runs]
    except ConfigError:  # a run without its results.json: nothing to average
        return {}
    return mean_of_measures(measured)


def mean_of_measures(measured):
    """{measure: its mean} for each of MEASURES that every one of `measured` ({measure: value},
    one per run) holds."""
    return {key: statistics.fmean(run[key] for run in measured) for key in MEASURES
            if measured and all(key in run for run in measured)}


MEASURES_NOTE = ("the generalization gap (train accuracy on the plain training images minus test "
                 "accuracy), the training loss's top Hessian eigenvalue and ε-sharpness (ε = "
                 "1e-3, in % of 1 + loss; mlp/sharpness.py), test ECE before and after "
                 "temperature scaling, and mean accuracy on the ten corrupted test sets "
                 "(mlp/corruptions.py)")


# The measures beyond accuracy a table shows: (heading, key of MEASURES, format).
MEASURE_COLUMNS = [("gap", "generalization_gap", "+.4f"),
                   ("λ_max", "hessian_top_eigenvalue", ".3g"),
                   ("ε-sharpness", "epsilon_sharpness", ".3g"), ("ECE", "ece", ".4f"),
                   ("ECE (scaled)", "ece_scaled", ".4f"),
                   ("corrupted acc.", "corruption_accuracy", ".4f")]


def mean_measures_table(labelled):
    """Markdown lines of a table of `labelled` [(label, mean_measures dict)], "—" where a
    measure is missing."""
    columns = MEASURE_COLUMNS
    lines = ["| | test acc. | " + " | ".join(name for name, _, _ in columns) + " |",
             "|---" * (len(columns) + 2) + "|"]
    for label, measures in labelled:
        cells = [format(measures[key], spec) if key in measures else "—"
                 for _, key, spec in [("", "test_accuracy", ".4f"), *columns]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines
