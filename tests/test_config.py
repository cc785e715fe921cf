"""Config: every field declared once (default, help, valid values, older runs' value, whether it
changes results), and config.json files saved by older versions still load."""

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlp.config import ALWAYS, Config, ConfigError, Interval, OneOf

# The fields of the first saved config.json format, frozen: a field added since must declare the
# value those runs had (`older_runs`), or loading them fails here.
FIRST_FORMAT = (
    "hidden_sizes", "batch_norm", "dropout", "dropout_layers", "l2", "initializer", "whitening",
    "whitening_epsilon", "epochs", "batch_size", "learning_rate", "lr_schedule", "warmup_epochs",
    "plateau_factor", "plateau_patience", "plateau_min_delta", "plateau_cooldown",
    "min_learning_rate", "early_stopping", "early_stopping_patience", "early_stopping_min_delta",
    "early_stopping_start_epoch", "label_smoothing", "augment_shift", "augment_flip",
    "augment_erase", "ema_decay", "test_time_flip", "seed", "precision", "steps_per_loop",
    "deterministic", "strategy", "cpu_devices", "sync_batch_norm", "data_dir",
    "verify_checksums", "validation_size", "train_subset", "logdir", "run_name", "histograms")


def test_every_field_declares_its_parts_and_its_default_is_valid():
    for f in dataclasses.fields(Config):
        meta = f.metadata
        assert isinstance(meta.get("help"), str) and meta["help"].strip(), f.name
        assert hasattr(meta.get("valid"), "problem"), f"{f.name} declares no valid values"
        assert "older_runs" in meta and isinstance(meta.get("result"), bool), f.name
        default = getattr(Config(), f.name)
        if default is not None:
            assert meta["valid"].problem(default) is None, f"{f.name}'s default is not valid"
        if meta["older_runs"] is not ALWAYS:
            assert meta["valid"].problem(meta["older_runs"]) is None, f.name
    Config().validate()


def test_a_config_saved_by_the_first_version_loads_with_the_values_those_runs_had():
    saved = {name: value for name, value in Config().to_dict().items() if name in FIRST_FORMAT}
    assert set(saved) == set(FIRST_FORMAT)
    loaded = Config.from_dict({**saved, "collective_timeout": 30}, "config.json")
    added = {f.name: f.metadata["older_runs"] for f in dataclasses.fields(Config)
             if f.name not in FIRST_FORMAT}
    assert added == {"kernels": "tensorflow", "heartbeat_timeout": 10.0, "sharpness": False,
                     "corruptions": True, "test_time_shifts": 0, "sam_rho": 0.0,
                     "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "conv_channels": (),
                     "teacher": None, "teacher_weight": 0.5, "teacher_temperature": 4.0,
                     "figures": True, "lookahead_steps": 0, "lookahead_alpha": 0.5}
    assert {name: getattr(loaded, name) for name in added} == added
    assert loaded.validate() == dataclasses.replace(Config(), **added)


def test_only_the_declared_fields_may_differ_on_resume():
    differ = set(Config().to_dict()) - set(Config().result_fields())
    assert differ == {"data_dir", "logdir", "run_name", "steps_per_loop", "histograms",
                      "figures", "heartbeat_timeout", "sharpness", "corruptions"}


def test_a_saved_config_missing_a_field_or_with_a_strange_one_is_refused():
    values = Config().to_dict()
    with pytest.raises(ConfigError, match="missing settings epochs"):
        Config.from_dict({k: v for k, v in values.items() if k != "epochs"}, "config.json")
    with pytest.raises(ConfigError, match="unknown settings colour"):
        Config.from_dict({**values, "colour": "red"}, "config.json")


NUMBER_FIELDS = [f for f in dataclasses.fields(Config) if isinstance(f.metadata["valid"], Interval)]


@given(st.sampled_from(NUMBER_FIELDS), st.floats(-1e6, 1e6, allow_nan=False))
def test_validate_accepts_a_number_exactly_inside_its_declared_interval(f, number):
    interval = f.metadata["valid"]
    value = round(number) if f.type is int else number
    inside = ((value >= interval.low if interval.low_in else value > interval.low)
              and (value <= interval.high if interval.high_in else value < interval.high))
    config = dataclasses.replace(Config(), **{f.name: value})  # a plateau schedule: no warm-up
    try:
        config.validate()
        accepted = True
    except ConfigError as error:
        assert str(error).startswith(f"--{f.name.replace('_', '-')}: "), error
        accepted = False
    assert accepted == inside, (f.name, value)


def test_the_intervals_say_what_is_wrong():
    assert Interval(0, low_in=False).problem(0) == "must be positive, got 0"
    assert Interval(0).problem(-1) == "must be zero or more, got -1"
    assert Interval(0.0, 1.0).problem(1.0) == "must be in [0, 1), got 1.0"
    assert Interval(0.0, 1.0, low_in=False).problem(0.0) == "must be in (0, 1), got 0.0"
    assert Interval(0.0).problem(math.inf) == "must be zero or more, got inf"
    assert OneOf(("a", "b")).problem("c") == "must be one of a, b, got 'c'"
