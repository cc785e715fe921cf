"""The report of a search (python -m experiments.search --report): a table of the best trials
with their parameters and validation / test accuracy, the trials' states, and Optuna's
optimization-history and parameter-importance plots drawn with matplotlib; into
<logdir>/<study>/ (search.md, search.json, history.png, importance.png) and TensorBoard (the
study directory's summary)."""

from collections import Counter

TOP = 10


def trial_entries(study):
    """Every trial as search.json holds it: number, state, value, params and its user
    attributes (test accuracy, epochs, training seconds, a failure's reason)."""
    return [{"number": t.number, "state": t.state.name.lower(), "value": t.value,
             "params": t.params, **t.user_attrs}
            for t in study.get_trials(deepcopy=False)]


def markdown(study_name, trials, top=TOP):
    """The table of the `top` finished trials (best validation accuracy first) and the failed
    trials' reasons, from `trial_entries`."""
    counts = Counter(t["state"] for t in trials)
    best = sorted((t for t in trials if t["state"] == "complete"), key=lambda t: -t["value"])[:top]
    names = sorted({name for t in best for name in t["params"]})
    lines = [f"Search `{study_name}`: {len(trials)} trials ("
             + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) + "). "
             "Chosen on validation accuracy; the test accuracy is each trial's one reading of "
             "the test set, shown, never used.", "",
             "| trial | validation | test | epochs | training s | " + " | ".join(names) + " |",
             "|---" * (5 + len(names)) + "|"]
    for t in best:
        params = " | ".join(_show(t["params"].get(name)) for name in names)
        lines.append(f"| {t['number']} | {t['value']:.4f} | "
                     f"{t.get('test_accuracy', float('nan')):.4f} | {t.get('epochs_run', '—')} | "
                     f"{t.get('train_seconds', float('nan')):.1f} | {params} |")
    failed = [t for t in trials if t["state"] == "fail" and "fail_reason" in t]
    if failed:
        lines += ["", "Failed trials:", ""] + [f"- trial {t['number']}: {t['fail_reason']}"
                                               for t in failed]
    return "\n".join(lines) + "\n"


def _show(value):
    if isinstance(value, float):
        return f"{value:.3g}"
    return "—" if value is None else str(value)


def _figure_png(axes):
    import io

    figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
    figure.set_size_inches(8, 5)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


def plots(study):
    """{name: PNG bytes} of Optuna's matplotlib plots the study has enough trials for."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    from mlp.figures import _pyplot

    _pyplot()  # the Agg backend: files only
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        done = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
        if done:
            out["history"] = _figure_png(optuna_plots.plot_optimization_history(study))
        if len(done) >= 2 and any(len(set(t.params.get(n) for t in done)) > 1
                                  for n in done[0].params):
            out["importance"] = _figure_png(optuna_plots.plot_param_importances(study))
    return out


def report(study, study_dir):

    import tensorflow as tf

    from mlp.io import atomic_write_bytes, atomic_write_json, atomic_write_text

    study_dir.mkdir(parents=True, exist_ok=True)
    trials = trial_entries(study)
    table = markdown(study.study_name, trials)
    atomic_write_text(study_dir / "search.md", table)
    atomic_write_json(study_dir / "search.json", {"study": study.study_name, "trials": trials})
    images = plots(study)
    writer = tf.summary.create_file_writer(str(study_dir / "summary"))
    with writer.as_default(step=0):
        tf.summary.text("search_table", table)
        for name, png in images.items():
            atomic_write_bytes(study_dir / f"{name}.png", png)
            tf.summary.image(name, tf.io.decode_png(png, channels=3)[None],
                             description=f"Optuna's {name} plot of the study")
    writer.close()
    print(table)
    print(f"wrote {study_dir / 'search.md'}, search.json"
          + "".join(f", {name}.png" for name in images) + " and TensorBoard summaries")
