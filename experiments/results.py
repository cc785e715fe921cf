"""The figures README.md and docs/ show, generated from the runs' committed records.

A record (docs/records/NAME.json) holds, for each run of a study, what its results.json says
(test and validation accuracy, training time, epochs, precision, weights digest, the measures
beyond accuracy) and which test images it got right, plus where the runs came from: the
command, the commit, the date, the machine. Every table in README.md and docs/*.md between
the markers

    <!-- generated: KIND NAME [REFERENCE] -->
    ...
    <!-- end generated -->

is written here from those records: `summary NAME [GROUP; ...]` (each group's mean test
accuracy over seeds with its 95% interval), `measures NAME [GROUP; ...]` (the measures beyond
accuracy, each with its interval), `changes NAME REFERENCE` (each group against REFERENCE on
the paired seeds: the change, its 95% t-interval, and the p of a bootstrap over seeds and test
images, mlp/significance.py), `curve NAME` (a learning-curve study's tables, its groups named
"RECIPE m=SIZE": experiments/generalization.py), `benchmark NAME` (a benchmark's tables from its
benchmark.json, recorded whole) or `search NAME` (a search's best trials from its search.json).
A figure edited by hand is put back, and --check (which the tests run) fails on it.

    python -m experiments.results                  # rewrite the generated tables
    python -m experiments.results --check          # exit 1 if any is not what the records give
    python -m experiments.results collect NAME --command CMD STUDY_DIR   # an ablation's or a
                                                   # learning-curve study's runs, or a
                                                   # benchmark's or a search's report
    python -m experiments.results collect NAME --add ...   # add runs trained in another session
    python -m experiments.results collect NAME --compare-with RECORD GROUP ...  # with the same
                                                   # seeds of another record's group beside them
    python -m experiments.results collect NAME --command CMD --group LABEL RUN_DIR ... \
        [--group LABEL RUN_DIR ...]                # runs by group, in as many groups as given
"""

import argparse
import base64
import collections
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from mlp.cli import Parser

REPO = Path(__file__).resolve().parent.parent
RECORDS = REPO / "docs" / "records"
PAGES = ("README.md", "docs/*.md")
BLOCK = re.compile(r"(<!-- generated: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)",
                   re.S)


class RecordError(Exception):
    """A record or a marker is not usable; the message names it and what to do."""


# --- collecting the records of finished runs ---------------------------------------------------

def run_record(run_dir, group):
    """One run's entry: its figures from results.json and its right/wrong test images (packed
    bits, base64) from test_predictions.npz."""
    from experiments.study import correct_in, measures_of
    from mlp.io import read_json

    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise RecordError(f"{run_dir}: no results.json (the run has not finished)")
    results = read_json(results_path)
    entry = {"run": run_dir.name, "group": group, "seed": results["experiment_config"]["seed"]}
    for key in ("test_accuracy", "validation_accuracy", "train_seconds", "epochs_run",
                "precision", "kernels", "weights_digest"):
        entry[key] = results.get(key)
    shown = {key for _, key, _ in measure_columns()}
    entry["measures"] = {key: value for key, value in measures_of(results).items()
                         if key in shown}
    sharpness = results.get("sharpness")
    if isinstance(sharpness, dict) and "power_iteration_converged" in sharpness:
        entry["power_iteration_converged"] = bool(sharpness["power_iteration_converged"])
    correct = correct_in(str(run_dir))
    if correct is not None:
        entry["test_images"] = int(correct.size)
        entry["test_correct"] = base64.b64encode(np.packbits(correct)).decode("ascii")
    return entry


def correct_of(entry):
    """The boolean array of which test images a run entry got right, or None."""
    if "test_correct" not in entry:
        return None
    bits = np.frombuffer(base64.b64decode(entry["test_correct"]), np.uint8)
    return np.unpackbits(bits)[:entry["test_images"]].astype(bool)


