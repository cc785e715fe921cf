"""Learning curves: what each recipe's test error does as the training set grows, and what its
minimum looks like at each size.

Trains each recipe (default: baseline, improved and best) on the first m training images for
log-spaced m from 1,000 to 55,000 (6 sizes by default), over several seeds, and fits
error(m) = a * m^b + c per recipe (the power law of Hestness et al. 2017: b is how fast more data
helps, c a floor no amount of data removes, where the data show one), with 95% bootstrap intervals
over seeds and test images; a c the fit puts on its bound 0 is reported as not identified, and
no error beyond the sizes trained is predicted from it. Every run is an ordinary run directory under
<logdir>/<study-name>/ trained by the experiments' code path, so each also reports its
calibration, corruption accuracy, sharpness and generalization gap; the study gathers them.

Writes generalization.json ({recipe: {"sizes", "test_error", "fit": {"a", "b", "c",
"intervals", "c_identified"}, ...}}),
learning_curves.png (log-log, with the fits) and generalization.md: test error per size with each
recipe's change against the first recipe (95% paired interval over seeds -- "within noise" when it
contains 0 -- and the p of a bootstrap over seeds and test images), the fitted power laws, and at
the largest size the gap, sharpness, calibration and robustness side by side. Re-running the same
command skips finished runs and resumes interrupted ones.

    python -m experiments.generalization [--recipes baseline improved best] [--seeds 2] [--quick]
"""

import argparse
import dataclasses
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np

from experiments.recipes import RECIPES
from experiments.study import (MEASURES_NOTE, add_study_arguments, add_study_name_argument,
                               correct_on_test, mean_measures, mean_measures_table,
                               paired_comparison, shortened, study_overrides)
from mlp.cli import Parser
from mlp.significance import p_text

PROG = "python -m experiments.generalization"
DEFAULT_RECIPES = ("baseline", "improved", "best")
# --quick is a smoke test of the whole study (under two minutes on a 2-core CPU): three sizes, one
# seed, a few epochs, no sharpness or corrupted test sets.
QUICK_EPOCHS = 3
QUICK_SIZES = (1_000, 2_000, 4_000)


def log_spaced(low, high, count):
    """`count` integers from `low` to `high`, evenly spaced in log(m)."""
    return [int(round(m)) for m in np.geomspace(low, high, count)]


def power_law(m, a, b, c):
    return a * np.power(m, b) + c


def fit_power_law(sizes, errors, start=None):
    """(a, b, c) of error(m) = a m^b + c (a >= 0, -3 <= b <= 0, 0 <= c <= 1) by least squares on
    log(error), so each size weighs by its relative error as on a log-log plot; None for fewer
    than 3 sizes. `start`: a fit of similar data to begin from (the bootstrap's refits)."""
    from scipy.optimize import OptimizeWarning, curve_fit

    sizes, errors = np.asarray(sizes, np.float64), np.asarray(errors, np.float64)
    if len(sizes) < 3:
        return None
    # In units of the smallest size the parameters are of similar scale, which the fit needs.
    unit = sizes.min()
    x = sizes / unit
    floor = 1e-4  # a zero error (a tiny test set) must not be log(0)
    if start is None:
        start = (max(errors[0] - errors.min() * 0.5, 1e-6), -0.5, errors.min() * 0.5)
    else:  # in the units below, and inside the bounds
        start = (max(start["a"] * unit ** start["b"], 1e-6), min(start["b"], -1e-6),
                 min(max(start["c"], 0.0), 1.0 - 1e-6))
    with warnings.catch_warnings():
        # With as many sizes as parameters the fit is exact and has no covariance to estimate.
        warnings.simplefilter("ignore", OptimizeWarning)
        (a, b, c), _ = curve_fit(lambda m, a, b, c: np.log(power_law(m, a, b, c) + floor), x,
                                 np.log(errors + floor), p0=start,
                                 bounds=([0, -3, 0], [np.inf, 0, 1]), maxfev=20_000,
                                 xtol=1e-12, ftol=1e-12)
    return {"a": float(a * unit ** -b), "b": float(b), "c": float(c)}


FIT_REPLICATES = 300
AT_BOUND = 1e-4  # a fitted c this close to its bounds (0, 1) is on them


