"""The generated figures: every table in README.md and docs/ is what experiments.results writes
from the committed records, and a figure edited by hand is caught."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from experiments import results
from mlp.significance import paired_interval


def test_every_generated_table_matches_the_committed_records():
    assert results.stale_pages(write=False) == []


def test_the_pages_show_generated_tables():
    readme = (results.REPO / "README.md").read_text()
    assert len(results.BLOCK.findall(readme)) >= 2


def test_a_hand_edited_figure_is_caught_and_put_back(tmp_path):
    shutil.copytree(results.RECORDS, tmp_path / "records")
    original = (results.REPO / "README.md").read_text()
    block = results.BLOCK.search(original)
    body = block.group("body")
    figure = next(word for word in body.split() if word.startswith("0.8"))
    edited = original.replace(body, body.replace(figure, "0.9999", 1))
    assert edited != original
    (tmp_path / "README.md").write_text(edited)
    rewritten = results.stale_pages(tmp_path, tmp_path / "records", write=True)
    assert rewritten == [tmp_path / "README.md"]
    assert (tmp_path / "README.md").read_text() == original


def _fake_run(run_dir, seed, correct, **more):
    """A finished run's two files as a run writes them: results.json (with `more` of its keys)
    and test_predictions.npz."""
    run_dir.mkdir(parents=True)
    labels = np.arange(correct.size) % 10
    probabilities = np.full((correct.size, 10), 0.05, np.float32)
    guesses = np.where(correct, labels, (labels + 1) % 10)
    probabilities[np.arange(correct.size), guesses] = 0.55
    np.savez(run_dir / "test_predictions.npz", probabilities=probabilities, labels=labels)
    (run_dir / "results.json").write_text(json.dumps({
        "experiment_config": {"seed": seed}, "test_accuracy": float(correct.mean()),
        "validation_accuracy": 0.5, "train_seconds": 10.0 + seed, "epochs_run": 3,
        "precision": "float32", "kernels": "fused",
        "weights_digest": hashlib.sha256(np.packbits(correct).tobytes() + bytes([seed]))
        .hexdigest(),
        **more}))


def test_collected_runs_give_their_figures_back(tmp_path):
    rng = np.random.default_rng(0)
    base = [rng.random(1001) < 0.8 for _ in range(3)]
    other = [rng.random(1001) < 0.7 for _ in range(3)]
    for seed in range(3):
        _fake_run(tmp_path / "runs" / f"a-seed{seed}", seed, base[seed])
        _fake_run(tmp_path / "runs" / f"b-seed{seed}", seed, other[seed])
    groups = [(label, [tmp_path / "runs" / f"{label}-seed{s}" for s in range(3)])
              for label in ("a", "b")]
    record = results.collect("toy", "python -m toy", "0123456789abcdef", groups,
                             tmp_path / "records")
    assert [run["seed"] for run in record["runs"]] == [0, 1, 2, 0, 1, 2]
    for run, correct in zip(record["runs"], base + other):
        assert np.array_equal(results.correct_of(run), correct)
    summary = results.table("summary toy", tmp_path / "records")
    mean, _, high = paired_interval([c.mean() for c in base])
    half = high - mean
    assert f"| a | 3 | {mean:.4f} ± {half:.4f} |" in summary
    assert f"| {min(c.mean() for c in base):.4f} |" in summary
    assert "6 runs of `python -m toy` at commit 0123456" in summary
    changes = results.table("changes toy a", tmp_path / "records")
    _, low, high = paired_interval([o.mean() - b.mean() for b, o in zip(base, other)])
    assert f"{100 * low:+.2f} to {100 * high:+.2f} pt" in changes


def test_a_table_under_one_of_the_same_record_points_to_its_source_line(tmp_path):
    for name in ("toy", "other"):
        _fake_run(tmp_path / name / "a-seed0", 0, np.ones(10, bool))
        results.collect(name, f"python -m {name}", "0123456789abcdef",
                        [("a", [tmp_path / name / "a-seed0"])], tmp_path / "records")
    blocks = ["summary toy", "summary toy a", "summary other", "summary toy", "summary toy a"]
    page = "".join(f"<!-- generated: {spec} -->\nstale\n<!-- end generated -->\nprose\n"
                   for spec in blocks)
    bodies = [match.group("body") for match in
              results.BLOCK.finditer(results.regenerate(page, tmp_path / "records"))]
    full = [("`python -m toy` at commit 0123456" in body, "`python -m other`" in body)
            for body in bodies]
    assert full == [(True, False), (False, False), (False, True), (True, False), (False, False)]
    for body in (bodies[1], bodies[4]):
        assert "the same record as the table above, docs/records/toy.json" in body
        assert "| a | 1 |" in body  # the table itself is whole


def test_collect_takes_groups_of_run_directories_from_the_command_line(tmp_path, monkeypatch,
                                                                         capsys):
    rng = np.random.default_rng(1)
    for label, seeds in (("a", 2), ("b", 1)):
        for seed in range(seeds):
            _fake_run(tmp_path / f"{label}-seed{seed}", seed, rng.random(1001) < 0.8)
    monkeypatch.setattr(results, "RECORDS", tmp_path / "records")
    code = results.main(["collect", "toy", "--command", "python -m toy", "--commit", "0" * 40,
                         "--group", "a", str(tmp_path / "a-seed0"), str(tmp_path / "a-seed1"),
                         "--group", "b", str(tmp_path / "b-seed0")])
    assert code == 0
    record = results.load_record("toy", tmp_path / "records")
    assert [(run["group"], run["seed"]) for run in record["runs"]] == [("a", 0), ("a", 1),
                                                                       ("b", 0)]
    # A group without run directories is refused in one line.
    with pytest.raises(SystemExit) as stopped:
        results.main(["collect", "toy", "--command", "c", "--group", "a"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "give one study directory" in error and error.count("\n") == 1


def test_a_record_can_carry_another_records_runs_of_the_same_seeds(tmp_path, monkeypatch,
                                                                  capsys):
    rng = np.random.default_rng(3)
    base = [rng.random(1001) < 0.8 for _ in range(3)]
    taught = rng.random(1001) < 0.9
    for seed in range(3):
        _fake_run(tmp_path / f"a-seed{seed}", seed, base[seed])
    _fake_run(tmp_path / "b-seed1", 1, taught)
    monkeypatch.setattr(results, "RECORDS", tmp_path / "records")
    results.collect("base", "python -m base", "1" * 40,
                    [(label, [tmp_path / f"a-seed{seed}" for seed in range(3)])
                     for label in ("a", "a again")], results.RECORDS)
    assert results.main(["collect", "toy", "--command", "python -m toy", "--commit", "2" * 40,
                         "--group", "b", str(tmp_path / "b-seed1"),
                         "--compare-with", "base", "a", "--compare-with", "base", "a again"]) == 0
    record = results.load_record("toy", results.RECORDS)
    # Only the base record's runs of seed 1 come along, first, with the commit they trained at.
    assert [(run["group"], run["seed"]) for run in record["runs"]] == [("a", 1), ("a again", 1),
                                                                       ("b", 1)]
    assert [results.run_source(record, run)["commit"] for run in record["runs"]] == [
        "1" * 12, "1" * 12, "2" * 12]
    assert np.array_equal(results.correct_of(record["runs"][0]), base[1])
    changes = results.table("changes toy a", results.RECORDS)
    assert f"| b | 1 | {100 * (taught.mean() - base[1].mean()):+.2f} pt |" in changes
    # A group the other record lacks, or one without those seeds, is named in one line.
    for group, seed in (("z", 1), ("a", 7)):
        _fake_run(tmp_path / f"c-seed{seed}-{group}", seed, taught)
        assert results.main(["collect", "toy", "--command", "python -m toy", "--group", "c",
                             str(tmp_path / f"c-seed{seed}-{group}"),
                             "--compare-with", "base", group]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "base" in error and repr(group) in error, error
    assert results.load_record("toy", results.RECORDS) == record


def test_the_measures_table_gives_each_measure_its_interval_over_seeds(tmp_path):
    rng = np.random.default_rng(3)
    gaps, eces, corrupted = [0.05, 0.07, 0.06], [0.02, 0.03, 0.025], [0.70, 0.66, 0.69]
    for seed in range(3):
        _fake_run(tmp_path / f"a-seed{seed}", seed, rng.random(1001) < 0.8,
                  generalization_gap=gaps[seed], test_accuracy_single_view=0.8 - seed / 100,
                  calibration={"ece": eces[seed], "scaled": {"ece": 0.01}},
                  corruption_accuracy={"mean": corrupted[seed], "rotate": 0.5}, sharpness=None)
    # A run recorded before the measures existed: its group shows none of them.
    _fake_run(tmp_path / "b-seed0", 0, rng.random(1001) < 0.8)
    results.collect("toy", "python -m toy", "0" * 40,
                    [("a", [tmp_path / f"a-seed{s}" for s in range(3)]),
                     ("b", [tmp_path / "b-seed0"])], tmp_path / "records")
    table = results.table("measures toy", tmp_path / "records")
    header, _, row_a, row_b = table.splitlines()[:4]
    assert header == ("| recipe | seeds | one view | gap | ECE | ECE (scaled) | corrupted acc. |")
    cells = [cell.strip() for cell in row_a.strip("|").split("|")]
    for values, text, sign in ((gaps, cells[3], "+"), (eces, cells[4], ""),
                               (corrupted, cells[6], "")):
        mean, _, high = paired_interval(values)
        assert text == f"{mean:{sign}.4f} ± {high - mean:.4f}"
    assert cells[:3] == ["a", "3", "0.7900 ± 0.0248"]
    assert cells[5] == "0.0100 ± 0.0000"
    assert row_b == "| b | 1 | — | — | — | — | — |"
    # Only the groups named, and a record without any measure is named.
    assert "| b |" not in results.table("measures toy a", tmp_path / "records")
    results.collect("bare", "python -m toy", "0" * 40, [("b", [tmp_path / "b-seed0"])],
                    tmp_path / "records")
    with pytest.raises(results.RecordError, match="holds no measures beyond accuracy"):
        results.table("measures bare", tmp_path / "records")


def test_a_lambda_max_the_power_iteration_left_unconverged_is_marked(tmp_path):
    rng = np.random.default_rng(4)
    for group, converged in (("a", [True, False, True]), ("c", [True, True, True])):
        for seed in range(3):
            _fake_run(tmp_path / f"{group}-seed{seed}", seed, rng.random(1001) < 0.8,
                      sharpness={"hessian_top_eigenvalue": 10.0 + seed, "power_iterations": 30,
                                 "power_iteration_converged": converged[seed],
                                 "epsilon_sharpness": 40.0})
    record = results.collect("toy", "python -m toy", "0" * 40,
                             [(group, [tmp_path / f"{group}-seed{s}" for s in range(3)])
                              for group in ("a", "c")], tmp_path / "records")
    assert [run["power_iteration_converged"] for run in record["runs"]] == [True, False, True,
                                                                           True, True, True]
    lines = results.table("measures toy", tmp_path / "records").splitlines()
    assert lines[0] == "| recipe | seeds | λ_max | ε-sharpness |"
    mean, _, high = paired_interval([10.0, 11.0, 12.0])
    assert lines[2] == f"| a | 3 | {mean:.3g} ± {high - mean:.3g} ‡ | 40 ± 0 |"
    assert lines[3] == f"| c | 3 | {mean:.3g} ± {high - mean:.3g} | 40 ± 0 |"
    assert lines[5].startswith("‡ ") and "(a on 1 of 3 runs;" in lines[5]
    assert "‡" not in results.table("measures toy c", tmp_path / "records")


def test_a_bad_marker_or_missing_record_is_named(tmp_path):
    with pytest.raises(results.RecordError, match="expected 'summary NAME'"):
        results.table("average toy", tmp_path)
    with pytest.raises(results.RecordError, match="no such record"):
        results.table("summary nothing", tmp_path)
    # A learning curve's table wants groups named by recipe and size.
    _fake_run(tmp_path / "a-seed0", 0, np.ones(10, bool))
    results.collect("toy", "python -m toy", "0" * 40, [("a", [tmp_path / "a-seed0"])], tmp_path)
    with pytest.raises(results.RecordError, match="group 'a' is not a learning curve's"):
        results.table("curve toy", tmp_path)


def test_runs_added_in_another_session_keep_their_own_source(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    correct = [rng.random(1001) < 0.8 for _ in range(3)]
    for seed in range(3):
        _fake_run(tmp_path / f"a-seed{seed}", seed, correct[seed])
    records = tmp_path / "records"
    first = results.collect("toy", "python -m toy", "1" * 40,
                            [("a", [tmp_path / "a-seed0", tmp_path / "a-seed1"])], records)
    # The next session: another commit, another machine, seed 1 again, trained to other
    # weights (so it replaces the first), and seed 2.
    results_path = tmp_path / "a-seed1" / "results.json"
    results_path.write_text(results_path.read_text().replace('"weights_digest": "',
                                                             '"weights_digest": "0'))
    monkeypatch.setattr(results, "provenance", lambda command, commit, note=None: {
        "command": command, "commit": commit[:12], "date": "2030-01-02",
        "machine": {**first["machine"], "cpu": "Other CPU"}})
    record = results.collect("toy", "python -m toy", "2" * 40,
                             [("a", [tmp_path / "a-seed1", tmp_path / "a-seed2"])], records,
                             add=True)
    assert [run["seed"] for run in record["runs"]] == [0, 1, 2]
    assert [run["source"]["commit"] for run in record["runs"]] == ["1" * 12, "2" * 12, "2" * 12]
    assert record["runs"][0]["source"]["date"] == first["date"]
    summary = results.table("summary toy", records)
    mean, _, high = paired_interval([c.mean() for c in correct])
    assert f"| a | 3 | {mean:.4f} ± {high - mean:.4f} |" in summary
    assert "1 at commit 1111111" in summary and "2 at commit 2222222" in summary
    assert "on Other CPU" in summary
    # Without --add the record is replaced; with another command, adding is refused.
    with pytest.raises(results.RecordError, match="collect these runs under another name"):
        results.collect("toy", "python -m other", "3" * 40, [("a", [tmp_path / "a-seed0"])],
                        records, add=True)
    replaced = results.collect("toy", "python -m toy", "3" * 40,
                               [("a", [tmp_path / "a-seed0"])], records)
    assert len(replaced["runs"]) == 1 and "source" not in replaced["runs"][0]


def test_a_group_added_later_follows_the_groups_already_recorded(tmp_path):
    runs, records = _runs_of(tmp_path, "abc", 5), tmp_path / "records"
    results.collect("base", "python -m base", "1" * 40, [("a", runs("a"))], records)
    results.collect("toy", "python -m toy", "2" * 40, [("b", runs("b"))], records,
                    compare_with=[("base", "a")])
    # c joins later, carrying the compared group's runs again: a stays first, as in its tables.
    record = results.collect("toy", "python -m toy", "3" * 40, [("c", runs("c"))], records,
                             add=True, compare_with=[("base", "a")])
    assert [(run["group"], run["seed"]) for run in record["runs"]] == [
        ("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1)]
    rows = [line.split("|")[1].strip() for line in results.table("summary toy", records)
            .splitlines() if line.startswith("| ") and "recipe" not in line]
    assert rows == ["a", "b", "c"]


def _runs_of(tmp_path, labels, seed):
    """Two fake runs (seeds 0 and 1) of each label; a function giving a label's run dirs."""
    rng = np.random.default_rng(seed)
    for label in labels:
        for run_seed in range(2):
            _fake_run(tmp_path / f"{label}-seed{run_seed}", run_seed, rng.random(1001) < 0.8)
    return lambda label: [tmp_path / f"{label}-seed{run_seed}" for run_seed in range(2)]


