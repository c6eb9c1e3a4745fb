"""What a `class_path` names: ltrain's short names, Lightning's paths, LightningCLI's bare names.

A config written for LightningCLI names classes three ways, and each must land on the class a
Lightning user means once `import lightning.pytorch` reads `import ltrain`:

- a dotted path into Lightning (`lightning.pytorch.callbacks.EarlyStopping`, as `--print_config`
  writes it) is ltrain's twin (`ltrain.callbacks.EarlyStopping`), or an error naming what ltrain
  lacks: a Lightning class in an ltrain run would not work;
- a bare name (`Adam`, `StepLR`, `MyModel`) is, as jsonargparse resolves it, the one loaded
  subclass of the slot's base class with that name; ltrain's built-in short names come first;
- any other dotted path is imported.

Printing goes the other way: LightningCLI writes a class as the shortest path it imports by
(`torch.optim.Adam`, not `torch.optim.adam.Adam`), and so does `public_path`.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import sys
from collections.abc import Sequence
from typing import Any

from ltrain.app.signatures import (
    SHORT_NAMES,
    ClassByName,
    ClassInfo,
    import_qualified,
    lightning_names,
    read_class,
)
from ltrain.app.signatures import public_path as stored_public_path

LIGHTNING_PREFIXES = ("lightning.pytorch.", "pytorch_lightning.")
# LightningCLI's ReduceLROnPlateau carries the `monitor` its configure_optimizers needs
REDUCE_LR_ON_PLATEAU = "ltrain.cli.ReduceLROnPlateau"
LR_SCHEDULER_BASES = ("torch.optim.lr_scheduler.LRScheduler", REDUCE_LR_ON_PLATEAU)


def find_class(path: Any, base: Any = None, modules: Sequence[str] = ()) -> tuple[Any, str | None]:
    """The class (or factory function) `path` names, as (target, None), or (None, the problem).

    `base` is what the value must be (a class, a stand-in, or a tuple of them); a bare name is
    looked up among its loaded subclasses, after importing `modules`: those of the class paths the
    config's sources named, which jsonargparse has imported by then, as it reads them in order.
    ltrain's own classes come back as `ClassInfo`, read from the signature data without torch.
    """
    if not isinstance(path, str) or not path:
        return None, f"expected a class name or dotted path, got {path!r}"
    if path.startswith(LIGHTNING_PREFIXES):
        return _lightning_twin(path)
    dotted = SHORT_NAMES.get(path, path)
    if "." not in dotted:
        return _by_bare_name(path, base, modules)
    found = read_class(dotted)  # ltrain's own classes, without importing torch
    if found is not None:
        return found, None
    module_name, _, attribute = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        return None, f"cannot import module {error.name!r} (from {path!r})"
    except Exception as error:
        return None, f"importing {module_name!r} failed: {type(error).__name__}: {error}"
    target = getattr(module, attribute, None)
    if target is None:
        return None, f"module {module_name!r} has no attribute {attribute!r}"
    return target, None


def public_path(target: Any) -> str:
    """The shortest dotted path `target` imports by, as LightningCLI prints class paths."""
    if isinstance(target, ClassInfo):
        return stored_public_path(target.path)
    module, qualname = target.__module__, target.__qualname__
    parts = module.split(".")
    for end in range(1, len(parts)):
        prefix = ".".join(parts[:end])
        if getattr(sys.modules.get(prefix), qualname, None) is target:
            return f"{prefix}.{qualname}"
    return f"{module}.{qualname}"


def real(cls: Any) -> Any:
    """The class itself: a stand-in is imported now, since an imported class is checked against it."""
    return import_qualified(cls.dotted) if isinstance(cls, ClassByName) else cls


def _lightning_twin(path: str) -> tuple[Any, str | None]:
    """ltrain's twin of a Lightning class: same package, same name (`callbacks.EarlyStopping`)."""
    parts = path.split(".")
    package = parts[2] if path.startswith("lightning.") else parts[1]
    name = parts[-1]
    if package == "cli" and name == "ReduceLROnPlateau":
        return import_qualified(REDUCE_LR_ON_PLATEAU), None
    twin = read_class(f"ltrain.{package}.{name}")
    if twin is not None:
        return twin, None
    # a twin outside the signature data (`callbacks.Timer`): its package's exports say (torch loads)
    with contextlib.suppress(ImportError):
        if name in importlib.import_module(f"ltrain.{package}").__all__:
            return import_qualified(f"ltrain.{package}.{name}"), None
    return None, f"{path} is Lightning's; ltrain has no {name} to run in its place"


def _by_bare_name(name: str, base: Any, modules: Sequence[str]) -> tuple[Any, str | None]:
    """A name without dots: the loaded subclass of `base` so named (jsonargparse's rule)."""
    bases = base if isinstance(base, tuple) else (base,) if base is not None else ()
    if name == "ReduceLROnPlateau" and REDUCE_LR_ON_PLATEAU in _dotted_names(bases):
        return import_qualified(REDUCE_LR_ON_PLATEAU), None
    if bases:
        for module in modules:
            with contextlib.suppress(Exception):  # a module that fails is reported where named
                importlib.import_module(module)
        matches = sorted({public_path(c) for b in bases for c in _subclasses(real(b), name)})
        if len(matches) == 1:
            return import_qualified(matches[0]), None
        if matches:
            return None, f"several classes are named {name}: {', '.join(matches)}; give one's path"
    for kind, names in lightning_names().items():
        if name in names:
            return None, f"{name} is a Lightning {kind[:-1]} that ltrain does not have"
    close = difflib.get_close_matches(name, list(SHORT_NAMES), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return None, f"{name!r} is neither a built-in short name nor a dotted path (module.Class){hint}"


def _subclasses(base: type, name: str) -> list[type]:
    """Loaded, public, concrete subclasses of `base` (itself included) called `name`."""
    found, seen, todo = [], set(), [base]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        if cls.__name__ != name or "<locals>" in cls.__qualname__ or inspect.isabstract(cls):
            continue
        if "._" not in public_path(cls):
            found.append(cls)
    return found


def _dotted_names(bases: tuple[Any, ...]) -> set[str]:
    return {b.dotted if isinstance(b, ClassByName) else public_path(b) for b in bases}
