"""Tests of `precision=`: what dtype the forward, the weights and the inputs have, and what is refused.

CPU runs bf16 autocast and float64; fp16 autocast needs CUDA, and those tests run only where a
GPU is present.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer

import ltrain as pl
from ltrain.errors import MisconfigurationException

pytestmark = pytest.mark.filterwarnings("ignore:You defined a validation_step:UserWarning")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class DtypeRecorder(BoringModel):
    """Records the dtypes each step sees: forward output, weights, inputs, and the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, set[torch.dtype]] = {}

    def note(self, key: str, dtype: torch.dtype) -> None:
        self.seen.setdefault(key, set()).add(dtype)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        output = self(x)
        self.note("train_output", output.dtype)
        self.note("weight", self.layer.weight.dtype)
        self.note("input", x.dtype)
        loss = torch.nn.functional.mse_loss(output.float(), y.to(output.dtype).float())
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.note("val_output", self(batch[0]).dtype)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(batch[0])


def fit_with(tmp_path: Any, precision: Any, model: BoringModel) -> Any:
    trainer = quiet_trainer(
        tmp_path, precision=precision, max_epochs=1, logger=False, enable_checkpointing=False
    )
    trainer.fit(model, boring_loader(16, 8), boring_loader(8, 8))
    return trainer


def test_bf16_mixed_runs_the_forward_in_bfloat16_and_keeps_float32_weights(tmp_path):
    model = DtypeRecorder()
    trainer = fit_with(tmp_path, "bf16-mixed", model)
    assert model.seen["train_output"] == {torch.bfloat16}
    assert model.seen["val_output"] == {torch.bfloat16}
    assert model.seen["weight"] == {torch.float32}
    assert model.seen["input"] == {torch.float32}
    assert model.layer.weight.dtype == torch.float32
    assert trainer.precision == "bf16-mixed"
    assert trainer.callback_metrics["train_loss"].dtype == torch.float32
    [prediction, *_] = trainer.predict(model, boring_loader(8, 8))
    assert prediction.dtype == torch.bfloat16


def test_bf16_mixed_still_trains(tmp_path):
    model = BoringModel()
    before = model.layer.weight.detach().clone()
    fit_with(tmp_path, "bf16-mixed", model)
    assert not torch.equal(before, model.layer.weight)


@pytest.mark.parametrize("precision", [64, "64", "64-true"])
def test_64_true_casts_weights_and_floating_inputs_to_float64(tmp_path, precision):
    model = DtypeRecorder()
    trainer = fit_with(tmp_path, precision, model)
    assert model.seen["train_output"] == {torch.float64}
    assert model.seen["weight"] == {torch.float64}
    assert model.seen["input"] == {torch.float64}
    assert trainer.precision == "64-true"