def fit_with_intervals(sizes, runs_by_size, replicates=FIT_REPLICATES, seed=0):
    """`fit_power_law` of the mean test error at each size, with 95% bootstrap intervals:
    {"a", "b", "c", "intervals": {"a", "b", "c": [low, high]}, "c_identified", "replicates",
    "resampled"}. `runs_by_size[k]` lists the runs at sizes[k] as (test error, boolean array of
    the test images it got right, or None). Each replicate draws every size's seeds with
    replacement and, where every run has its test predictions, the test images with replacement
    (shared by all runs, as they share the test set), and fits again. c is identified only when
    the fit does not put it on a bound: at 0 the data show no floor, only a curve still falling.
    None for fewer than 3 sizes."""
    point = fit_power_law(sizes, [np.mean([e for e, _ in runs]) for runs in runs_by_size])
    if point is None:
        return None
    correct = [[c for _, c in runs] for runs in runs_by_size]
    by_images = all(c is not None for runs in correct for c in runs)
    rng = np.random.default_rng(seed)
    images = len(correct[0][0]) if by_images else 0
    samples = {"a": [], "b": [], "c": []}
    for _ in range(replicates):
        weights = rng.multinomial(images, np.full(images, 1 / images)) if by_images else None
        errors = []
        for runs, right in zip(runs_by_size, correct):
            chosen = rng.integers(0, len(runs), len(runs))
            if by_images:
                errors.append(1 - np.mean([right[k] @ weights for k in chosen]) / images)
            else:
                errors.append(np.mean([runs[k][0] for k in chosen]))
        fit = fit_power_law(sizes, errors, start=point)
        for key in samples:
            samples[key].append(fit[key])
    intervals = {key: [float(v) for v in np.percentile(values, [2.5, 97.5])]
                 for key, values in samples.items()}
    identified = AT_BOUND < point["c"] < 1 - AT_BOUND
    return {**point, "intervals": intervals, "c_identified": bool(identified),
            "replicates": replicates,
            "resampled": "seeds and test images" if by_images else "seeds"}


def parse(argv):
    parser = Parser(prog=PROG, description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES),
                        choices=sorted(RECIPES), metavar="RECIPE",
                        help="recipes to train, the first one the one the others are compared "
                             f"with ({', '.join(sorted(RECIPES))}; default: "
                             f"{' '.join(DEFAULT_RECIPES)})")
    parser.add_argument("--sizes", nargs="+", type=int, default=None, metavar="M",
                        help="training set sizes (default: 6 log-spaced from 1,000 to 55,000; "
                             f"with --quick {', '.join(f'{m:,}' for m in QUICK_SIZES)})")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per size: 0..N-1 (default: 2; with --quick 1)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke test of the study, under two minutes: sizes "
                             f"{', '.join(f'{m:,}' for m in QUICK_SIZES)}, one seed, "
                             f"{QUICK_EPOCHS} epochs for every recipe, no sharpness or "
                             "corrupted test sets")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override every recipe's maximum epochs (a shorter schedule)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write and print the tables of the finished runs")
    add_study_arguments(parser)
    add_study_name_argument(parser, "generalization, plus -quick, -e<epochs>, -<precision> for "
                                    "those overrides")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.quick else 2
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.sizes is not None and min(args.sizes) < 1:
        parser.error("--sizes must be positive")
    if len(set(args.recipes)) != len(args.recipes):
        parser.error("--recipes: each recipe once")
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES) if args.quick else log_spaced(1_000, 55_000, 6)
    args.sizes = sorted(set(args.sizes))
    return parser, args


def plan_study(args):
    """(the study's directory, the overrides every run takes, [(variant, seed, config), ...]),
    a variant being "<recipe> m=<size>"."""
    from mlp.config import check_writable_dir

    overrides = {"histograms": False}
    if args.quick:
        overrides["epochs"] = QUICK_EPOCHS
    overrides.update(study_overrides(args, ("epochs", "precision", "data_dir",
                                            "validation_size")))
    if args.quick:
        overrides.update(sharpness=False, corruptions=False)
    study_name = args.study_name or "-".join(
        ["generalization"] + (["quick"] if args.quick else [])
        + ([f"e{args.epochs}"] if args.epochs else [])
        + ([args.precision] if args.precision else []))
    study_dir = Path(args.logdir) / study_name
    check_writable_dir(study_dir, "logdir")
    plan = []
    for name in args.recipes:
        for size in args.sizes:
            for seed in range(args.seeds):
                config = shortened(dataclasses.replace(
                    RECIPES[name], seed=seed, train_subset=size, logdir=str(study_dir),
                    run_name=run_name(name, size, seed), **overrides))
                plan.append((variant(name, size), seed, config.validate()))
    return study_dir, overrides, plan


