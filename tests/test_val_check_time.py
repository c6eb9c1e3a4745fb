"""`val_check_interval` as a time (Lightning 2.6): validation once that long has passed since
the last one (or since the training loader was loaded), checked after each batch, on a fake clock.
tests/parity runs the same against Lightning with a sleeping step."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader

import ltrain as pl
from ltrain.errors import MisconfigurationException
from ltrain.trainer import fit_loop


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


class _Ticking(BoringModel):
    """Each training step takes one second of the fake clock; records where validation ran."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self.clock = clock
        self.validated: list[tuple[int, int]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.clock.now += 1.0
        return super().training_step(batch, batch_idx)

    def on_validation_start(self) -> None:
        self.validated.append((self.trainer.current_epoch, self.trainer.global_step))


@pytest.mark.parametrize(
    "interval", ["00:00:00:03", {"seconds": 2.5}, timedelta(seconds=3)], ids=str
)
def test_validation_runs_by_the_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval: Any
) -> None:
    clock = _Clock()
    monkeypatch.setattr(fit_loop, "time", SimpleNamespace(monotonic=clock.monotonic,
                                                          perf_counter=clock.monotonic))  # fmt: skip
    model = _Ticking(clock)
    trainer = pl.Trainer(
        max_epochs=2, val_check_interval=interval, default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, boring_loader(samples=56), boring_loader(samples=16))  # 7 batches an epoch
    assert trainer.val_check_interval == interval
    # the sanity check, then every 3 batches across epochs: not at the end of the first epoch
    assert model.validated == [(0, 0), (0, 3), (0, 6), (1, 9), (1, 12)]
    # as in Lightning, checkpoints wait for a validation's end
    assert [p.name for p in Path(tmp_path, "checkpoints").iterdir()] == ["epoch=1-step=12.ckpt"]


@pytest.mark.parametrize("interval", ["1:30", {"minuts": 1}, 0, 1.5, True])
def test_a_bad_interval_names_what_is_accepted(interval: Any) -> None:
    with pytest.raises(MisconfigurationException, match=r"val_check_interval=.*expected"):
        pl.Trainer(val_check_interval=interval, logger=False)