def ablation_groups(study_dir):
    """[(variant, [run directory, ...])] of a study's ablation.json, finished runs only."""
    from experiments.ablation import slug
    from mlp.io import read_json

    study = read_json(Path(study_dir) / "ablation.json")
    return [(row["variant"], [Path(study_dir) / f"{slug(row['variant'])}-seed{seed}"
                              for seed in row["seeds"]])
            for row in study["rows"] if "seeds" in row]


def curve_groups(study_dir):
    """[("RECIPE m=SIZE", [run directory, ...])] of a learning-curve study's generalization.json,
    finished runs only, in seed order."""
    from experiments.generalization import run_name, variant
    from mlp.io import read_json

    study_dir = Path(study_dir)
    groups = []
    for name, curve in read_json(study_dir / "generalization.json").items():
        for size in curve["sizes"]:
            runs = [path.parent for path in
                    study_dir.glob(f"{run_name(name, size, '*')}/results.json")]
            groups.append((variant(name, size),
                           sorted(runs, key=lambda run: int(run.name.rpartition("seed")[2]))))
    return groups


def study_groups(study_dir):
    """The groups of a study directory's runs, as its report names them; None if it holds
    neither an ablation's nor a learning-curve study's report."""
    study_dir = Path(study_dir)
    if (study_dir / "ablation.json").is_file():
        return ablation_groups(study_dir)
    if (study_dir / "generalization.json").is_file():
        return curve_groups(study_dir)
    return None


REPORTS = {"benchmark": "benchmark.json", "search": "search.json"}


def report_kind(study_dir):
    """"benchmark" or "search" if the directory holds that report (recorded whole), else None."""
    return next((kind for kind, file in REPORTS.items() if (Path(study_dir) / file).is_file()),
                None)


def collect_report(name, command, commit, study_dir, records_dir=RECORDS, note=None):
    """Write records_dir/NAME.json from a benchmark's or a search's report, kept whole: a
    benchmark's median epoch times, a search's trials."""
    from mlp.io import atomic_write_json, read_json

    kind = report_kind(study_dir)
    if kind is None:
        raise RecordError(f"{study_dir}: neither {' nor '.join(REPORTS.values())}")
    record = {"name": name, "kind": kind, **provenance(command, commit, note),
              "report": read_json(Path(study_dir) / REPORTS[kind])}
    records_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(records_dir / f"{name}.json", record)
    return record


def provenance(command, commit, note=None):
    from importlib.metadata import version

    from mlp.machine import cpu_id, cpu_model

    if commit is None:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
    return {"command": command, "commit": commit[:12],
            "date": datetime.date.today().isoformat(),
            "machine": {"cpu": cpu_model(), "cpu_id": cpu_id(), "cores": os.cpu_count(),
                        "tensorflow": version("tensorflow"), "python": platform.python_version()},
            **({"note": note} if note else {})}


SOURCE_KEYS = ("commit", "date", "machine")


def collect(name, command, commit, groups, records_dir=RECORDS, note=None, add=False,
            compare_with=None):
    """Write records_dir/NAME.json from [(group, [run dir, ...])]. With `add`, the record's
    runs of other (group, seed) pairs stay, each keeping the commit, date and machine it was
    trained with, so a study trained over several sessions or machines is one record.
    `compare_with`, [(record name, group), ...], puts those groups' runs of the same seeds
    first, each with its own source: what a `changes` table of this record compares the new runs
    with."""
    from mlp.io import atomic_write_json

    runs = [run_record(run_dir, group) for group, run_dirs in groups for run_dir in run_dirs]
    if not runs:
        raise RecordError("no finished runs to record")
    seeds = {run["seed"] for run in runs}
    runs = [run for other, group in compare_with or ()
            for run in same_seeds(other, group, seeds, records_dir)] + runs
    record = {"name": name, **provenance(command, commit, note), "runs": runs}
    path = records_dir / f"{name}.json"
    if add and path.is_file():
        record = merged(load_record(name, records_dir), record)
    records_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    return record


