"""A run used by test_resume.py: `python resume_script.py ROOT KILL [RESUME_FROM]`.

It trains a model whose result depends on every generator (dropout, a shuffled DataLoader,
torchmetrics state, mid-epoch validation), saving last.ckpt every 3 steps. KILL says where to
SIGKILL itself: `none`, `train:N` (before global batch N), `val:N` (inside the N-th validation),
`ckpt:N` (right after the N-th last.ckpt write). With RESUME_FROM it resumes from that file.
The environment variables RESUME_ACCELERATOR and RESUME_PRECISION (default cpu, 32-true) choose
where and how it trains; the precision's state (fp16's GradScaler) is saved beside the weights.
"""

from __future__ import annotations

import os
import signal
import sys

import torch
import torchmetrics
from torch.nn import functional as F

import ltrain as pl

root, kill = sys.argv[1], sys.argv[2]
resume_from = sys.argv[3] if len(sys.argv) > 3 else None
where, _, count = kill.partition(":")
count = int(count or 0)


class Noisy(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.ReLU(), torch.nn.Linear(16, 1)
        )
        self.train_mae = torchmetrics.MeanAbsoluteError()

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.net(x + 0.01 * torch.randn_like(x))
        loss = F.mse_loss(out, y)
        self.train_mae(out, y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("train_mae", self.train_mae, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("valid_loss", F.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=0.01)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)]


class Killer(pl.Callback):
    def __init__(self) -> None:
        self.batches = 0
        self.validations = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if where == "train" and trainer.global_step == count:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validations += 1

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if where == "val" and self.validations == count and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGKILL)


class KillAfterWrite(pl.callbacks.ModelCheckpoint):
    writes = 0

    def save_last_checkpoint(self, trainer):
        path = super().save_last_checkpoint(trainer)
        KillAfterWrite.writes += 1
        if where == "ckpt" and KillAfterWrite.writes == count:
            os.kill(os.getpid(), signal.SIGKILL)
        return path


pl.seed_everything(0)
generator = torch.Generator().manual_seed(0)
x = torch.randn(80, 4, generator=generator)
y = x.sum(dim=1, keepdim=True)
train = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(x[:64], y[:64]), batch_size=6, shuffle=True
)
val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[64:], y[64:]), batch_size=4)
trainer = pl.Trainer(
    max_epochs=3,
    accelerator=os.environ.get("RESUME_ACCELERATOR", "cpu"),
    precision=os.environ.get("RESUME_PRECISION", "32-true"),
    deterministic=True,
    default_root_dir=root,
    logger=pl.loggers.CSVLogger(root, name="run", version=0),
    callbacks=[Killer(), KillAfterWrite(save_last=True, every_n_train_steps=3)],
    log_every_n_steps=2,
    val_check_interval=0.5,
    enable_progress_bar=False,
    enable_model_summary=False,
)
model = Noisy()
trainer.fit(model, train, val, ckpt_path=resume_from)
torch.save(model.state_dict(), os.path.join(root, "final.pt"))
torch.save(trainer.precision_plugin.state_dict(), os.path.join(root, "precision.pt"))
