"""`ModelSummary`: the table of a module's layers and its parameter counts, at fit start.

The table is Lightning 2.6's, cell for cell: one row per layer to `max_depth` (dotted names such
as `net.0`), with FLOPs and, when the module sets `example_input_array`, the input and output
sizes of each layer, measured by running that example once in eval mode (then the modes are put
back); then the totals. `summarize` gives the columns and totals, `format_summary` the text.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter
from torch.utils.flop_counter import FlopCounterMode

from ltrain.callbacks.base import Callback
from ltrain.console import info

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer

_BITS = {"64-true": 64, "32-true": 32, "16-true": 16, "bf16-true": 16}


def human_count(number: float) -> str:
    """Lightning's abbreviation of a count: 123 -> '123  ', 1234 -> '1.2 K', 4e14 -> '400 T'."""
    units = [" ", "K", "M", "B", "T"]
    digits = math.floor(math.log10(number)) + 1 if number > 0 else 1
    group = min(math.ceil(digits / 3), len(units)) - 1
    scaled = number / 10 ** (3 * group)
    if group == 0 or scaled >= 100:
        return f"{int(scaled):,d} {units[group]}"
    return f"{scaled:,.1f} {units[group]}"


def _count(module: nn.Module) -> int:
    """Parameters of known shape (a lazy layer's uninitialized ones count 0, as in Lightning)."""
    return sum(
        0 if isinstance(p, UninitializedParameter) else p.numel() for p in module.parameters()
    )


def _warn_inexact(module: nn.Module, precision: str) -> None:
    if precision not in _BITS:
        warnings.warn(
            f"Precision {precision} is not supported by the model summary; the estimated model "
            "size in MB counts 32 bits a parameter.",
            UserWarning,
            stacklevel=3,
        )
    if any(isinstance(p, UninitializedParameter) for p in module.parameters()):
        warnings.warn(
            "The total number of parameters detected may be inaccurate because the model "
            "contains an `UninitializedParameter`; set `self.example_input_array` to count them.",
            UserWarning,
            stacklevel=3,
        )


def _shape(value: Any) -> Any:
    if hasattr(value, "shape"):
        return list(value.shape)
    if isinstance(value, (list, tuple)):
        return [_shape(item) for item in value]
    return "?"


@dataclass
class Summary:
    """A summary's columns (header, cells) and totals, as the table prints them."""

    columns: list[tuple[str, list[str]]]
    total_params: int
    trainable_params: int
    size_mb: float
    train_modules: int
    eval_modules: int
    total_flops: int


def _layers(module: nn.Module, max_depth: int) -> list[tuple[str, nn.Module]]:
    if max_depth == 0:
        return []
    if max_depth == 1:
        return list(module.named_children())
    named = list(module.named_modules())[1:]
    return [(n, m) for n, m in named if max_depth == -1 or n.count(".") < max_depth]


def _run_example(
    module: Module, layers: list[tuple[str, nn.Module]], counter: FlopCounterMode, context: Any
) -> dict[str, tuple[Any, Any]]:
    """Each layer's input and output shapes on its first call while `example_input_array` runs."""
    from ltrain.exporting import to_module_device

    sizes: dict[str, tuple[Any, Any]] = {}
    handles = []
    for name, layer in layers:
        if isinstance(layer, torch.jit.ScriptModule):
            continue

        def record(_: nn.Module, args: Any, kwargs: Any, out: Any, name: str = name) -> None:
            if name not in sizes:
                inputs = (*args, *kwargs.values())
                sizes[name] = (_shape(inputs[0] if len(inputs) == 1 else inputs), _shape(out))

        handles.append(layer.register_forward_hook(record, with_kwargs=True))
    example = to_module_device(module, module.example_input_array)
    modes = {name: m.training for name, m in module.named_modules()}
    module.eval()
    try:
        with torch.no_grad(), context, counter:
            if isinstance(example, (list, tuple)):
                module(*example)
            elif isinstance(example, dict):
                module(**example)
            else:
                module(example)
    finally:
        for handle in handles:
            handle.remove()
        for name, m in module.named_modules():
            m.training = modes.get(name, m.training)
    return sizes