def merged(old, new):
    """`new`'s runs added to `old`'s, every run carrying its own source; the top-level source is
    the newest. A run of the same group and seed is replaced, unless it has the same weights:
    then it stays, and the new run's source is added to its `also_trained_by`, the evidence that
    their CPUs compute the same runs."""
    if old["command"] != new["command"]:
        raise RecordError(f"docs/records/{old['name']}.json was trained by `{old['command']}`, "
                          f"not `{new['command']}`; collect these runs under another name")
    before = {(run["group"], run["seed"]): sourced(old, run) for run in old["runs"]}
    fresh = {(run["group"], run["seed"]): sourced(new, run) for run in new["runs"]}
    kept = [run for key, run in before.items() if key not in fresh]
    added = [trained_again(before.get(key), run) for key, run in fresh.items()]
    # Groups keep their place in the record; new groups follow in the order given.
    order = list(dict.fromkeys(group for group, _ in [*before, *fresh]))
    runs = sorted(kept + added, key=lambda run: (order.index(run["group"]), run["seed"]))
    note = new.get("note") or old.get("note")
    return {**{key: value for key, value in new.items() if key != "note"},
            **({"note": note} if note else {}), "runs": runs}


def trained_again(run, again):
    """`again` (a run of the same group and seed as `run`, or of one not recorded before), or,
    where it has `run`'s weights, `run` with again's source among those that also trained it. A
    run without a weights digest shows nothing of the kind."""
    digest = again.get("weights_digest")
    if run is None or digest is None or run.get("weights_digest") != digest:
        return again
    sources = run.get("also_trained_by", [])
    if again["source"] in sources + [run["source"]]:
        return run
    return {**run, "also_trained_by": sources + [again["source"]]}


def same_seeds(name, group, seeds, records_dir=RECORDS):
    """The runs of `group` in record `name` whose seeds are among `seeds`, each with its source."""
    other = load_record(name, records_dir)
    runs = [sourced(other, run) for run in select(other, [group])[group] if run["seed"] in seeds]
    if not runs:
        raise RecordError(f"{name}: group {group!r} has no run of seed "
                          f"{', '.join(map(str, sorted(seeds)))} to compare with")
    return runs


def run_source(record, run):
    """The commit, date and machine that trained `run`: its own, or else the record's."""
    return run.get("source") or {key: record[key] for key in SOURCE_KEYS}


def sourced(record, run):
    """`run` carrying its own source, to move into another record."""
    return {"source": run_source(record, run), **run}


# --- the tables --------------------------------------------------------------------------------

def record_kind(record):
    """"runs" (a study's runs; records older than the other kinds have no "kind"), "benchmark"
    or "search" (a report kept whole)."""
    return record.get("kind", "runs")


def load_record(name, records_dir=RECORDS, kind="runs"):
    """Record `name`, which must be of `kind`: "runs" (a study's runs), "benchmark" or
    "search"."""
    import json

    path = records_dir / f"{name}.json"
    if not path.is_file():
        raise RecordError(f"{path}: no such record; collect it first (see --help)")
    record = json.loads(path.read_text())
    if record_kind(record) != kind:
        raise RecordError(f"docs/records/{name}.json is a {record_kind(record)} record, "
                          f"not a {kind} record")
    return record


def grouped(record):
    """{group: [run entry, ...]} in the record's order."""
    groups = {}
    for entry in record["runs"]:
        groups.setdefault(entry["group"], []).append(entry)
    return groups


def _counted(n, noun):
    return f"{n} {noun}{'s' if n != 1 else ''}"


def source_text(source):
    machine = source["machine"]
    identity = f", {machine['cpu_id']}" if machine.get("cpu_id") else ""
    return (f"at commit {source['commit'][:7]}, {source['date']}, on {machine['cpu']} "
            f"({machine['cores']} cores{identity}), TensorFlow {machine['tensorflow']}")