def test_64_true_makes_float64_the_default_dtype_inside_steps_only(tmp_path):
    created: list[torch.dtype] = []

    class NoisyInput(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            noise = torch.randn(len(batch[0]), 4)  # as a GAN samples z: must match the weights
            created.append(noise.dtype)
            return self(batch[0] + noise).sum()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            created.append(torch.zeros(1).dtype)

    fit_with(tmp_path, "64-true", NoisyInput())
    assert set(created) == {torch.float64}
    assert torch.get_default_dtype() == torch.float32


def test_trainer_precision_is_lightnings_name_and_the_plugin_is_separate(tmp_path):
    trainer = quiet_trainer(tmp_path, precision="bf16")
    assert trainer.precision == "bf16-mixed"
    assert trainer.precision_plugin.name == "bf16-mixed"


def test_64_true_leaves_integer_inputs_alone(tmp_path):
    seen: list[torch.dtype] = []

    class WithLabels(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, labels = batch
            seen.append(labels.dtype)
            return self(x).sum()

    x = torch.randn(8, 4)
    loader = pl_loader(x, torch.arange(8))
    trainer = quiet_trainer(tmp_path, precision="64-true", max_epochs=1, logger=False)
    trainer.fit(WithLabels(), loader)
    assert seen == [torch.int64]


def pl_loader(*tensors: torch.Tensor) -> Any:
    from ltrain.data import TensorLoader

    return TensorLoader(*tensors, batch_size=8)


def test_16_mixed_on_cpu_is_refused_naming_bf16_mixed(tmp_path):
    with pytest.raises(MisconfigurationException, match="16-mixed.*bf16-mixed"):
        quiet_trainer(tmp_path, precision="16-mixed")


def test_unknown_precision_lists_the_valid_ones(tmp_path):
    with pytest.raises(MisconfigurationException) as refused:
        quiet_trainer(tmp_path, precision="fp8")
    message = str(refused.value)
    assert "'fp8'" in message
    for valid in ("32-true", "64-true", "16-mixed", "bf16-mixed"):
        assert valid in message


@pytest.mark.parametrize(
    "precision, printed", [("32", "32-true"), ("bf16", "bf16-mixed"), (64, "64-true")]
)
def test_device_and_precision_are_printed_at_start(tmp_path, capsys, precision, printed):
    quiet_trainer(tmp_path, precision=precision)
    assert f"Device: cpu, precision: {printed}" in capsys.readouterr().out


@cuda
def test_accelerator_auto_chooses_the_gpu_and_says_so(tmp_path, capsys):
    model = BoringModel()
    trainer = quiet_trainer(
        tmp_path, accelerator="auto", max_epochs=1, logger=False, enable_checkpointing=False
    )
    trainer.fit(model, boring_loader(16, 8))
    out = capsys.readouterr().out
    assert trainer.device == torch.device("cuda", 0)
    assert model.layer.weight.device == torch.device("cuda", 0)
    assert "GPU available: True (cuda), used: True" in out
    assert "Device: cuda:0, precision: 32-true" in out


@cuda
@pytest.mark.parametrize(
    "precision, forward, weights",
    [
        ("16-mixed", torch.float16, torch.float32),
        ("bf16-mixed", torch.bfloat16, torch.float32),
        ("16-true", torch.float16, torch.float16),
        ("bf16-true", torch.bfloat16, torch.bfloat16),
    ],
)
def test_each_precision_runs_on_the_gpu_with_its_dtypes(tmp_path, precision, forward, weights):
    model = DtypeRecorder()
    trainer = quiet_trainer(
        tmp_path,
        accelerator="cuda",
        precision=precision,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
    )
    before = model.layer.weight.detach().clone().to(weights)
    # 16-mixed: GradScaler starts at 2**16 and skips the steps whose fp16 gradients overflow,
    # halving its scale each time; here the first two overflow, so train for eight
    trainer.fit(model, boring_loader(64, 8), boring_loader(8, 8))
    assert model.seen["train_output"] == {forward}
    assert model.seen["val_output"] == {forward}
    assert model.seen["weight"] == {weights}
    assert model.seen["input"] == {weights}  # mixed keeps float32 inputs, true casts them
    assert model.layer.weight.device.type == "cuda"
    assert not torch.equal(before, model.layer.weight.detach().cpu())
    assert trainer.callback_metrics["train_loss"].dtype == torch.float32


@cuda
def test_every_precision_learns_on_the_gpu_as_float32_does(tmp_path):
    final: dict[str, float] = {}
    for precision in ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true"):
        pl.seed_everything(0)
        trainer = quiet_trainer(
            tmp_path / precision,
            accelerator="cuda",
            precision=precision,
            max_epochs=10,
            logger=False,
            enable_checkpointing=False,
        )
        trainer.fit(BoringModel(lr=0.1), boring_loader(256, 32, shuffle=True))
        final[precision] = trainer.callback_metrics["train_loss"].item()
    # from about 4 at the start: every precision ends three orders of magnitude lower
    assert all(loss < 4e-3 for loss in final.values()), final
    assert final["32-true"] < 1e-6, final


@cuda
def test_16_mixed_unscales_before_clipping_and_hooks(tmp_path):
    norms: list[float] = []

    class Watched(BoringModel):
        def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
            super().optimizer_step(*args, **kwargs)
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.parameters()]))
            if norm.isfinite():  # not a step the scaler skipped for overflowing gradients
                norms.append(norm.item())

    trainer = quiet_trainer(
        tmp_path,
        accelerator="cuda",
        precision="16-mixed",
        max_epochs=1,
        logger=False,
        gradient_clip_val=0.5,
    )
    trainer.fit(Watched(), boring_loader(64, 8))
    # the true gradients' norm is about 5 throughout: clipped to 0.5 after unscaling; clipping
    # the scaled gradients would leave 0.5 / scale once the step unscales them
    assert norms and all(abs(n - 0.5) < 1e-3 for n in norms), norms


def test_16_true_with_adams_default_eps_diverges_with_the_reason_named(tmp_path):
    """As in Lightning the first step makes the weights nan; ltrain stops and says why."""
    from ltrain.errors import NonFiniteLossError

    class AdamModel(BoringModel):
        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    class DeadUnit(AdamModel):  # a weight whose gradient is exactly 0, as under a dead ReLU
        def forward(self, x):
            return self.layer(x * torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=x.dtype))

    trainer = quiet_trainer(tmp_path, precision="16-true", max_epochs=1, logger=False)
    with pytest.raises(NonFiniteLossError, match=r"eps=1e-08 is below float16's smallest"):
        trainer.fit(DeadUnit(), boring_loader(16, 8))
    fine = quiet_trainer(tmp_path, precision="16-true", max_epochs=1, logger=False)
    fine.fit(AdamModel(), boring_loader(16, 8))  # every gradient non-zero: nothing to divide by 0