def _collect_on(monkeypatch, records, groups, cpu, cpu_id=None, commit="1"):
    """`groups` added to the record "toy" as collected on a machine with that CPU."""
    machine = {"cpu": cpu, "cores": 2, "tensorflow": "2.21.0", "python": "3.11.7",
               **({"cpu_id": cpu_id} if cpu_id else {})}
    monkeypatch.setattr(results, "provenance", lambda command, commit, note=None: {
        "command": command, "commit": commit[:12], "date": "2030-01-02", "machine": machine})
    return results.collect("toy", "python -m toy", commit * 40, groups, records, add=True)


def _changed_groups(records, reference):
    """The group names (with any † mark) of the record "toy"'s changes table."""
    return {line.split("|")[1].strip() for line in
            results.table(f"changes toy {reference}", records).splitlines()
            if line.startswith("| ") and "change from" not in line}


def test_a_change_whose_seeds_trained_on_other_cpus_is_marked_as_not_paired(tmp_path,
                                                                           monkeypatch):
    runs, records = _runs_of(tmp_path, "abc", 4), tmp_path / "records"
    _collect_on(monkeypatch, records, [("a", runs("a")), ("b", runs("b"))], "Some CPU")
    assert results.ACROSS_CPUS not in results.table("changes toy a", records)
    # c's seed 1 trains on another CPU; its seed 0 on a's: one such pair is enough.
    _collect_on(monkeypatch, records, [("c", runs("c")[:1])], "Some CPU", commit="2")
    _collect_on(monkeypatch, records, [("c", runs("c")[1:])], "Other CPU", commit="2")
    assert _changed_groups(records, "a") == {"b", "c †"}
    assert results.table("changes toy a", records).count(results.ACROSS_CPUS) == 1
    # Against c, a's runs are the ones across CPUs.
    assert "a †" in _changed_groups(records, "c")


