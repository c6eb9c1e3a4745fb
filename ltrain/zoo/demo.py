"""`python -m ltrain.zoo.demo`: the run behind `make run` — the seed MLP on the bundled digits.

It trains on scikit-learn's 8x8 digits (no download) into `runs/digits-mlp/version_N` and ends by
printing that folder and the final validation accuracy.
"""

from __future__ import annotations

import ltrain as pl
from ltrain.data import Digits
from ltrain.loggers import CSVLogger
from ltrain.zoo import MLPClassifier


def main() -> None:
    pl.seed_everything(0)
    model = MLPClassifier(in_features=64, lr=3e-3)
    trainer = pl.Trainer(
        max_epochs=15,
        log_every_n_steps=10,
        logger=CSVLogger("runs", name="digits-mlp"),
        callbacks=[pl.callbacks.ModelCheckpoint(monitor="valid_acc", mode="max")],
    )
    trainer.fit(model, datamodule=Digits(batch_size=64))
    accuracy = float(trainer.callback_metrics["valid_acc"])
    print(f"Run folder: {trainer.log_dir}")
    print(f"Final validation accuracy: {accuracy:.3f}")


if __name__ == "__main__":
    main()
