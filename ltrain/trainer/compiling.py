"""`torch.compile` and the trainer: a compiled module given to a run, and the compile time said.

`trainer.fit(torch.compile(model))` hands the trainer torch's `OptimizedModule`, a wrapper that
is no `Module`. As in Lightning, the run takes the module inside it and puts its `forward` and
the step methods it implements through the wrapper's compiler, so the module trains compiled and
its checkpoints hold its own state_dict keys (no `_orig_mod.`). Compiling a submodule inside
`configure_model` (`self.net = torch.compile(self.net)`) needs nothing from the trainer; its
keys carry `_orig_mod.`, as in Lightning.

Either way the first training step of a fit compiles, which can take a minute on a CPU: the
trainer says how long it took, in one line, so a slow start is not a mystery.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from ltrain.console import info
from ltrain.errors import MisconfigurationException
from ltrain.module import Module

if TYPE_CHECKING:
    from ltrain.trainer.trainer import Trainer

# what Lightning runs through the compiler of a compiled module (those the module implements)
_COMPILED_METHODS = ("forward", "training_step", "validation_step", "test_step", "predict_step")


def _optimized_module_type() -> type[Any] | None:
    """torch's compiled-module class, or None while nothing has imported torch.compile's code
    (then nothing is compiled, and importing it here would cost a second a run)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return None if eval_frame is None else eval_frame.OptimizedModule


def unwrap_compiled(model: Any, stage: str) -> Any:
    """The module inside `torch.compile(module)`, its methods compiled; anything else as given."""
    kind = _optimized_module_type()
    if kind is None or not isinstance(model, kind):
        return model
    inner = model._orig_mod
    if not isinstance(inner, Module):
        raise MisconfigurationException(
            f"Trainer.{stage}(model=...) got torch.compile() of a {type(inner).__name__}; "
            "compile an ltrain.Module (LightningModule), or a submodule inside configure_model"
        )
    originals = inner.__dict__.setdefault("_uncompiled_methods", {})
    for name in _COMPILED_METHODS:
        if getattr(type(inner), name, None) in (None, getattr(Module, name, None)):
            continue  # not implemented: left alone, so the loops still know it is missing
        original = originals.setdefault(name, getattr(inner, name))
        setattr(inner, name, model.dynamo_ctx(original))
    return inner


def is_compiled(model: Module) -> bool:
    """The module, or one of its submodules, runs through `torch.compile`."""
    kind = _optimized_module_type()
    if kind is None:
        return False
    return "_uncompiled_methods" in vars(model) or any(isinstance(m, kind) for m in model.modules())


def say_compile_time(trainer: Trainer, began: float) -> None:
    """Once a fit: how long the first training step took (torch.compile compiles in it)."""
    trainer._first_compiled_step = False
    if trainer.is_global_zero:
        info(
            f"torch.compile: the first training step took {time.perf_counter() - began:.1f} s "
            "(compiling included; later steps reuse the compiled code)"
        )
