"""Logged values stay on their device: the loop reads them on the host only when it writes a row.

On a GPU every host read is a sync that stalls the pipeline; on the CPU the same reads are
counted here by wrapping the tensor methods that cross to the host.
"""

from __future__ import annotations

import warnings

import torch
from boring import boring_loader, needs_cuda, quiet_trainer, random_regression

import ltrain as pl
from ltrain.data import TensorLoader


class Logs(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log_dict({"loss": loss, "scale": loss * 2}, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_training_reads_logged_values_on_the_host_only_when_writing_rows(tmp_path, monkeypatch):
    reads = []
    for name in ("item", "tolist", "__float__", "__bool__", "__int__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    trainer = quiet_trainer(
        tmp_path, max_epochs=2, log_every_n_steps=25, enable_checkpointing=False, logger=True
    )
    trainer.fit(Logs(), boring_loader(samples=800, batch_size=8))  # 200 steps
    monkeypatch.undo()
    # 8 step rows + 2 epoch rows, each one `tolist` for the row and one for the nan check
    assert trainer.global_step == 200
    assert len(reads) <= 2 * 10 + 2, reads


class StepSyncCounter(pl.Callback):
    """Counts synchronizing CUDA calls between one training batch's start and the next's.

    Under `torch.cuda.set_sync_debug_mode("warn")` each such call warns; the interval of step k
    holds step k itself and whatever the loop does after it (a row written, a checkpoint).
    """

    def __init__(self, caught: list) -> None:
        self.caught = caught
        self.per_step: dict[int, int] = {}
        self._seen = 0
        self._step = -1

    def _close(self, trainer) -> None:
        if self._step >= 0:
            new = self.caught[self._seen :]
            self.per_step[self._step] = sum("synchronizing" in str(w.message) for w in new)
        self._seen = len(self.caught)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._close(trainer)
        self._step = trainer.global_step

    def on_train_end(self, trainer, pl_module):
        self._close(trainer)


@needs_cuda
def test_gpu_steps_that_write_no_row_never_wait_for_the_gpu(tmp_path):
    x, y = random_regression(800)
    loader = TensorLoader(x.cuda(), y.cuda(), batch_size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counter = StepSyncCounter(caught)
        trainer = quiet_trainer(
            tmp_path,
            accelerator="cuda",
            max_epochs=2,
            log_every_n_steps=25,
            enable_checkpointing=False,
            logger=True,
            callbacks=[counter],
        )
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.fit(Logs(), loader)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert trainer.global_step == 200
    assert len(counter.per_step) == 200
    # a row is written after steps 24, 49, ... and after each epoch's last step (99, 199);
    # the first step creates the optimizer's state (not yet steady)
    rows = {0} | {step for step in range(200) if (step + 1) % 25 == 0}
    syncing = {step for step, count in counter.per_step.items() if count}
    assert syncing <= rows, sorted(syncing - rows)
