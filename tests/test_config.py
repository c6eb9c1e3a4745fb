"""Config loading, `--set` overrides and validation against real signatures."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

import pytest
import yaml

from ltrain.app.checking import check_value
from ltrain.app.config import (
    config_keys,
    instantiate,
    load_yaml,
    resolve,
    to_yaml,
)
from ltrain.app.errors import ConfigError
from ltrain.app.overrides import apply_override, apply_overrides
from ltrain.app.signatures import stand_in

BASE = {
    "name": "t",
    "model": {"class_path": "MLPClassifier", "init_args": {"in_features": 64}},
    "data": {"class_path": "Digits", "init_args": {"batch_size": 16}},
    "trainer": {
        "max_epochs": 2,
        "callbacks": [{"class_path": "EarlyStopping", "init_args": {"monitor": "valid_loss"}}],
    },
}


def _copy():
    return yaml.safe_load(yaml.safe_dump(BASE))


def test_set_may_leave_out_init_args_and_parses_values_as_yaml():
    config = _copy()
    apply_override(config, "model.lr=3e-4")
    apply_override(config, "trainer.callbacks.0.patience=5")
    apply_override(config, "trainer.precision=bf16-mixed")
    apply_override(config, "trainer.devices=[0]")
    apply_override(config, "trainer.min_epochs=null")
    assert config["model"]["init_args"]["lr"] == "3e-4"  # YAML 1.1 reads it as text ...
    assert resolve(config).config["model"]["init_args"]["lr"] == pytest.approx(
        3e-4
    )  # ... the hint makes it a float
    assert config["trainer"]["callbacks"][0]["init_args"]["patience"] == 5
    assert config["trainer"]["precision"] == "bf16-mixed"
    assert config["trainer"]["devices"] == [0]
    assert config["trainer"]["min_epochs"] is None


def test_set_reaches_a_class_whose_init_args_is_null():
    config = {"model": {"class_path": "MLPClassifier", "init_args": None}}
    apply_override(config, "model.lr=0.1")
    assert config["model"]["init_args"] == {"lr": 0.1}
    assert resolve(config).config["model"]["init_args"]["lr"] == 0.1


def test_set_reports_the_key_of_what_it_brought_for_error_messages():
    overrides = ["model.lr=1", "modle.lr=1", "trainer.callbacks.0.patience=2", "trainer=[1]"]
    assert apply_overrides(_copy(), overrides) == [
        ("model.init_args.lr", "--set model.lr=1"),
        ("modle", "--set modle.lr=1"),  # created on the way: everything under it is the --set's
        ("trainer.callbacks.0.init_args.patience", "--set trainer.callbacks.0.patience=2"),
        ("trainer", "--set trainer=[1]"),
    ]


def test_set_replaces_class_path_and_applies_in_order():
    config = _copy()
    apply_override(config, "trainer.max_epochs=3")
    apply_override(config, "trainer.max_epochs=4")
    apply_override(config, "model.class_path=CNNClassifier")
    assert config["trainer"]["max_epochs"] == 4
    assert config["model"]["class_path"] == "CNNClassifier"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs", "expected KEY=VALUE"),
        ("=3", "empty key"),
        ("trainer..x=1", "empty key"),
        ("trainer.callbacks.3.init_args.patience=1", "list index out of range"),
        ("trainer.callbacks.x=1", "is a list; use an index"),
        ("trainer.plugins.0=1", "is not set, so it has no item 0"),
    ],
)
def test_malformed_set_is_refused_with_its_text(override, message):
    with pytest.raises(ConfigError, match=message) as caught:
        apply_override(_copy(), override)
    assert override in str(caught.value)


def test_resolve_fills_defaults_and_expands_short_names():
    resolved = resolve(_copy()).config
    assert resolved["model"]["class_path"] == "ltrain.zoo.classifier.MLPClassifier"
    assert resolved["model"]["init_args"]["lr"] == 1e-3
    assert resolved["data"]["init_args"] == {
        "batch_size": 16,
        "val_fraction": 0.15,
        "test_fraction": 0.15,
        "seed": 0,
    }
    assert resolved["trainer"]["log_every_n_steps"] is None
    assert resolved["trainer"]["callbacks"][0]["init_args"]["patience"] == 3
    assert resolved["seed"] == 0


def test_resolved_yaml_reads_back_to_the_same_config(tmp_path):
    resolved = resolve(_copy()).config
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(resolved, "ltrain config x.yaml"))
    again = resolve(load_yaml(path)).config
    assert again == resolved


def test_every_problem_is_reported_with_its_dotted_key():
    config = _copy()
    config["trainer"]["max_epoch"] = 3
    config["model"]["init_args"]["lr"] = "fast"
    config["data"]["init_args"]["batch_sise"] = 8
    with pytest.raises(ConfigError) as caught:
        resolve(config, source="c.yaml")
    problems = caught.value.problems
    assert "trainer.max_epoch: unknown key; did you mean 'max_epochs'? (c.yaml)" in problems
    assert "model.init_args.lr: expected float, got 'fast' (c.yaml)" in problems
    assert "data.init_args.batch_sise: unknown key; did you mean 'batch_size'? (c.yaml)" in problems


def test_nested_class_values_are_checked_and_instantiated():
    config = {
        "model": {
            "class_path": "ImageClassifier",
            "init_args": {
                "backbone": {"class_path": "SmallCNN", "init_args": {"width": 4}},
                "lr": 0.01,
            },
        }
    }
    resolved = resolve(config).config
    model = instantiate(resolved["model"])
    assert type(model.model).__name__ == "SmallCNN"
    assert model.model.features[0].out_channels == 4


def test_factory_functions_may_build_nested_values():
    config = {
        "model": {
            "class_path": "ImageClassifier",
            "init_args": {
                "backbone": {
                    "class_path": "torchvision.models.resnet18",
                    "init_args": {"num_classes": 10},
                }
            },
        }
    }
    result = resolve(config)
    assert "model.init_args.backbone.init_args.num_classes" in result.unchecked
    model = instantiate(result.config["model"])
    assert model.model.fc.out_features == 10


def test_user_module_next_to_the_config_is_importable(tmp_path):
    (tmp_path / "my_models.py").write_text(
        "from ltrain.zoo import MLPClassifier\n"
        "class Tiny(MLPClassifier):\n"
        "    def __init__(self, width: int = 3):\n"
        "        super().__init__(in_features=64)\n"
        "        self.width = width\n"
    )
    (tmp_path / "c.yaml").write_text("model: {class_path: my_models.Tiny, init_args: {width: 5}}\n")
    resolved = resolve(load_yaml(tmp_path / "c.yaml"), base_dir=str(tmp_path)).config
    assert instantiate(resolved["model"]).width == 5


def test_set_key_completion_reads_the_config_and_trainer_arguments(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    keys = config_keys(str(path))
    assert "model.in_features" in keys
    assert "trainer.callbacks.0.monitor" in keys
    assert "trainer.max_epochs" in keys and "trainer.precision" in keys


def test_ltrain_classes_outside_the_signature_data_are_imported_instead():
    # `ltrain.LightningModule` comes from the package's lazy __getattr__, which only running it resolves
    config = {"model": {"class_path": "ltrain.LightningModule"}}
    assert resolve(config).config["model"] == {
        "class_path": "ltrain.module.Module",
        "init_args": {},
    }


def test_class_made_in_a_function_keeps_the_path_the_config_gave(tmp_path):
    (tmp_path / "made.py").write_text(
        "from ltrain.zoo import MLPClassifier\n"
        "def build():\n"
        "    class Local(MLPClassifier):\n"
        "        pass\n"
        "    return Local\n"
        "Model = build()\n"
    )
    (tmp_path / "c.yaml").write_text(
        "model: {class_path: made.Model, init_args: {in_features: 64}}\n"
    )
    resolved = resolve(load_yaml(tmp_path / "c.yaml"), base_dir=str(tmp_path)).config
    assert resolved["model"]["class_path"] == "made.Model"
    assert type(instantiate(resolved["model"])).__name__ == "Local"


# ---------------------------------------------------------------------- the type matcher
# users' classes spell hints either way, `Optional[int]` or `int | None`: both are tested (noqa)
MODULE = stand_in("torch.nn.modules.module.Module")  # ImageClassifier's backbone hint
SMALL_CNN = {"class_path": "ltrain.zoo.networks.SmallCNN", "init_args": {}}
SMALL_CNN_DEFAULTS = {"in_channels": 1, "num_classes": 10, "width": 32}


@pytest.mark.parametrize(
    ("value", "hint", "normalised"),
    [
        (3, int, 3),
        (True, bool, True),
        (3, float, 3.0),  # an int is a float, as in Python's numeric tower
        ("1e-3", float, 0.001),  # YAML 1.1 reads 1e-3 as text
        ("fast", str, "fast"),
        (None, type(None), None),
        (None, Optional[int], None),  # noqa: UP045
        (3, Optional[int], 3),  # noqa: UP045
        (3, int | None, 3),
        ("1e-3", Union[float, str], 0.001),  # noqa: UP007 - str is tried last
        ("abc", float | str, "abc"),
        ([0], int | str | list[int], [0]),
        ("max", Literal["min", "max"], "max"),
        (2, Literal[1, 2], 2),
        ([1, 2], list[float], [1.0, 2.0]),
        ([1, "a"], tuple[int, str], [1, "a"]),  # YAML has no tuples: a list of the right items
        ([1, 2, 3], tuple[int, ...], [1, 2, 3]),
        ({"a": 1}, dict[str, float], {"a": 1.0}),
        ({"a": [1]}, dict, {"a": [1]}),
        ("anything", Any, "anything"),
    ],
    ids=repr,
)
def test_type_matcher_accepts_and_normalises(value, hint, normalised):
    result, problems = check_value(value, hint)
    assert problems == []
    assert result == normalised and type(result) is type(normalised)


@pytest.mark.parametrize(
    ("value", "hint", "problem"),
    [
        (True, int, "value: expected int, got True"),
        (True, float, "value: expected float, got True"),
        (True, Union[int, float], "value: expected int or float, got True"),  # noqa: UP007
        (3, bool, "value: expected bool, got 3"),
        (1, Optional[bool], "value: expected bool or null, got 1"),  # noqa: UP045
        (True, Literal[1, 2], "value: expected one of 1, 2, got True"),
        (0, Literal[False, True], "value: expected one of False, True, got 0"),
        (1.5, int, "value: expected int, got 1.5"),
        ("3", int, "value: expected int, got '3'"),
        ("fast", float, "value: expected float, got 'fast'"),
        (3, str, "value: expected str, got 3"),
        (1, type(None), "value: expected null, got 1"),
        ("x", Optional[int], "value: expected int or null, got 'x'"),  # noqa: UP045
        ("avg", Literal["min", "max"], "value: expected one of 'min', 'max', got 'avg'"),
        ("a", list[int], "value: expected a list of int, got 'a'"),
        ([1, "a"], list[int], "value.1: expected int, got 'a'"),
        # the arm whose shape fits reports what is wrong inside it
        ([1, "a"], Optional[list[int]], "value.1: expected int, got 'a'"),  # noqa: UP045
        ([1, 2, "x"], tuple[int, ...], "value.2: expected int, got 'x'"),
        ({"a": "x"}, dict[str, float], "value.a: expected float, got 'x'"),
        ([1], dict, "value: expected a mapping, got [1]"),
        ({"class_path": "Digits"}, dict, "value: expected a mapping, got {'class_path': 'Digits'}"),
    ],
    ids=repr,
)
def test_type_matcher_names_the_key_and_what_was_expected(value, hint, problem):
    assert check_value(value, hint)[1] == [problem]


def test_type_matcher_checks_and_fills_a_nested_class():
    value = {"class_path": "SmallCNN", "init_args": {"width": 4}}
    result, problems = check_value(value, MODULE)
    assert problems == []
    assert result == {**SMALL_CNN, "init_args": {**SMALL_CNN_DEFAULTS, "width": 4}}
    # a hint that allows anything still checks the class the value names
    assert check_value(value, Any) == (result, [])
    # `init_args: null` is no arguments
    assert check_value({"class_path": "SmallCNN", "init_args": None}, MODULE) == (
        {**SMALL_CNN, "init_args": SMALL_CNN_DEFAULTS},
        [],
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            {"class_path": "SmallCNN", "init_args": {"width": "wide"}},
            "value.init_args.width: expected int, got 'wide'",
        ),
        (
            {"class_path": "SmallCNN", "init_args": {"widht": 4}},
            "value.init_args.widht: unknown key; did you mean 'width'?",
        ),
        (
            {"class_path": "Digits"},
            "value.class_path: Digits is not a Module subclass, which this value must be",
        ),
        ("resnet", "value: expected a Module ({class_path: ..., init_args: ...}), got 'resnet'"),
    ],
    ids=repr,
)
def test_type_matcher_names_the_nested_key_that_is_wrong(value, problem):
    assert check_value(value, MODULE)[1] == [problem]
