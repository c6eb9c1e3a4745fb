"""Logged values stay on their device: the loop reads them on the host only when it writes a row.

On a GPU every host read is a sync that stalls the pipeline; on the CPU the same reads are
counted here by wrapping the tensor methods that cross to the host.
"""

from __future__ import annotations

import torch
from boring import boring_loader, quiet_trainer

import ltrain as pl


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
