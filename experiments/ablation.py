"""Ablation: what each technique of a recipe is worth, over several seeds.

--study improved (default): the improved recipe, and one variant per technique removed (batch
norm, dropout, L2, He init, plateau LR reduction, early stopping), plus the baseline.
--study best: experiments.best, and one variant per ingredient removed.

Every run is an ordinary run directory under <logdir>/<study-name>/ (TensorBoard scalars,
hparams, images, results.json). Re-running the same command skips finished runs and resumes
interrupted ones from their last checkpoint. Model selection uses validation data only; each
run touches the test set once, at its end. Writes ablation.json and ablation.md (mean +- std
over seeds, change against the full recipe, sorted by effect) and prints the table.

    python -m experiments.ablation [--study improved|best] [--seeds 3] [--quick] [--help]
"""

import argparse
import dataclasses
import io
import json
import math
import statistics
import sys
import time
from pathlib import Path

from experiments.baseline import CONFIG as BASELINE
from experiments.best import CONFIG as BEST
from experiments.improved import CONFIG as IMPROVED

FULL = "full recipe"


def improved_variants():
    return {
        FULL: IMPROVED,
        "no batch norm": dataclasses.replace(IMPROVED, batch_norm=False),
        "no dropout": dataclasses.replace(IMPROVED, dropout=0.0),
        "no L2": dataclasses.replace(IMPROVED, l2=0.0),
        "Glorot init": dataclasses.replace(IMPROVED, initializer="glorot_uniform"),
        "constant LR": dataclasses.replace(IMPROVED, lr_schedule="constant"),
        # fixed epochs: the improved recipe's maximum
        "no early stopping": dataclasses.replace(IMPROVED, early_stopping=False),
        "baseline": BASELINE,
    }


def best_variants():
    return {
        FULL: BEST,
        "no augmentation (flip, shift)": dataclasses.replace(BEST, augment_flip=False,
                                                             augment_shift=0),
        "no flip": dataclasses.replace(BEST, augment_flip=False),
        "no shift": dataclasses.replace(BEST, augment_shift=0),
        "no label smoothing": dataclasses.replace(BEST, label_smoothing=0.0),
        "plateau LR + early stopping instead of cosine": dataclasses.replace(
            BEST, lr_schedule="plateau", early_stopping=True, warmup_epochs=0.0),
        "improved widths (512-256-50), dropout 0.2 x2": dataclasses.replace(
            BEST, hidden_sizes=IMPROVED.hidden_sizes, dropout=IMPROVED.dropout,
            dropout_layers=IMPROVED.dropout_layers),
    }


STUDIES = {"improved": improved_variants, "best": best_variants}


def slug(name):
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def summarize(records):
    """Per variant: mean and std over seeds of the final metrics, and the change in mean test
    accuracy against the full recipe; sorted by that change, most harmful removal first."""
    rows = []
    for name, runs in records.items():
        def stats(key):
            values = [run[key] for run in runs]
            return {"mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        rows.append({"variant": name, "seeds": [run["seed"] for run in runs],
                     "test_accuracy": stats("test_accuracy"),
                     "test_accuracy_single_view": stats("test_accuracy_single_view"),
                     "validation_accuracy": stats("validation_accuracy"),
                     "epochs_run": stats("epochs_run"), "train_seconds": stats("train_seconds")})
    full = next((row for row in rows if row["variant"] == FULL), None)
    for row in rows:
        row["change_vs_full"] = (row["test_accuracy"]["mean"] - full["test_accuracy"]["mean"]
                                 if full else math.nan)
    rows.sort(key=lambda row: (row["variant"] != FULL, row["change_vs_full"]))
    return rows


