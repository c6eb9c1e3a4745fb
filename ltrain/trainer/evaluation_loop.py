"""Validation, test and predict: one loop over every loader's batches, one batch body for all three.

They differ only around that body: an evaluation batch's logged step values go out as a row and
its epoch ends with an epoch row and the metrics `validate()`/`test()` return; a prediction is kept
(and gathered across processes). Validation during fit runs the same loop as `validate()`.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from ltrain.batch import apply_to_tensors, split_samples, stack_samples
from ltrain.callbacks.prediction_writer import (
    BasePredictionWriter,
    PredictionRecord,
    indexed_loader,
)
from ltrain.console import info
from ltrain.module import Module
from ltrain.results import to_floats
from ltrain.trainer.hooks import call_hook, overrides, step_args
from ltrain.trainer.loaders import as_loader_list, sample_indices, to_device, with_last_flag
from ltrain.trainer.log_rows import log_row

if TYPE_CHECKING:
    from ltrain.trainer.trainer import Trainer


def evaluate(trainer: Trainer, stage: str, verbose: bool) -> list[dict[str, float]]:
    """`validate()` or `test()`: one epoch over the stage's loaders, its table printed."""
    kind = "validation" if stage == "validate" else "test"
    loaders = as_loader_list(
        trainer.val_dataloaders if stage == "validate" else trainer.test_dataloaders
    )
    counts = trainer.num_val_batches if stage == "validate" else trainer.num_test_batches
    trainer._eval_step_rows = {}
    per_loader = evaluation_epoch(trainer, kind, loaders, counts)
    if verbose and trainer.is_global_zero:
        _print_results_table("Validate" if stage == "validate" else "Test", per_loader)
    return per_loader


def evaluation_epoch(
    trainer: Trainer, kind: str, loaders: list[Any], counts: list[int | float]
) -> list[dict[str, float]]:
    """One validation or test run over every loader; returns each loader's epoch metrics."""
    model = trainer.lightning_module
    trainer.results = results = trainer._new_results()
    if len(loaders) > 1:
        _require_dataloader_idx(model, f"{kind}_step", "val" if kind == "validation" else kind)
    with torch.inference_mode() if trainer.inference_mode else torch.no_grad():
        modes = training_modes(model)
        call_hook(trainer, f"on_{kind}_model_eval")
        call_hook(trainer, f"on_{kind}_start")
        call_hook(trainer, f"on_{kind}_epoch_start")
        _run_batches(trainer, kind, loaders, counts, keep=False)
        results.start_batch(None)
        results.epoch_values()
        call_hook(trainer, f"on_{kind}_epoch_end")
        logged, _ = results.epoch_values()
        if logged and not trainer.sanity_checking:
            log_row(trainer, logged, _row_step(trainer))
        call_hook(trainer, f"on_{kind}_end")
        results.reset_metrics()
        if overrides(model, f"on_{kind}_model_train", Module):
            call_hook(trainer, f"on_{kind}_model_train")
        else:
            restore_training_modes(model, modes)
    # what validate()/test() return and print is the loggers' epoch row, as in Lightning
    floats = to_floats(logged) if logged else {}
    if len(loaders) == 1:
        return [floats]
    loader_of = results.loader_of()
    return [
        {k: v for k, v in floats.items() if loader_of.get(k) in (None, index)}
        for index in range(len(loaders))
    ]


def predict(trainer: Trainer) -> list[Any] | None:
    """`predict()`: every batch through `predict_step`; what it returned, per loader.

    Prediction writers are told each batch's sample indices; an epoch writer gets every batch's
    prediction at the epoch's end, so they are kept for it even with `return_predictions=False`.
    """
    model = trainer.lightning_module
    trainer.results = trainer._new_results()
    loaders = as_loader_list(trainer.predict_dataloaders)
    if len(loaders) > 1:
        _require_dataloader_idx(model, "predict_step", "predict")
    writers = [c for c in trainer.callbacks if isinstance(c, BasePredictionWriter)]
    record = PredictionRecord(epoch_batch_indices=[[] for _ in loaders])
    for writer in writers:
        writer._record = record
    any_epoch = any(writer.interval.on_epoch for writer in writers)
    noted = _note_indices(record, any_epoch) if writers else None
    indexed = [indexed_loader(loader) if writers else (loader, None) for loader in loaders]
    keep = trainer._return_predictions
    with torch.inference_mode() if trainer.inference_mode else torch.no_grad():
        modes = training_modes(model)
        call_hook(trainer, "on_predict_model_eval")
        call_hook(trainer, "on_predict_start")
        call_hook(trainer, "on_predict_epoch_start")
        counts = trainer.num_predict_batches
        outputs = _run_batches(trainer, "predict", indexed, counts, keep or any_epoch, noted)
        record.predictions = outputs
        call_hook(trainer, "on_predict_epoch_end")
        record.epoch_batch_indices = []
        if not keep:
            record.predictions = []
        call_hook(trainer, "on_predict_end")
        restore_training_modes(model, modes)
    if not keep:
        return None
    if trainer.world_size > 1:
        outputs = [
            _gather_predictions(trainer, out, loader)
            for out, loader in zip(outputs, loaders, strict=True)
        ]
    return outputs if len(outputs) > 1 else outputs[0]


def _note_indices(record: PredictionRecord, any_epoch: bool) -> Any:
    """Before each predict step: the batch's sample indices, for the prediction writers."""

    def note(indices_of: Any, loader_idx: int, batch_idx: int) -> None:
        indices = indices_of(batch_idx)
        if indices is None:  # a loader that does not say which samples it draws
            return
        record.current_batch_indices = indices
        if any_epoch:
            record.epoch_batch_indices[loader_idx].append(indices)

    return note


