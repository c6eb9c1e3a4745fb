"""Config loading, `--set` overrides and validation against real signatures."""

from __future__ import annotations

import pytest
import yaml

from ltrain.app.config import (
    apply_override,
    config_keys,
    instantiate,
    load_config,
    resolve,
    to_yaml,
)
from ltrain.app.errors import ConfigError

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
    again = resolve(load_config(path)).config
    assert again == resolved


def test_every_problem_is_reported_with_its_dotted_key():
    config = _copy()
    config["trainer"]["max_epoch"] = 3
    config["model"]["init_args"]["lr"] = "fast"
    config["data"]["init_args"]["batch_sise"] = 8
    with pytest.raises(ConfigError) as caught:
        resolve(config, source="c.yaml")
    problems = caught.value.problems
    assert "trainer.max_epoch: unknown key; did you mean 'max_epochs'?" in problems
    assert "model.init_args.lr: expected float, got 'fast'" in problems
    assert "data.init_args.batch_sise: unknown key; did you mean 'batch_size'?" in problems
    assert str(caught.value).splitlines()[0].endswith("(c.yaml)")


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
    resolved = resolve(load_config(tmp_path / "c.yaml"), base_dir=str(tmp_path)).config
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
    resolved = resolve(load_config(tmp_path / "c.yaml"), base_dir=str(tmp_path)).config
    assert resolved["model"]["class_path"] == "made.Model"
    assert type(instantiate(resolved["model"])).__name__ == "Local"