def source_line(record):
    kind = record_kind(record)
    runs = record["runs"] if kind == "runs" else [{}]  # a whole report has the record's source
    if kind == "runs":
        count = _counted(len(runs), "run") + " of "
    elif kind == "search":
        count = _counted(len(record["report"]["trials"]), "trial") + " of "
    else:
        count = ""
    sources = collections.Counter(source_text(run_source(record, run)) for run in runs)
    again = collections.Counter(source_text(source) for run in runs
                                for source in run.get("also_trained_by", ()))
    where = (next(iter(sources)) if len(sources) == 1 else
             "; ".join(f"{n} {text}" for text, n in sources.items()))
    where += "".join(f"; {_counted(n, 'run')} trained again, to the same weights, {text}"
                     for text, n in again.items())
    return (f"<sub>{count}`{record['command']}` "
            f"{'' if len(sources) == 1 else 'by source: '}{where}; generated by "
            f"`python -m experiments.results` from docs/records/{record['name']}.json."
            + (f" {record['note']}" if record.get("note") else "") + "</sub>")


def select(record, only=None):
    """{group: [run entry, ...]}: the record's groups, or only those named, in that order."""
    groups = grouped(record)
    missing = [group for group in only or () if group not in groups]
    if missing:
        raise RecordError(f"{record['name']}: no group {', '.join(map(repr, missing))} (it has "
                          f"{', '.join(groups)})")
    return {group: groups[group] for group in only} if only else groups


def summary_table(record, only=None):
    """Each group's row (`only`: these groups, in this order)."""
    from mlp.significance import paired_interval

    groups = select(record, only)
    lines = ["| recipe | seeds | test accuracy (95% interval of the mean) | std over seeds | "
             "lowest seed | validation accuracy | epochs | training s (median; min–max) | "
             "precision |",
             "|---|---|---|---|---|---|---|---|---|"]
    for group, runs in groups.items():
        accuracies = [run["test_accuracy"] for run in runs]
        mean = statistics.fmean(accuracies)
        interval = paired_interval(accuracies)  # the t-interval of the mean, None for one seed
        half = interval[2] - mean if interval else None
        spread = f"{statistics.stdev(accuracies):.4f}" if len(runs) > 1 else "—"
        seconds = [run["train_seconds"] for run in runs]
        precisions = ", ".join(sorted({run["precision"] for run in runs}))
        interval = f"{mean:.4f} ± {half:.4f}" if half is not None else f"{mean:.4f}"
        lines.append(
            f"| {group} | {len(runs)} | {interval} | {spread} | {min(accuracies):.4f} | "
            f"{statistics.fmean(run['validation_accuracy'] for run in runs):.4f} | "
            f"{statistics.fmean(run['epochs_run'] for run in runs):.1f} | "
            f"{statistics.median(seconds):.1f}; {min(seconds):.1f}–{max(seconds):.1f} | "
            f"{precisions} |")
    return lines


def measure_columns():
    """The measures table's (heading, key of experiments.study.MEASURES, format): the test
    accuracy on the plain test images alone (where a recipe averages several views), then the
    measures beyond accuracy the studies show."""
    from experiments.study import MEASURE_COLUMNS

    return [("one view", "test_accuracy_single_view", ".4f"), *MEASURE_COLUMNS]


def measures_table(record, only=None):
    """Each group's measures (`measure_columns`): the mean over seeds ± half its 95%
    t-interval. A column no group has is left out; a group some of whose runs lack a measure
    shows "—" there. A λ_max whose power iteration stopped unconverged on some run is marked,
    and a note under the table says on how many."""
    from mlp.significance import paired_interval

    def cell(runs, key, spec):
        values = [run.get("measures", {}).get(key) for run in runs]
        if any(value is None for value in values):
            return "—"
        mean = statistics.fmean(values)
        interval = paired_interval(values)
        if interval is None:
            return format(mean, spec)
        return f"{format(mean, spec)} ± {format(interval[2] - mean, spec.lstrip('+'))}"

    columns = measure_columns()
    groups = select(record, only)
    rows = {group: [cell(runs, key, spec) for _, key, spec in columns]
            for group, runs in groups.items()}
    shown = [i for i in range(len(columns)) if any(row[i] != "—" for row in rows.values())]
    if not shown:
        raise RecordError(f"docs/records/{record['name']}.json holds no measures beyond "
                          "accuracy; collect it again from its run directories")
    eigenvalue = [key for _, key, _ in columns].index("hessian_top_eigenvalue")
    unconverged = {group: count for group, runs in groups.items()
                   if (count := sum(run.get("power_iteration_converged") is False for run in runs))
                   and rows[group][eigenvalue] != "—"}
    for group in unconverged:
        rows[group][eigenvalue] += " ‡"
    lines = ["| recipe | seeds | " + " | ".join(columns[i][0] for i in shown) + " |",
             "|---" * (len(shown) + 2) + "|"]
    for group, row in rows.items():
        lines.append(f"| {group} | {len(groups[group])} | "
                     + " | ".join(row[i] for i in shown) + " |")
    if unconverged:
        marked = [f"{group} on {count} of {len(groups[group])}"
                  for group, count in unconverged.items()]
        lines += ["", f"‡ The power iteration for λ_max ran out of iterations before converging "
                      f"({'; '.join(marked)} runs; mlp/sharpness.py): such a run's λ_max is its "
                      "last Rayleigh quotient, a lower bound."]
    return lines