def _run_batches(
    trainer: Trainer,
    kind: str,
    loaders: list[Any],
    counts: list[int | float],
    keep: bool,
    note: Any = None,
) -> list[list[Any]]:
    """Every batch of every loader through `{kind}_step` and its batch hooks.

    Returns the step outputs per loader when `keep` (predictions); otherwise each batch's logged
    step values go to the loggers as a row (none during the sanity check). As in Lightning, such a
    row's step counts the loader's batches (over every validation of a fit) and it has no epoch.
    Predict passes `(loader, indices_of)` pairs and `note`, which records each batch's indices.
    """
    model = trainer.lightning_module
    results = trainer.results
    several = len(loaders) > 1
    step_name = f"{kind}_step"
    rows = trainer._eval_step_rows
    forward_context = trainer.precision_plugin.forward_context
    kept: list[list[Any]] = []
    for loader_idx, (loader, count) in enumerate(zip(loaders, counts, strict=True)):
        indices_of = None
        if kind == "predict":
            loader, indices_of = loader
        extra = (loader_idx,) if several else ()
        outputs: list[Any] = []
        for batch_idx, batch, _ in with_last_flag(iter(loader), count):
            batch = to_device(trainer, batch, loader_idx)
            results.start_batch(batch, loader_idx if several else None)
            if note is not None:
                note(indices_of, loader_idx, batch_idx)
            call_hook(trainer, f"on_{kind}_batch_start", batch, batch_idx, *extra)
            with forward_context():
                output = getattr(model, step_name)(
                    *step_args(trainer, step_name, batch, batch_idx), *extra
                )
            results.hook = None
            call_hook(trainer, f"on_{kind}_batch_end", output, batch, batch_idx, *extra)
            if keep:
                outputs.append(output)
            elif not trainer.sanity_checking:
                row = rows[loader_idx] = rows.get(loader_idx, -1) + 1
                if results.step_values:
                    log_row(trainer, results.step_values, row, with_epoch=False)
        kept.append(outputs)
    return kept


def training_modes(model: Module) -> dict[str, bool]:
    """Each submodule's train/eval mode, so evaluation can put back a part kept in eval mode."""
    return {name: module.training for name, module in model.named_modules()}


def restore_training_modes(model: Module, modes: dict[str, bool]) -> None:
    """Lightning's restore: each submodule's flag as it was (not `train()`, which sets them all)."""
    for name, module in model.named_modules():
        if name in modes:
            module.training = modes[name]


def _row_step(trainer: Trainer) -> int:
    """During fit an evaluation row belongs to the last trained batch; after it, to global_step."""
    stepped = trainer._batches_that_stepped
    return stepped - 1 if trainer.training else stepped


def _require_dataloader_idx(model: Module, step_name: str, loader_kind: str) -> None:
    """Several loaders pass `dataloader_idx` to the step: say so before a TypeError would (a
    RuntimeError, as Lightning raises, so code catching Lightning's catches ltrain's)."""
    parameters = inspect.signature(getattr(model, step_name)).parameters
    if "dataloader_idx" in parameters or any(
        p.kind == inspect.Parameter.VAR_POSITIONAL for p in parameters.values()
    ):
        return
    raise RuntimeError(
        f"You provided multiple `{loader_kind}_dataloader`, but no `dataloader_idx` argument in "
        f"`{type(model).__name__}.{step_name}()`. Try adding `dataloader_idx=0` to its signature."
    )


def _gather_predictions(trainer: Trainer, outputs: list[Any], loader: Any) -> list[Any]:
    """On rank 0, every rank's predictions in the data set's order, in batches of this
    loader's batch size (padding repeats dropped); the other ranks keep their own.

    A loader that was not split (every rank predicted everything) keeps rank 0's own; one
    whose outputs cannot be cut into samples gives the ranks' batches in rank order.
    """
    indices = sample_indices(loader)
    if indices is None:
        return outputs
    size = getattr(loader, "batch_size", None)
    samples: list[Any] | None = []
    for number, output in enumerate(outputs, start=1):
        split = split_samples(output)
        # one entry per sample: full batches hold `size` (the first dim is the batch's)
        fits = split is not None and (number == len(outputs) or len(split) == size)
        if samples is None or split is None or not fits:
            samples = None
            continue
        samples.extend(split)
    if samples is not None and len(samples) > len(indices):
        samples = None
    if samples is None:
        mine: tuple[str, Any] = ("batches", outputs)
    else:
        to_cpu = partial(apply_to_tensors, fn=lambda t: t.cpu())
        mine = ("samples", list(zip(indices, map(to_cpu, samples), strict=False)))
    everyone = trainer.strategy.gather_objects(mine)
    if not trainer.is_global_zero:
        return outputs
    if any(kind != "samples" for kind, _ in everyone):
        return [output for _, part in everyone for output in part]
    by_index: dict[int, Any] = {}
    for _, part in everyone:
        for index, sample in part:
            by_index.setdefault(index, sample)
    ordered = [by_index[i] for i in sorted(by_index)]
    size = size or len(ordered)
    return [stack_samples(ordered[i : i + size]) for i in range(0, len(ordered), size)]


def _print_results_table(title: str, per_loader: list[dict[str, float]]) -> None:
    if not any(per_loader):
        return
    names = sorted({k for metrics in per_loader for k in metrics})
    headers = [f"{title} metric"] + [f"DataLoader {i}" for i in range(len(per_loader))]
    rows = [[name] + [repr(m[name]) if name in m else "" for m in per_loader] for name in names]
    widths = [max(len(r[i]) for r in [headers, *rows]) + 8 for i in range(len(headers))]
    line = "─" * sum(widths)
    out = [line, "".join(h.center(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["".join(c.center(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    out.append(line)
    info("\n".join(out))