def run_name(name, size, seed):
    """The directory of a recipe's run at one size and seed, inside the study's."""
    return f"{name}-m{size}-seed{seed}"


def variant(name, size):
    return f"{name} m={size}"


def _mean_std(values):
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(recipes, sizes, records, fit_replicates=FIT_REPLICATES, correct=correct_on_test,
              measures=mean_measures):
    """{recipe: its curve, fit (its intervals from `fit_replicates` bootstrap fits), per-size
    measures and comparison with the first of `recipes`}. `records`: {variant: [run, ...]};
    `correct(run)`: which test images a run got right, `measures(runs)`: their mean measures
    (by default both read from the runs' directories; a committed record carries its own)."""
    base_name = recipes[0]
    summary = {}
    for name in recipes:
        curve = {"sizes": [], "test_error": [], "test_error_std": [], "seeds": [],
                 "against": base_name, "change_interval": [], "within_noise": [], "p": [],
                 "measures": []}
        for size in sizes:
            runs = records.get(variant(name, size))
            if not runs:
                continue
            mean, std = _mean_std([1 - run["test_accuracy"] for run in runs])
            curve["sizes"].append(size)
            curve["test_error"].append(mean)
            curve["test_error_std"].append(std)
            curve["seeds"].append(len(runs))
            compared = (paired_comparison(records.get(variant(base_name, size), []), runs,
                                          correct=correct)
                        if name != base_name else None)
            curve["change_interval"].append(compared and compared["change_interval"])
            curve["within_noise"].append(compared and compared["within_noise"])
            curve["p"].append(compared and compared["bootstrap"] and compared["bootstrap"]["p"])
            curve["measures"].append(measures(runs))
        if curve["sizes"]:
            curve["fit"] = fit_with_intervals(curve["sizes"], [
                [(1 - run["test_accuracy"], correct(run))
                 for run in records[variant(name, size)]] for size in curve["sizes"]],
                replicates=fit_replicates)
            summary[name] = curve
    return summary


def markdown(base, sizes, summary, note=None, test_examples=None):
    """The study's tables in markdown: test error by size with each recipe's change against
    `base`, the fitted power laws, and the measures at the largest size; `note` first."""
    recipes = list(summary)
    lines = ([note, ""] if note else []) + [
        "Test error (mean ± std over seeds); for each recipe after the first, its change in test "
        f"accuracy against `{base}` at the same size: the 95% interval over the paired seeds and "
        "the p of a bootstrap over seeds and test images (mlp/significance.py).", "",
        "| training images | " + " | ".join(f"{name} error" for name in recipes)
        + "".join(f" | {name} vs {base}" for name in recipes if name != base) + " |",
        "|---" * (1 + len(recipes) + len([n for n in recipes if n != base])) + "|"]
    for size in sizes:
        cells = []
        comparisons = []
        for name in recipes:
            curve = summary[name]
            if size not in curve["sizes"]:
                cells.append("—")
                comparisons.append("—")
                continue
            k = curve["sizes"].index(size)
            cells.append(f"{curve['test_error'][k]:.4f} ± {curve['test_error_std'][k]:.4f}")
            interval, p = curve["change_interval"][k], curve["p"][k]
            comparisons.append(
                "—" if not interval else
                f"{interval[0] * 100:+.2f} to {interval[1] * 100:+.2f} pt"
                + (" (within noise)" if curve["within_noise"][k] else "")
                + ("" if p is None else f", p {p_text(p)}"))
        lines.append(f"| {size:,} | " + " | ".join(cells)
                     + "".join(f" | {c}" for name, c in zip(recipes, comparisons)
                               if name != base) + " |")
    if test_examples:
        from mlp.significance import binomial_half_width

        spread = ", ".join(
            f"±{binomial_half_width(1 - summary[name]['test_error'][-1], test_examples) * 100:.2f}"
            f" pt for {name}" for name in recipes)
        lines += ["", f"Test-set sampling error at the largest size (95%, binomial, "
                      f"{test_examples} test images): {spread}."]
    lines += ["", "Fitted error(m) = a·m^b + c (least squares on the means), with 95% bootstrap "
              "intervals:", "",
              "| recipe | a | b | c | error at 1,000 (fit) | error at 55,000 (fit) |",
              "|---|---|---|---|---|---|"]
    unidentified = []
    for name in recipes:
        fit = summary[name].get("fit")
        if not fit:
            continue
        sizes = summary[name]["sizes"]
        at = lambda m: power_law(m, fit["a"], fit["b"], fit["c"])  # noqa: E731
        spans = {key: fit["intervals"][key] for key in ("a", "b", "c")}

        def predicted(m):
            if (min(sizes) <= m <= max(sizes)) or fit["c_identified"]:
                return f"{at(m):.4f}"
            return "— (beyond the data, c not identified)"

        if not fit["c_identified"]:
            unidentified.append(name)
        lines.append(
            f"| {name} | {fit['a']:.3g} [{spans['a'][0]:.3g}, {spans['a'][1]:.3g}] | "
            f"{fit['b']:.3f} [{spans['b'][0]:.3f}, {spans['b'][1]:.3f}] | "
            f"{fit['c']:.4f} [{spans['c'][0]:.4f}, {spans['c'][1]:.4f}]"
            f"{'' if fit['c_identified'] else ' (not identified)'} | "
            f"{predicted(1000)} | {predicted(55000)} |")
    if unidentified:
        lines += ["", f"c sits on its bound for {', '.join(unidentified)}: the fit cannot tell a "
                      "floor from a curve still falling, so c is not identified, and no error "
                      "beyond the sizes trained is predicted from it."]
    lines += ["", f"At each recipe's largest size, means over seeds: {MEASURES_NOTE}.", ""]
    lines += mean_measures_table([(f"{name} (m = {summary[name]['sizes'][-1]:,})",
                                   summary[name]["measures"][-1]) for name in recipes])
    return "\n".join(lines) + "\n"


