"""Ablation: what each technique of a recipe is worth, over several seeds.

--recipe NAME takes a recipe apart with the variants declared beside it in experiments/recipes.py:
improved (one technique removed at a time, the baseline, and SAM, mixup/cutmix or Lookahead
added) or best (one ingredient removed at a time, label smoothing put back, and SAM,
mixup/cutmix or Lookahead added).

Every run is an ordinary run directory under <logdir>/<study-name>/ (TensorBoard scalars,
hparams, images, results.json), trained by the same code path as the experiments. Re-running the
same command skips finished runs and resumes interrupted ones from their last checkpoint, after
checking that their saved config is the one planned. Model selection uses validation data only;
each run touches the test set once, at its end. Writes ablation.json and ablation.md (mean +- std
over seeds, change against the full recipe sorted by effect, with its 95% interval over the
paired seeds -- "within noise" when it contains 0 -- and the p of a bootstrap over seeds and
test images together; the test set's binomial sampling error under the table) and prints the
table.

Sweeps on many machines: --list-commands prints one command per (variant, seed) run for any job
scheduler; each run locks its directory while it trains, so two workers never train the same run
(the second skips it); --report-only aggregates whatever has finished. The locks are POSIX
advisory locks: on NFS mounted without a lock manager they exclude nothing (docs/distributed.md).

    python -m experiments.ablation [--recipe improved|best] [--seeds 3] [--quick] [--help]
"""

import argparse
import dataclasses
import shlex
import statistics
import sys
from pathlib import Path

from experiments.recipes import ABLATIONS
from experiments.study import (MEASURES_NOTE, add_study_arguments, add_study_name_argument,
                               correct_on_test, mean_measures, mean_measures_table,
                               paired_comparison, refuse_renamed_flags, shortened, study_overrides)
from mlp.cli import Parser
from mlp.significance import p_text

FULL = "full recipe"
# For a recipe that averages each test image with its mirror: the full recipe's own runs, evaluated
# on the plain images only (no retraining: every run records both).
NO_TEST_TIME_VIEWS = "no test-time views (the full recipe's runs, plain images)"
PROG = "python -m experiments.ablation"


def study_variants(study):
    """{variant name: Config}: the full recipe first, then the variants declared beside it."""
    full, variants = ABLATIONS[study]
    return {FULL: full, **variants()}


def slug(name):
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def summarize(records):
    """Per variant: mean and std over seeds of the final metrics, and the change in mean test
    accuracy against the full recipe (None when the study has no full recipe); sorted by that
    change, most harmful removal first."""
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
                     "epochs_run": stats("epochs_run"), "train_seconds": stats("train_seconds"),
                     # The flip row's runs are the full recipe's: their measures are its.
                     "measures": ({} if name == NO_TEST_TIME_VIEWS or not all(
                         run.get("run_dir") for run in runs) else mean_measures(runs))})
    full = next((row for row in rows if row["variant"] == FULL), None)
    for row in rows:
        row["change_vs_full"] = (row["test_accuracy"]["mean"] - full["test_accuracy"]["mean"]
                                 if full else None)
        row.update(_significance(records, row["variant"]) if full and row is not full
                   else {"paired_seeds": None, "mean_change": None, "change_interval": None,
                         "within_noise": None, "bootstrap": None})
    rows.sort(key=lambda row: (row["variant"] != FULL, row["change_vs_full"] or 0.0))
    return rows


def _significance(records, variant):
    """Against the full recipe, on the seeds both have (see experiments.study.paired_comparison);
    no bootstrap for the full recipe's own runs seen without test-time views (the same runs:
    their test predictions are the averaged views')."""
    return paired_comparison(records[FULL], records[variant],
                             with_test=variant != NO_TEST_TIME_VIEWS)