def test_a_run_trained_again_to_the_same_weights_shows_two_cpus_compute_alike(tmp_path,
                                                                           monkeypatch):
    runs, records = _runs_of(tmp_path, "abc", 6), tmp_path / "records"
    _fake_run(tmp_path / "a-seed1-other-weights", 1, np.random.default_rng(7).random(1001) < 0.8)
    epyc = "AuthenticAMD family 25 model 17 stepping 1"
    _collect_on(monkeypatch, records, [("a", runs("a")), ("b", runs("b"))], "Intel Xeon")
    # The same run collected again from its own machine and commit is no new evidence.
    again = _collect_on(monkeypatch, records, [("a", runs("a")[:1])], "Intel Xeon")
    assert [run for run in again["runs"] if "also_trained_by" in run] == []
    # On an AMD EPYC: a's seed 0 again, to the same weights, and a new group c.
    for _ in range(2):  # the same evidence twice is recorded once
        record = _collect_on(monkeypatch, records, [("a", runs("a")[:1]), ("c", runs("c"))],
                             "AMD EPYC", epyc, commit="2")
    seed0 = record["runs"][0]
    assert seed0["source"]["commit"] == "1" * 12 and len(seed0["also_trained_by"]) == 1
    assert _changed_groups(records, "a") == {"b", "c"}
    assert ("1 run trained again, to the same weights, at commit 2222222, 2030-01-02, on AMD EPYC "
            f"(2 cores, {epyc})") in results.table("summary toy", records)
    # a's seed 1 trained again on a third CPU to other weights replaces the run and shows no
    # CPU alike: both of a's comparisons now pair a seed across CPUs.
    _collect_on(monkeypatch, records, [("a", [tmp_path / "a-seed1-other-weights"])], "AMD EPYC",
                "AuthenticAMD family 23 model 49 stepping 0", commit="3")
    assert _changed_groups(records, "a") == {"b †", "c †"}
    # Runs without a weights digest (older results.json) show no CPUs alike.
    for name in ("d-seed0", "d-seed0-again"):
        _fake_run(tmp_path / name, 0, np.ones(1001, bool), weights_digest=None)
    _collect_on(monkeypatch, records, [("d", [tmp_path / "d-seed0"])], "CPU one")
    record = _collect_on(monkeypatch, records, [("d", [tmp_path / "d-seed0-again"])], "CPU two")
    assert [run["source"]["machine"]["cpu"] for run in record["runs"]
            if run["group"] == "d"] == ["CPU two"]