# A seed's run is reproduced bit for bit on one CPU model, and on some others, but not on all (the
# kernels, ours compiled with -march=native and oneDNN's, are built or chosen per CPU): runs paired
# by seed across CPUs not shown to compute alike share no noise.
ACROSS_CPUS = ("† At least one seed's two runs trained on CPUs not shown to compute the same "
               "runs: the same seed gives other weights on another CPU, unless the record holds a "
               "run trained again there to the same weights. Such pairs share no noise, so the "
               "interval, taken from the paired differences, stays valid but gains nothing from "
               "the pairing, and any difference between the CPUs themselves is part of the "
               "change. A CPU is named by its model name and, in later records, its family, model "
               "and stepping; the name alone may cover CPUs that compute differently (\"AMD "
               "EPYC\" does).")


def cpu_key(source):
    """A CPU as a record names it: its model name and, in later records, its identity."""
    return source["machine"]["cpu"], source["machine"].get("cpu_id")


def same_numerics(record):
    """A function giving each CPU (`cpu_key`) its class: CPUs the record shows to compute the
    same runs, where a run trained again on another CPU had the same weights, share one."""
    parent = {}

    def find(cpu):
        while parent.get(cpu, cpu) != cpu:
            cpu = parent[cpu]
        return cpu

    for run in record["runs"]:
        for source in run.get("also_trained_by", ()):
            parent[find(cpu_key(source))] = find(cpu_key(run_source(record, run)))
    return find


def changes_table(record, reference):
    from experiments.study import paired_comparison
    from mlp.significance import p_text

    groups = grouped(record)
    if reference not in groups:
        raise RecordError(f"{record['name']}: no group {reference!r} to compare with "
                          f"(it has {', '.join(groups)})")
    lines = [f"| change from {reference} | seeds | test accuracy change | 95% interval over "
             "the paired seeds | p (bootstrap over seeds × test images) |",
             "|---|---|---|---|---|"]
    rows, across = [], False
    numerics = same_numerics(record)
    cpu = lambda run: numerics(cpu_key(run_source(record, run)))  # noqa: E731
    base = {run["seed"]: run for run in groups[reference]}
    for group, runs in groups.items():
        if group == reference:
            continue
        if any(cpu(base[run["seed"]]) != cpu(run) for run in runs if run["seed"] in base):
            group, across = f"{group} †", True
        compared = paired_comparison(groups[reference], runs, correct=correct_of)
        span = compared["change_interval"]
        span = f"{100 * span[0]:+.2f} to {100 * span[1]:+.2f} pt" if span else "—"
        bootstrap = compared["bootstrap"]
        p = p_text(bootstrap["p"], bootstrap["replicates"]) if bootstrap else "—"
        change = compared["mean_change"]
        rows.append((change, f"| {group} | {compared['paired_seeds']} | {100 * change:+.2f} pt | "
                             f"{span} | {p} |"))
    lines += [row for _, row in sorted(rows, key=lambda item: item[0])]
    return lines + (["", ACROSS_CPUS] if across else [])


CURVE_GROUP = re.compile(r"(?P<recipe>.+) m=(?P<size>\d+)")