def markdown(rows, note, test_examples=None):
    """The table: per variant mean ± std over seeds, the change against the full recipe with
    its 95% interval over the paired seeds ("within noise" when it contains 0) and the p of a
    bootstrap over seeds and test images (mlp/significance.py); under it the test set's own
    sampling error."""
    lines = [note, "",
             "| variant | test accuracy | change vs full | plain images only | "
             "validation accuracy | epochs | training s | seeds | 95% interval of the change | "
             "p (seeds × images) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        t, t1, v, e, s = (row[k] for k in ("test_accuracy", "test_accuracy_single_view",
                                           "validation_accuracy", "epochs_run", "train_seconds"))
        change = ("—" if row["change_vs_full"] is None or row["variant"] == FULL
                  else f"{row['change_vs_full'] * 100:+.2f} pt")
        interval = row.get("change_interval")
        span = "—" if not interval else (
            f"{interval[0] * 100:+.2f} to {interval[1] * 100:+.2f} pt"
            + (" (within noise)" if row.get("within_noise") else ""))
        test = row.get("bootstrap")
        lines.append(f"| {row['variant']} | {t['mean']:.4f} ± {t['std']:.4f} | {change} | "
                     f"{t1['mean']:.4f} ± {t1['std']:.4f} | {v['mean']:.4f} ± {v['std']:.4f} | "
                     f"{e['mean']:.1f} | {s['mean']:.1f} | {len(row['seeds'])} | {span} | "
                     f"{'—' if not test else p_text(test['p'], test['replicates'])} |")
    full = next((row for row in rows if row["variant"] == FULL), None)
    if full and test_examples:
        from mlp.significance import binomial_half_width

        half = binomial_half_width(full["test_accuracy"]["mean"], test_examples)
        lines += ["", f"Test-set sampling error: ±{half * 100:.2f} pt (95%, binomial, "
                      f"{test_examples} test images at the full recipe's accuracy)."]
    measured = [(row["variant"], row["measures"]) for row in rows if row.get("measures")]
    if measured:
        lines += ["", f"Beyond accuracy, means over seeds: {MEASURES_NOTE}.", ""]
        lines += mean_measures_table(measured)
    return "\n".join(lines) + "\n"


def write_chart(study_dir, rows, title, table):
    """The table as a chart: ablation.png beside ablation.md, and both in TensorBoard (the
    study's own event file, under <study>/summary)."""
    import tensorflow as tf

    from mlp.figures import ablation_chart
    from mlp.io import atomic_write_bytes

    chart = ablation_chart(rows, title)
    atomic_write_bytes(study_dir / "ablation.png", tf.io.encode_png(chart[0]).numpy())
    writer = tf.summary.create_file_writer(str(study_dir / "summary"))
    with writer.as_default(step=0):
        tf.summary.image("ablation", chart, description="mean ± std test accuracy per variant")
        tf.summary.text("ablation_table", table)
    writer.close()


def parse(argv):
    parser = Parser(prog=PROG, description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=sorted(ABLATIONS), default="improved",
                        help="which recipe to take apart (default: improved)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="seeds per variant: 0..N-1 (default: 3)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: 3 epochs on the first 10,000 training images")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override every variant's maximum epochs (a shorter schedule)")
    parser.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                        help="run only these variants (by name, as in the table)")
    parser.add_argument("--runs", nargs="+", default=None, metavar="RUN",
                        help="run only these runs, by run directory name (<variant>-seed<N>, as "
                             "--list-commands prints them)")
    parser.add_argument("--list-commands", action="store_true",
                        help="print one command per run of the study (for a job scheduler) and "
                             "exit; the runs can go in any order, on any machines that share "
                             "--logdir")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write and print the table of the runs that have "
                             "finished")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on only the first N training images")
    add_study_arguments(parser)
    add_study_name_argument(parser, "ablation-<recipe> plus -quick, -e<epochs>, -<precision>, "
                                    "-n<subset> for those overrides")
    refuse_renamed_flags(parser, {"--study": "--recipe NAME for the recipe to take apart "
                                             "(--study-name names the study's directory)"})
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    variants = study_variants(args.recipe)
    unknown = set(args.variants or ()) - set(variants)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {sorted(variants)}")
    return parser, args