def test_cpus_of_one_model_name_are_told_apart_by_their_identity(tmp_path, monkeypatch):
    runs, records = _runs_of(tmp_path, "abcd", 5), tmp_path / "records"
    # A hypervisor names two CPU generations "AMD EPYC"; a record older than the identity has
    # only the name, and so cannot show that a pair trained on one CPU.
    for label, cpu_id in (("a", "AuthenticAMD family 25 model 1 stepping 1"),
                          ("b", "AuthenticAMD family 25 model 1 stepping 1"),
                          ("c", "AuthenticAMD family 25 model 17 stepping 1"), ("d", None)):
        _collect_on(monkeypatch, records, [(label, runs(label))], "AMD EPYC", cpu_id)
    assert _changed_groups(records, "a") == {"b", "c †", "d †"}
    summary = results.table("summary toy", records)
    assert "(2 cores, AuthenticAMD family 25 model 17 stepping 1)" in summary
    assert "on AMD EPYC (2 cores), TensorFlow" in summary  # d, named as its record names it


def test_a_cpu_is_identified_by_family_model_and_stepping_or_arm_part(tmp_path):
    from mlp.machine import cpu_id, cpu_name

    x86 = ("processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: {model}\n"
           "model name\t: Intel(R) Xeon(R) Processor\nstepping\t: 4\n\n")
    path = tmp_path / "cpuinfo"
    path.write_text(x86.format(n=0, model=143) + x86.format(n=1, model=85))
    assert cpu_id(path) == "GenuineIntel family 6 model 143 stepping 4"  # the first processor
    assert cpu_name(path) == ("Intel(R) Xeon(R) Processor (GenuineIntel family 6 model 143 "
                              "stepping 4)")
    path.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n"
                    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\n"
                    "CPU part\t: 0xd0c\nCPU revision\t: 1\n")
    assert cpu_id(path) == ("implementer 0x41 architecture 8 part 0xd0c variant 0x1 "
                            "revision 1")
    path.write_text("processor\t: 0\nmodel name\t: Some CPU\n")
    assert cpu_id(path) is None and cpu_id(tmp_path / "missing") is None
    assert cpu_name(path) == "Some CPU"