def curve_table(record):
    """A learning-curve study's tables (experiments.generalization's) from its record, whose
    groups are named "RECIPE m=SIZE"; the first recipe is the one the others are compared with."""
    from experiments.generalization import markdown, summarize
    from experiments.study import mean_of_measures

    groups = grouped(record)
    recipes, sizes = {}, set()
    for group in groups:
        match = CURVE_GROUP.fullmatch(group)
        if not match:
            raise RecordError(f"{record['name']}: group {group!r} is not a learning curve's "
                              "'RECIPE m=SIZE'; collect it from a learning-curve study")
        recipes.setdefault(match["recipe"])
        sizes.add(int(match["size"]))

    def measures(runs):
        return mean_of_measures([{**run.get("measures", {}), "test_accuracy": run["test_accuracy"]}
                                 for run in runs])

    sizes = sorted(sizes)
    summary = summarize(list(recipes), sizes, groups, correct=correct_of, measures=measures)
    examples = record["runs"][0].get("test_images")
    return markdown(next(iter(recipes)), sizes, summary, None, examples).splitlines()


def table(spec, records_dir=RECORDS):
    """The markdown a marker `<!-- generated: SPEC -->` stands for, with its record's source
    line under it."""
    lines, record = table_lines(spec, records_dir)
    return captioned(lines, record)


def captioned(lines, record, record_above=None):
    """`lines` with the record's source line under them; or, when the generated table just above
    on the page comes from the same record (`record_above`, its name), a line pointing to that
    one's, so a page does not repeat a long source line table after table."""
    source = (source_line(record) if record["name"] != record_above else
              f"<sub>From the same record as the table above, docs/records/{record['name']}"
              ".json; generated by `python -m experiments.results`.</sub>")
    return "\n".join(lines + ["", source]) + "\n"


def table_lines(spec, records_dir=RECORDS):
    """The table's lines a marker's SPEC stands for, and the record they come from: SPEC is
    `summary NAME` or `measures NAME`, either with `GROUP; GROUP...` after it for only those
    groups, `changes NAME REFERENCE` (REFERENCE a group's label, spaces and all), `curve NAME`,
    `benchmark NAME` or `search NAME`."""
    words = spec.split(maxsplit=2)
    if words[:1] in (["summary"], ["measures"]) and len(words) >= 2:
        record = load_record(words[1], records_dir)
        only = [group.strip() for group in words[2].split(";")] if len(words) == 3 else None
        lines = (summary_table if words[0] == "summary" else measures_table)(record, only)
    elif words[:1] == ["changes"] and len(words) == 3:
        record = load_record(words[1], records_dir)
        lines = changes_table(record, words[2])
    elif words[:1] == ["curve"] and len(words) == 2:
        record = load_record(words[1], records_dir)
        lines = curve_table(record)
    elif words[:1] == ["benchmark"] and len(words) == 2:
        from experiments.benchmark import report_tables

        record = load_record(words[1], records_dir, "benchmark")
        lines = report_tables(record["report"]).splitlines()
    elif words[:1] == ["search"] and len(words) == 2:
        from experiments.search_report import markdown

        record = load_record(words[1], records_dir, "search")
        lines = markdown(record["report"]["study"], record["report"]["trials"]).splitlines()
    else:
        raise RecordError(f"marker 'generated: {spec}': expected 'summary NAME', "
                          "'measures NAME', 'changes NAME REFERENCE', 'curve NAME', "
                          "'benchmark NAME' or 'search NAME'")
    return lines, record


def regenerate(text, records_dir=RECORDS, made=None):
    """`text` with every generated block rewritten from the records; `made` ({spec: (lines,
    record)}) keeps the tables already made, so a table shown on several pages is computed
    once."""
    made = {} if made is None else made
    record_above = None

    def block(match):
        nonlocal record_above
        spec = match.group("spec").strip()
        if spec not in made:
            made[spec] = table_lines(spec, records_dir)
        lines, record = made[spec]
        body = captioned(lines, record, record_above)
        record_above = record["name"]
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(block, text)