def plan_study(args, parser):
    """(the study's directory, the overrides every run takes, [(variant, seed, config), ...]).
    Raises ConfigError for a setting no run can take."""
    from mlp.config import check_writable_dir

    variants = study_variants(args.recipe)
    if args.variants:
        variants = {name: variants[name] for name in variants if name in args.variants}
    overrides = {"histograms": False}
    if args.quick:
        overrides.update(epochs=3, train_subset=10_000)
    overrides.update(study_overrides(args, ("epochs", "precision", "data_dir", "validation_size",
                                            "train_subset")))
    # Runs with other settings must not be mistaken for these: the name says what was overridden.
    study_name = args.study_name or "-".join(
        ["ablation", args.recipe] + (["quick"] if args.quick else [])
        + ([f"e{args.epochs}"] if args.epochs else [])
        + ([args.precision] if args.precision else [])
        + ([f"n{args.train_subset}"] if args.train_subset else []))
    study_dir = Path(args.logdir) / study_name
    check_writable_dir(study_dir, "logdir")
    plan = []
    for name, config in variants.items():
        for seed in range(args.seeds):
            run_name = f"{slug(name)}-seed{seed}"
            plan.append((name, seed, shortened(dataclasses.replace(
                config, seed=seed, logdir=str(study_dir), run_name=run_name,
                **overrides)).validate()))
    if args.runs:
        unknown = set(args.runs) - {config.run_name for _, _, config in plan}
        if unknown:
            parser.error(f"unknown runs {sorted(unknown)}; --list-commands lists them")
        plan = [entry for entry in plan if entry[2].run_name in args.runs]
    return study_dir, overrides, plan


def report(args, plan, records, study_dir, overrides):
    """Write ablation.json, ablation.md and ablation.png of the finished runs; print the table."""
    from mlp.io import atomic_write_json, atomic_write_text

    finished_runs = sum(len(runs) for runs in records.values())
    full_config = next((config for name, _, config in plan if name == FULL), None)
    if FULL in records and (full_config.test_time_flip or full_config.test_time_shifts):
        records[NO_TEST_TIME_VIEWS] = [{**run, "test_accuracy": run["test_accuracy_single_view"]}
                                      for run in records[FULL]]
    rows = summarize(records)
    shortened = " (shortened schedule)" if (args.quick or args.epochs) else ""
    partial = (f" {finished_runs} of {len(plan)} runs finished." if finished_runs < len(plan)
               else "")
    note = (f"Ablation of `{args.recipe}`{shortened}: mean ± std over seeds "
            f"{', '.join(map(str, range(args.seeds)))}; test accuracy measured once per run at its "
            f"end; overrides {overrides}.{partial}")
    atomic_write_json(study_dir / "ablation.json", {"recipe": args.recipe, "overrides": overrides,
                                                    "seeds": args.seeds, "rows": rows})
    table = markdown(rows, note, _test_examples(records))
    atomic_write_text(study_dir / "ablation.md", table)
    write_chart(study_dir, rows, f"ablation of {args.recipe}{shortened}", table)
    print("\n" + table)


def _test_examples(records):
    """How many test images the study's runs were scored on (from any run's predictions)."""
    for runs in records.values():
        for run in runs:
            correct = correct_on_test(run)
            if correct is not None:
                return len(correct)
    return None


def main(argv=None):
    from mlp.exits import run_guarded
    from mlp.signals import SignalGuard

    argv = sys.argv[1:] if argv is None else list(argv)
    parser, args = parse(argv)
    with SignalGuard() as guard:
        return run_guarded(PROG, _main, argv, parser, args, guard)


def _main(argv, parser, args, guard):
    from experiments.study import run_and_report

    study_dir, overrides, plan = plan_study(args, parser)
    if args.list_commands:
        base = [word for word in argv if word != "--list-commands"]
        for _, _, config in plan:
            print(shlex.join(["python", "-m", "experiments.ablation", *base, "--runs",
                              config.run_name]))
        return 0
    return run_and_report(PROG, "ablation", plan, study_dir, guard, args.report_only,
                          lambda records: report(args, plan, records, study_dir, overrides),
                          ["ablation.json", "ablation.md", "ablation.png"])


if __name__ == "__main__":
    sys.exit(main())