def plot(summary, title):
    """Test error against training images, both axes logarithmic: the seeds' mean with its
    std as error bars, and each recipe's fitted power law; a uint8 RGB image [1, H, W, 3]."""
    from mlp.figures import _figure_to_array, _pyplot

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 5), dpi=100)
    for k, (name, curve) in enumerate(summary.items()):
        color = f"C{k}"
        axes.errorbar(curve["sizes"], curve["test_error"], yerr=curve["test_error_std"], fmt="o",
                      color=color, capsize=3, label=name)
        fit = curve.get("fit")
        if fit:
            m = np.geomspace(min(curve["sizes"]), max(curve["sizes"]), 100)
            axes.plot(m, power_law(m, fit["a"], fit["b"], fit["c"]), "--", color=color,
                      label=f"{name}: {fit['a']:.2g}·m^{fit['b']:.2f} + {fit['c']:.3f}")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("training images m")
    axes.set_ylabel("test error")
    axes.set_title(title)
    axes.legend(fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    return _figure_to_array(figure)


def report(args, plan, records, study_dir, overrides):
    import tensorflow as tf

    from mlp.io import atomic_write_bytes, atomic_write_json, atomic_write_text

    summary = summarize(args.recipes, args.sizes, records)
    finished = sum(len(runs) for runs in records.values())
    partial = f" {finished} of {len(plan)} runs finished." if finished < len(plan) else ""
    note = (f"Learning curves{' (quick: shortened schedules)' if args.quick else ''}: "
            f"{', '.join(args.recipes)} on the first m training images, seeds "
            f"{', '.join(map(str, range(args.seeds)))}; overrides {overrides}.{partial}")
    atomic_write_json(study_dir / "generalization.json", summary)
    examples = next((len(correct) for runs in records.values() for run in runs
                     if (correct := correct_on_test(run)) is not None), None)
    table = markdown(args.recipes[0], args.sizes, summary, note, examples)
    atomic_write_text(study_dir / "generalization.md", table)
    image = plot(summary, "learning curves" + (" (quick)" if args.quick else ""))
    atomic_write_bytes(study_dir / "learning_curves.png", tf.io.encode_png(image[0]).numpy())
    writer = tf.summary.create_file_writer(str(study_dir / "summary"))
    with writer.as_default(step=0):
        tf.summary.image("learning_curves", image, description="test error against training "
                         "images, log-log, with the fitted power laws")
        tf.summary.text("generalization_table", table)
    writer.close()
    print("\n" + table)


def main(argv=None):
    from mlp.exits import run_guarded
    from mlp.signals import SignalGuard

    argv = sys.argv[1:] if argv is None else list(argv)
    parser, args = parse(argv)
    with SignalGuard() as guard:
        return run_guarded(PROG, _main, args, guard)


def _main(args, guard):
    from experiments.study import run_and_report

    study_dir, overrides, plan = plan_study(args)
    return run_and_report(PROG, "generalization", plan, study_dir, guard, args.report_only,
                          lambda records: report(args, plan, records, study_dir, overrides),
                          ["generalization.json", "generalization.md", "learning_curves.png"])


if __name__ == "__main__":
    sys.exit(main())