def summarize(
    module: Module, max_depth: int = 1, precision: str = "32-true", forward_context: Any = None
) -> Summary:
    """The summary of `module`'s layers to `max_depth` (-1: all; 0: none); `precision` sizes
    the parameters in MB and `forward_context` (the trainer's precision) wraps the example run."""
    if not isinstance(max_depth, int) or max_depth < -1:
        raise ValueError(f"`max_depth` can be -1, 0 or > 0, got {max_depth}.")
    layers = _layers(module, max_depth)
    counter = FlopCounterMode(display=False, depth=max_depth + 1)
    example = module.example_input_array is not None
    sizes = (
        _run_example(module, layers, counter, forward_context or contextlib.nullcontext())
        if example
        else {}
    )
    _warn_inexact(module, precision)  # after the example run, which initializes lazy layers
    flops = counter.get_flop_counts()
    counts = [_count(layer) for _, layer in layers]
    columns = [
        (" ", [str(i) for i in range(len(layers))]),
        ("Name", [name for name, _ in layers]),
        ("Type", [type(layer).__name__ for _, layer in layers]),
        ("Params", [human_count(c) for c in counts]),
        ("Mode", ["train" if layer.training else "eval" for _, layer in layers]),
        (
            "FLOPs",
            [
                human_count(sum(flops.get(f"{type(module).__name__}.{name}", {}).values()))
                for name, _ in layers
            ],
        ),
    ]
    if example:
        for header, index in (("In sizes", 0), ("Out sizes", 1)):
            cells = [sizes.get(name, ("?", "?"))[index] or "?" for name, _ in layers]
            columns.append((header, [str(cell) for cell in cells]))
    total = _count(module)
    if total > sum(counts):
        leftover = [" ", "other params", "n/a", human_count(total - sum(counts))]
        for (_, cells), cell in zip(columns, leftover + ["n/a"] * (len(columns) - 4), strict=True):
            cells.append(cell)
    trainable = sum(
        p.numel()
        for p in module.parameters()
        if p.requires_grad and not isinstance(p, UninitializedParameter)
    )
    modes = [m.training for m in list(module.modules())[1:]]
    return Summary(
        columns=columns,
        total_params=total,
        trainable_params=trainable,
        size_mb=total * _BITS.get(precision, 32) / 8 * 1e-6,
        train_modules=modes.count(True),
        eval_modules=modes.count(False),
        total_flops=counter.get_total_flops(),
    )


def format_summary(summary: Summary) -> str:
    """The table as Lightning prints it: padded cells, a rule under the header and the rows,
    then the totals, each value in a field of 10."""
    columns = summary.columns
    widths = [max([len(header), *(len(cell) for cell in cells)]) for header, cells in columns]
    rule = "-" * (sum(widths) + 3 * (len(columns) + 1))
    lines = [" | ".join(h.ljust(w) for (h, _), w in zip(columns, widths, strict=True)), rule]
    for row in zip(*(cells for _, cells in columns), strict=True):
        lines.append(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    lines.append(rule)
    return "\n".join(lines + format_totals(summary))


def format_totals(summary: Summary) -> list[str]:
    """The lines of totals under the table, each value in a field of 10."""
    totals = [
        (human_count(summary.trainable_params), "Trainable params"),
        (human_count(summary.total_params - summary.trainable_params), "Non-trainable params"),
        (human_count(summary.total_params), "Total params"),
        (f"{summary.size_mb:,.3f}", "Total estimated model params size (MB)"),
        (str(summary.train_modules), "Modules in train mode"),
        (str(summary.eval_modules), "Modules in eval mode"),
        (human_count(summary.total_flops), "Total Flops"),
    ]
    return [f"{value:<10}{label}" for value, label in totals]


def summary_table(module: Module, max_depth: int = 1, precision: str = "32-true") -> str:
    """`format_summary(summarize(module, max_depth, precision))`."""
    return format_summary(summarize(module, max_depth, precision))


class ModelSummary(Callback):
    """Print the summary of the module's layers to `max_depth` at fit start (0: no summary)."""

    def __init__(self, max_depth: int = 1) -> None:
        self.max_depth = max_depth

    def on_fit_start(self, trainer: Trainer, pl_module: Module) -> None:
        if self.max_depth and trainer.is_global_zero:
            summary = summarize(
                pl_module,
                self.max_depth,
                trainer.precision,
                trainer.precision_plugin.forward_context(),
            )
            info("\n" + format_summary(summary))