def pages(root=REPO):
    return [path for pattern in PAGES for path in sorted(root.glob(pattern))]


def stale_pages(root=REPO, records_dir=RECORDS, write=False):
    """The pages whose generated blocks differ from what the records give (rewritten if
    `write`)."""
    stale, made = [], {}
    for path in pages(root):
        text = path.read_text()
        fresh = regenerate(text, records_dir, made)
        if fresh != text:
            stale.append(path)
            if write:
                path.write_text(fresh)
    return stale


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["collect"]:
            return _collect(argv[1:])
        parser = Parser(
            prog="python -m experiments.results", description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--check", action="store_true",
                            help="write nothing; exit 1 naming each page whose generated tables "
                                 "differ from what docs/records/ gives")
        args = parser.parse_args(argv)
        stale = stale_pages(write=not args.check)
    except RecordError as error:
        print(f"python -m experiments.results: error: {error}", file=sys.stderr)
        return 2
    for path in stale:
        print(f"{'stale' if args.check else 'rewrote'}: {path.relative_to(REPO)}")
    return 1 if (args.check and stale) else 0


def _collect(argv):
    parser = Parser(
        prog="python -m experiments.results collect",
        description="Record finished runs in docs/records/NAME.json, replacing that record "
                    "(or, with --add, adding to it).")
    parser.add_argument("name", help="the record's name (a plain file name, no .json)")
    parser.add_argument("study", nargs="?", help="a study's directory, whose report names the "
                        "groups: an ablation's (ablation.json) or a learning-curve study's "
                        "(generalization.json: a group per recipe and size); or a benchmark's "
                        "(benchmark.json) or a search's (search.json) directory, whose report "
                        "is recorded whole")
    parser.add_argument("--group", nargs="+", action="append", metavar="LABEL RUN_DIR",
                        help="a group's label (e.g. best) and its run directories; repeat it for "
                             "each group")
    parser.add_argument("--command", required=True,
                        help="the command that trained the runs, as a reader would rerun it")
    parser.add_argument("--commit", help="the commit that trained them (default: HEAD)")
    parser.add_argument("--note", help="a sentence printed under every table of the record "
                        "(e.g. what else shared the machine while the runs were timed)")
    parser.add_argument("--add", action="store_true",
                        help="keep the record's other runs (each with its own commit, date and "
                             "machine) and add these, replacing any of the same group and seed: "
                             "for a study trained in several sessions or on several machines")
    parser.add_argument("--compare-with", nargs=2, action="append", metavar=("RECORD", "GROUP"),
                        help="also record GROUP's runs of the same seeds from "
                             "docs/records/RECORD.json, each with its own commit, date and "
                             "machine: the runs a `changes` table compares these with; repeat it "
                             "for several groups")
    args = parser.parse_intermixed_args(argv)  # the study directory may follow the options
    from mlp.config import is_plain_name

    if not is_plain_name(args.name) or args.name.endswith(".json"):
        parser.error(f"NAME must be a plain file name without .json, got {args.name!r}")
    if args.study and not args.group and report_kind(args.study):
        if args.add or args.compare_with:
            parser.error("--add and --compare-with take runs, not a benchmark's or a search's "
                         "report")
        record = collect_report(args.name, args.command, args.commit, args.study, RECORDS,
                                note=args.note)
        print(f"recorded the {record['kind']} report of {args.study} in "
              f"{RECORDS / (args.name + '.json')}")
        return 0
    groups = None
    if args.group and args.study is None and all(len(group) > 1 for group in args.group):
        groups = [(label, [Path(p) for p in run_dirs]) for label, *run_dirs in args.group]
    elif args.study and not args.group:
        groups = study_groups(args.study)
    if groups is None:
        parser.error("give one study directory (an ablation's, a learning-curve study's, a "
                     "benchmark's or a search's), or groups: --group LABEL RUN_DIR ...")
    record = collect(args.name, args.command, args.commit, groups, RECORDS, note=args.note,
                     add=args.add, compare_with=args.compare_with)
    print(f"recorded {_counted(len(record['runs']), 'run')} in {RECORDS / (args.name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
