"""Every recipe, fully resolved, is the snapshot in tests/recipes/: a change to a library default
that a recipe depends on fails here until the snapshot is updated on purpose
(`python -m tests.test_recipes` rewrites the snapshots; commit them with the change). Recipes
state only what they change."""

import dataclasses
import json
from pathlib import Path

import pytest

from experiments.recipes import ABLATIONS, RECIPES
from mlp.config import Config, recipe

SNAPSHOTS = Path(__file__).with_name("recipes")


def resolved(config):
    """A config's every field, as config.json holds it; the paths and names a run gets from its
    command line are left out."""
    return {k: v for k, v in config.to_dict().items() if k not in ("data_dir", "run_name")}


def snapshot_of(name):
    """{"recipe": resolved config, "variants": {...}} for a recipe and its ablation variants."""
    snapshot = {"recipe": resolved(RECIPES[name])}
    if name in ABLATIONS:
        snapshot["variants"] = {variant: resolved(config)
                                for variant, config in ABLATIONS[name][1]().items()}
    return snapshot


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_recipe_resolves_to_its_snapshot(name):
    saved = json.loads((SNAPSHOTS / f"{name}.json").read_text())
    assert snapshot_of(name) == saved, (
        f"experiments/recipes.py's {name} no longer resolves to tests/recipes/{name}.json: if the "
        "change is meant, run `python -m tests.test_recipes` and commit the new snapshot")


def test_a_changed_default_fails_the_snapshots_of_exactly_the_recipes_that_inherit_it(monkeypatch):
    # The snapshot test can fail, and where it should: with the library's dropout default moved
    # to 0.3 and the recipes built again, improved (the defaults), speedrun and teacher (which
    # inherit improved's dropout) no longer match their snapshots; baseline and best, which set
    # their own dropout, still do.
    import importlib

    import experiments.recipes

    field = next(f for f in dataclasses.fields(Config) if f.name == "dropout")
    names = [f.name for f in dataclasses.fields(Config)]
    monkeypatch.setattr(field, "default", 0.3)
    monkeypatch.setattr(Config.__init__, "__defaults__", tuple(
        0.3 if name == "dropout" else value
        for name, value in zip(names, Config.__init__.__defaults__)))
    try:
        rebuilt = importlib.reload(experiments.recipes)
        changed = set()
        for name, config in rebuilt.RECIPES.items():
            saved = json.loads((SNAPSHOTS / f"{name}.json").read_text())
            if resolved(config) != saved["recipe"]:
                changed.add(name)
    finally:
        monkeypatch.undo()
        importlib.reload(experiments.recipes)
    assert changed == {"improved", "speedrun", "teacher"}


def test_a_recipe_states_only_what_it_changes():
    improved = RECIPES["improved"]
    assert recipe(parent=improved, dropout=0.3).dropout == 0.3
    with pytest.raises(TypeError, match="dropout equal the parent's"):
        recipe(parent=improved, dropout=improved.dropout)
    with pytest.raises(TypeError, match="plateau_patience do not apply"):
        recipe(parent=improved, lr_schedule="cosine", plateau_patience=5)
    with pytest.raises(TypeError, match="whitening_epsilon do not apply"):
        recipe(parent=improved, whitening_epsilon=0.5)
    with pytest.raises(TypeError, match="early_stopping_patience do not apply"):
        recipe(parent=improved, early_stopping=False, early_stopping_patience=3)


NO_TEACHER = {"teacher_weight", "teacher_temperature"}
NO_LOOKAHEAD = {"lookahead_alpha"}


@pytest.mark.parametrize("config,unused", [
    (Config(), {"whitening_epsilon", "warmup_epochs", *NO_TEACHER, *NO_LOOKAHEAD}),
    (Config(lr_schedule="cosine", early_stopping=False, whitening="zca", teacher="t"),
     {"plateau_factor", "plateau_patience", "plateau_min_delta", "plateau_cooldown",
      "early_stopping_patience", "early_stopping_min_delta", "early_stopping_start_epoch",
      *NO_LOOKAHEAD}),
    (Config(lr_schedule="constant"),
     {"whitening_epsilon", "warmup_epochs", "plateau_factor", "plateau_patience",
      "plateau_min_delta", "plateau_cooldown", "min_learning_rate", *NO_TEACHER,
      *NO_LOOKAHEAD})])
def test_unused_fields_follow_the_settings_that_use_them(config, unused):
    assert set(config.unused_fields()) == unused


def test_every_field_that_changes_results_is_in_the_snapshots():
    # A new result-changing field would otherwise be missing from every snapshot.
    saved = json.loads((SNAPSHOTS / "improved.json").read_text())["recipe"]
    assert set(Config().result_fields()) <= set(saved)


if __name__ == "__main__":
    for name in sorted(RECIPES):
        path = SNAPSHOTS / f"{name}.json"
        path.write_text(json.dumps(snapshot_of(name), indent=1, sort_keys=True) + "\n")
        print(f"wrote {path}")