def test_a_benchmark_and_a_search_are_recorded_whole_and_their_tables_come_back(
        tmp_path, monkeypatch, capsys):
    from experiments.benchmark import FLOOR

    monkeypatch.setattr(results, "RECORDS", tmp_path / "records")
    (tmp_path / "bench").mkdir()
    rows = [{"widths": "improved", "batch_size": 128, "what": what,
             "median_epoch_seconds": seconds, "samples_per_second": 55000 / seconds,
             "peak_rss_mb_so_far": 900.0}
            for what, seconds in ((FLOOR, 0.5), ("ours float32", 0.7),
                                  ("keras fit spe=64", 1.4))]
    (tmp_path / "bench" / "benchmark.json").write_text(json.dumps(
        {"steps_per_execution": 64, "rows": rows}))
    (tmp_path / "search").mkdir()
    trials = [{"number": 0, "state": "complete", "value": 0.90, "params": {"dropout": 0.1},
               "test_accuracy": 0.89, "epochs_run": 9, "train_seconds": 30.0},
              {"number": 1, "state": "complete", "value": 0.92, "params": {"dropout": 0.2},
               "test_accuracy": 0.91, "epochs_run": 7, "train_seconds": 25.0},
              {"number": 2, "state": "fail", "value": None, "params": {"dropout": 0.3},
               "fail_reason": "the loss is not finite"}]
    (tmp_path / "search" / "search.json").write_text(json.dumps({"study": "s", "trials": trials}))
    for name, directory in (("bench", "bench"), ("found", "search")):
        assert results.main(["collect", name, "--command", f"python -m {name}", "--commit",
                             "0" * 40, str(tmp_path / directory)]) == 0
    benchmark = results.table("benchmark bench", tmp_path / "records")
    assert "| ours float32 | 0.700 | 78,571 | 1.40 | 2.00x |" in benchmark
    assert "`python -m bench` at commit 0000000" in benchmark
    search = results.table("search found", tmp_path / "records")
    lines = search.splitlines()
    assert lines[0].startswith("Search `s`: 3 trials (2 complete, 1 fail)")
    assert lines[4].startswith("| 1 | 0.9200 | 0.9100 | 7 | 25.0 | 0.2 |")
    assert "- trial 2: the loss is not finite" in search
    assert "3 trials of `python -m found`" in search
    # A marker of another kind, or runs added to a whole report, is refused in one line.
    with pytest.raises(results.RecordError, match="is a benchmark record, not a runs record"):
        results.table("summary bench", tmp_path / "records")
    with pytest.raises(results.RecordError, match="is a search record, not a benchmark"):
        results.table("benchmark found", tmp_path / "records")
    with pytest.raises(SystemExit) as stopped:
        results.main(["collect", "bench", "--add", "--command", "c", str(tmp_path / "bench")])
    assert stopped.value.code == 2 and "--add" in capsys.readouterr().err
