"""`--set KEY=VALUE` overrides: parsed as YAML and applied to a config, in order.

`init_args` may be left out of a key: `model.lr` is `model.init_args.lr`.
Each override reports the key of what it brought, so a problem `config.resolve` finds there is
named as that `--set`'s and not the config file's: the user fixes the command, not the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ltrain.app.errors import ConfigError


def parse_value(raw: str) -> Any:
    """A value typed on the command line, read as YAML (`3`, `[64, 32]`, `null`); text that is
    no valid YAML stays text, and an empty value is null."""
    import yaml

    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.0=value` into its key path and its YAML-parsed value."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. trainer.max_epochs=3")
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key; expected a dotted path such as model.lr")
    return key.split("."), parse_value(raw)


def apply_override(config: dict[str, Any], text: str) -> str:
    """Apply one `--set KEY=VALUE` in place; return the dotted key of what it brought.

    `init_args` may be left out of the path. The key returned is the value's own
    (`model.init_args.lr`), or the first one the override had to create on the way (`modle` for
    `modle.lr=1`): a problem at or under it is reported as this `--set`'s, not the file's.
    """
    parts, value = parse_override(text)
    node: Any = config
    walked: list[str] = []
    created: str | None = None
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if (
            isinstance(node, dict)
            and "class_path" in node
            and part not in ("class_path", "init_args")
        ):
            if node.get("init_args") is None:  # missing, or `init_args: null` in the YAML
                node["init_args"] = {}
            node = node["init_args"]
            walked.append("init_args")
        where = ".".join([*walked, part])
        if isinstance(node, list):
            if not part.lstrip("-").isdigit():
                raise ConfigError(f"--set {text!r}: {'.'.join(walked)} is a list; use an index")
            index = int(part)
            if not -len(node) <= index < len(node):
                raise ConfigError(
                    f"--set {text!r}: {where}: list index out of range "
                    f"({'.'.join(walked)} has {len(node)} items)"
                )
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if child is None:
                    if parts[i + 1].isdigit():
                        raise ConfigError(
                            f"--set {text!r}: {where} is not set, so it has no item {parts[i + 1]}"
                        )
                    child = node[part] = {}
                    created = created or where
                node = child
        else:
            raise ConfigError(
                f"--set {text!r}: {'.'.join(walked)} is a {type(node).__name__}, it has no {part!r}"
            )
        walked.append(part)
    return created or ".".join(walked)


def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> list[tuple[str, str]]:
    """Apply `--set` overrides in order; return (key, `--set TEXT`) for each, for `resolve`."""
    return [(apply_override(config, text), f"--set {text}") for text in overrides]
