"""`ModelSummary`: the table of a module's direct children and its parameter counts, at fit start."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ltrain.callbacks.base import Callback
from ltrain.console import info

if TYPE_CHECKING:
    from ltrain.module import Module
    from ltrain.trainer.trainer import Trainer


def human_count(number: float) -> str:
    """1234 -> '1.2 K', as Lightning prints parameter counts."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if number >= scale:
            return f"{number / scale:.1f} {unit}"
    return str(int(number))


def summary_table(module: nn.Module) -> str:
    """Lightning's summary layout: one row per child, then trainable / total counts and size."""
    rows = []
    for index, (name, child) in enumerate(module.named_children()):
        params = sum(p.numel() for p in child.parameters())
        mode = "train" if child.training else "eval"
        rows.append([str(index), name, type(child).__name__, human_count(params), mode])
    headers = ["", "Name", "Type", "Params", "Mode"]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "-" * len(line(headers))
    parameters = list(module.parameters())
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    total = sum(p.numel() for p in parameters)
    size_mb = sum(p.numel() * p.element_size() for p in parameters) / 1e6
    out = [line(headers), rule, *(line(r) for r in rows), rule]
    out.append(f"{human_count(trainable):<10}Trainable params")
    out.append(f"{human_count(total - trainable):<10}Non-trainable params")
    out.append(f"{human_count(total):<10}Total params")
    out.append(f"{size_mb:<10.3f}Total estimated model params size (MB)")
    return "\n".join(out)


class ModelSummary(Callback):
    def __init__(self, max_depth: int = 1) -> None:
        self.max_depth = max_depth

    def on_fit_start(self, trainer: Trainer, pl_module: Module) -> None:
        if self.max_depth and trainer.is_global_zero:
            info(summary_table(pl_module))