def markdown(rows, note):
    lines = [note, "",
             "| variant | test accuracy | change vs full | without test-time flip | "
             "validation accuracy | epochs | training s | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        t, t1, v, e, s = (row[k] for k in ("test_accuracy", "test_accuracy_single_view",
                                           "validation_accuracy", "epochs_run", "train_seconds"))
        change = "—" if row["variant"] == FULL else f"{row['change_vs_full'] * 100:+.2f} pt"
        lines.append(f"| {row['variant']} | {t['mean']:.4f} ± {t['std']:.4f} | {change} | "
                     f"{t1['mean']:.4f} ± {t1['std']:.4f} | {v['mean']:.4f} ± {v['std']:.4f} | "
                     f"{e['mean']:.1f} | {s['mean']:.1f} | {len(row['seeds'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=sorted(STUDIES), default="improved",
                        help="which recipe to take apart (default: improved)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant: 0..N-1 (default: 3)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: 3 epochs on the first 10,000 training images")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override every variant's maximum epochs (a shorter schedule)")
    parser.add_argument("--precision", default=None,
                        choices=["float32", "mixed_float16", "mixed_bfloat16", "auto"],
                        help="override every variant's precision")
    parser.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                        help="run only these variants (by name, as in the table)")
    parser.add_argument("--data-dir", default=None, help="directory of the four IDX files")
    parser.add_argument("--no-verify-checksums", action="store_true",
                        help="accept IDX files other than the published ones (tests)")
    parser.add_argument("--validation-size", type=int, default=None,
                        help="override the validation split size (tests)")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on only the first N training images")
    parser.add_argument("--logdir", default="tensorboard_logs", help="(default: tensorboard_logs)")
    parser.add_argument("--study-name", default=None,
                        help="the study's directory under --logdir (default: ablation-<study> "
                             "plus -quick, -e<epochs>, -<precision>, -n<subset> for those "
                             "overrides); the same name continues the same study")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    from mlp.config import ConfigError, check_writable_dir

    variants = STUDIES[args.study]()
    if args.variants:
        unknown = set(args.variants) - set(variants)
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}; choose from {sorted(variants)}")
        variants = {name: variants[name] for name in variants if name in args.variants}
    overrides = {"histograms": False}
    if args.quick:
        overrides.update(epochs=3, train_subset=10_000)
    for key in ("epochs", "precision", "data_dir", "validation_size", "train_subset"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.no_verify_checksums:
        overrides["verify_checksums"] = False
    # Runs with other settings must not be mistaken for these: the name says what was overridden.
    study_name = args.study_name or "-".join(
        ["ablation", args.study] + (["quick"] if args.quick else [])
        + ([f"e{args.epochs}"] if args.epochs else [])
        + ([args.precision] if args.precision else [])
        + ([f"n{args.train_subset}"] if args.train_subset else []))
    study_dir = Path(args.logdir) / study_name
    plan = []
    try:
        check_writable_dir(study_dir, "logdir")
        for name, config in variants.items():
            for seed in range(args.seeds):
                run_name = f"{slug(name)}-seed{seed}"
                # Cosine schedules and warm-up are defined over --epochs, so shorten them together.
                config_run = dataclasses.replace(config, seed=seed, logdir=str(study_dir),
                                                 run_name=run_name, **overrides)
                if config_run.lr_schedule == "cosine":
                    config_run = dataclasses.replace(
                        config_run, warmup_epochs=min(config_run.warmup_epochs,
                                                      config_run.epochs / 10))
                plan.append((name, seed, config_run.validate()))
    except ConfigError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2

    from mlp import data as data_lib
    from mlp.io import atomic_write_json, atomic_write_text
    from mlp.run import Interrupted, NonFiniteLoss, Run

    try:
        first = plan[0][2]
        splits = data_lib.load(first.data_dir, first.verify_checksums, first.validation_size)
    except data_lib.DataError as e:
        print(f"{parser.prog}: data error: {e}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    records = {}
    for index, (name, seed, config) in enumerate(plan, 1):
        run_dir = study_dir / config.run_name
        results_path = run_dir / "results.json"
        label = f"[{index}/{len(plan)}] {name}, seed {seed}"
        if results_path.exists():
            print(f"{label}: finished before, skipped", flush=True)
        else:
            resume = (run_dir / "checkpoints" / "checkpoint").exists()
            print(f"{label}: {'resuming' if resume else 'training'} in {run_dir}", flush=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            if not (run_dir / "config.json").exists():
                atomic_write_json(run_dir / "config.json", config.to_dict())
            try:
                # The study prints one line per run; a run's per-epoch lines go nowhere.
                Run(config, run_dir, resume=resume, splits=splits, out=io.StringIO()).train()
            except Interrupted as e:
                print(f"{parser.prog}: {e.args[0].split(';')[0]}; run the same command again to "
                      "continue the study", file=sys.stderr)
                return e.exit_code
            except NonFiniteLoss as e:
                print(f"{parser.prog}: {label} diverged: {e}", file=sys.stderr)
                return 1
        results = json.loads(results_path.read_text())
        records.setdefault(name, []).append({"seed": seed, **{k: results[k] for k in (
            "test_accuracy", "validation_accuracy", "epochs_run", "train_seconds")},
            # Runs from before test-time flipping existed were all single-view.
            "test_accuracy_single_view": results.get("test_accuracy_single_view",
                                                     results["test_accuracy"])})
        print(f"    test {results['test_accuracy']:.4f}  validation "
              f"{results['validation_accuracy']:.4f}  epochs {results['epochs_run']}  "
              f"training {results['train_seconds']:.1f}s", flush=True)

    rows = summarize(records)
    shortened = " (shortened schedule)" if (args.quick or args.epochs) else ""
    note = (f"Ablation of `{args.study}`{shortened}: mean ± std over seeds "
            f"{', '.join(map(str, range(args.seeds)))}; test accuracy measured once per run at its "
            f"end; overrides {overrides}.")
    atomic_write_json(study_dir / "ablation.json", {"study": args.study, "overrides": overrides,
                                                    "seeds": args.seeds, "rows": rows})
    table = markdown(rows, note)
    atomic_write_text(study_dir / "ablation.md", table)
    print("\n" + table)
    print(f"wrote {study_dir / 'ablation.json'} and ablation.md in "
          f"{time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
