"""Numeric precision: which dtype the model runs in, autocast, and the fp16 GradScaler.

One small object per run that the loop calls (`forward_context()`, `backward()`,
`optimizer_step()`), so the loop has no precision branches. A precision the device cannot run is
refused with the alternatives named, never silently changed. Under '64-true', '16-true' and
'bf16-true' the steps run with that dtype as torch's default, as in Lightning, so tensors a step
creates (`torch.randn(...)`) match the weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from ltrain.batch import apply_to_tensors
from ltrain.errors import MisconfigurationException

# accepted spellings -> canonical Lightning name
_ALIASES: dict[Any, str] = {
    "32-true": "32-true",
    "32": "32-true",
    32: "32-true",
    "64-true": "64-true",
    "64": "64-true",
    64: "64-true",
    "16-mixed": "16-mixed",
    "16": "16-mixed",
    16: "16-mixed",
    "bf16-mixed": "bf16-mixed",
    "bf16": "bf16-mixed",
    "16-true": "16-true",
    "bf16-true": "bf16-true",
}
# one reusable (and re-entrant) no-op context for the fp32 steps, not a new object per step
_NO_CONTEXT = contextlib.nullcontext()
VALID_PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")


def canonical_precision(precision: Any) -> str:
    """Lightning's canonical name for `precision`, or a clear error listing the valid ones."""
    name = _ALIASES.get(precision) if isinstance(precision, (str, int)) else None
    if name is None:
        raise MisconfigurationException(
            f"precision={precision!r} is not supported; valid: {', '.join(VALID_PRECISIONS)} "
            "(also 32, 64, 16, 'bf16')"
        )
    return name


class Precision:
    """Full precision of a given dtype: the model and floating inputs are cast to it."""

    def __init__(self, name: str, dtype: torch.dtype = torch.float32) -> None:
        self.name = name
        self.dtype = dtype

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module if self.dtype == torch.float32 else module.to(self.dtype)

    def convert_input(self, batch: Any) -> Any:
        if self.dtype == torch.float32:
            return batch
        return apply_to_tensors(batch, self._cast_float)

    def _cast_float(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.dtype) if tensor.is_floating_point() else tensor

    def forward_context(self) -> contextlib.AbstractContextManager:
        """What the steps run inside: the run's dtype as torch's default dtype."""
        return self.module_init_context()

    def module_init_context(self) -> contextlib.AbstractContextManager:
        """What `Trainer.init_module` creates parameters under: the run's dtype as torch's
        default dtype (a '-true' precision; mixed precisions keep float32 weights)."""
        if self.dtype == torch.float32:
            return _NO_CONTEXT
        return _default_dtype(self.dtype)

    def backward(self, loss: torch.Tensor, module: Any, *args: Any, **kwargs: Any) -> None:
        module.backward(loss, *args, **kwargs)

    def optimizer_step(
        self,
        optimizer: torch.optim.Optimizer,
        closure: Callable[[], Any],
        before_step: Callable[[], None],
        skip_without_loss: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Run `closure` (forward + backward) inside `optimizer.step`, then `before_step` hooks.

        `skip_without_loss`: under automatic optimization a closure returning None means
        training_step skipped the batch; only the GradScaler path needs to know.
        """

        def closure_then_hooks() -> Any:
            loss = closure()
            before_step()
            return loss

        return optimizer.step(closure=closure_then_hooks, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore outside fp16."""


class MixedPrecision(Precision):
    """torch.autocast to fp16 or bf16 with fp32 weights; fp16 adds a GradScaler."""

    def __init__(self, name: str, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(name, torch.float32)
        self.device_type = device.type
        self.autocast_dtype = dtype
        self.scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def forward_context(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def backward(self, loss: torch.Tensor, module: Any, *args: Any, **kwargs: Any) -> None:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        module.backward(loss, *args, **kwargs)

    def optimizer_step(
        self,
        optimizer: torch.optim.Optimizer,
        closure: Callable[[], Any],
        before_step: Callable[[], None],
        skip_without_loss: bool = False,
        **kwargs: Any,
    ) -> Any:
        if self.scaler is None:
            return super().optimizer_step(optimizer, closure, before_step, **kwargs)
        # The scaler must see the gradients before the step, so the closure cannot run inside it:
        # closure-driven optimizers such as LBFGS are not supported with 16-mixed (as in Lightning).
        loss = closure()
        self.scaler.unscale_(optimizer)  # hooks and clipping see true gradients
        before_step()
        if loss is None and skip_without_loss:  # training_step skipped the batch
            return None
        result = self.scaler.step(optimizer, **kwargs)
        self.scaler.update()
        return result

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def make_precision(precision: Any, device: torch.device) -> Precision:
    """The precision object for `precision` on `device`, or a clear error if it cannot run there."""
    name = canonical_precision(precision)
    if name == "32-true":
        return Precision(name, torch.float32)
    if name == "64-true":
        if device.type == "mps":
            raise MisconfigurationException("precision='64-true' is not supported on MPS devices.")
        return Precision(name, torch.float64)
    if name == "16-true":
        return Precision(name, torch.float16)
    if name == "bf16-true":
        _require_bf16(name, device)
        return Precision(name, torch.bfloat16)
    if name == "bf16-mixed":
        _require_bf16(name, device)
        return MixedPrecision(name, device, torch.bfloat16)
    if device.type != "cuda":
        raise MisconfigurationException(
            f"precision='16-mixed' needs a CUDA GPU (fp16 autocast with a GradScaler); the run is "
            f"on {device.type}. Use precision='bf16-mixed' or '32-true' there."
        )
    return MixedPrecision(name, device, torch.float16)


def _require_bf16(name: str, device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MisconfigurationException(
            f"precision={name!r}: this GPU has no bfloat16 support; use '16-mixed' or '32-true'."
        )
