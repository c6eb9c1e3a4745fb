"""Module features Lightning users call directly: freeze/unfreeze, the TorchScript and ONNX exports,
`example_input_array`, `all_gather` and `strict_loading` (issue 15)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from boring import BoringModel, boring_loader, quiet_trainer
from torch import nn

import ltrain as pl

pytestmark = pytest.mark.filterwarnings(
    "ignore:You defined a validation_step:UserWarning",
    "ignore:`LightningModule.to_torchscript` is deprecated:DeprecationWarning",
    "ignore:`torch.jit:FutureWarning",
    "ignore:Exporting a model while it is in training mode:UserWarning",
)


class Net(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1))
        self.example_input_array = torch.ones(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_freeze_turns_off_gradients_and_training_and_unfreeze_turns_them_back_on() -> None:
    model = Net()
    assert model.freeze() is model
    assert not model.training and not model.net[2].training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.unfreeze() is model
    assert model.training and model.net[2].training
    assert all(p.requires_grad for p in model.parameters())


def test_to_torchscript_scripts_or_traces_the_forward_in_eval_mode(tmp_path: Path) -> None:
    model = Net()
    x = torch.randn(3, 4)
    with pytest.warns(DeprecationWarning, match="torch.export.export"):
        scripted = model.to_torchscript()
    assert isinstance(scripted, torch.jit.ScriptModule)
    assert model.training  # its mode is put back; the export ran in eval mode (no dropout)
    expected = model.eval()(x)
    assert torch.equal(scripted(x), expected)
    traced = model.to_torchscript(method="trace")  # on example_input_array
    assert torch.equal(traced(x), expected)
    path = tmp_path / "model.pt"
    model.to_torchscript(path, method="trace", example_inputs=x)
    assert torch.equal(torch.jit.load(str(path))(x), expected)


def test_to_torchscript_errors_name_what_is_missing() -> None:
    model = Net()
    with pytest.raises(
        ValueError, match="only supports 'script' or 'trace', but value given was: x"
    ):
        model.to_torchscript(method="x")
    model.example_input_array = None
    with pytest.raises(ValueError, match="requires either `example_inputs` or `model.example_in"):
        model.to_torchscript(method="trace")


def test_to_onnx_writes_a_model_onnx_reads(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx", reason="the onnx extra")
    model = Net()
    path = tmp_path / "model.onnx"
    model.to_onnx(path, export_params=True)
    graph = onnx.load(str(path)).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [2, 4]
    assert model.training
    model.example_input_array = None
    with pytest.raises(ValueError, match="neither `input_sample` nor `model.example_input_array`"):
        model.to_onnx(path)


def test_to_onnx_without_onnx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    with pytest.raises(
        ModuleNotFoundError, match=r"Net.to_onnx\(\)` requires `onnx`.*ltrain\[onnx\]"
    ):
        Net().to_onnx("unused.onnx")


def test_all_gather_in_one_process_returns_tensors_without_a_new_dimension(tmp_path: Path) -> None:
    gathered: list[Any] = []

    class Gathering(BoringModel):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            gathered.append(
                self.all_gather({"n": 1, "x": [2.5, torch.ones(3)], "b": True, "a": np.ones(2)})
            )
            return super().training_step(batch, batch_idx)

    quiet_trainer(tmp_path, max_steps=1, logger=False).fit(Gathering(), boring_loader())
    (result,) = gathered
    assert result["n"].dtype == torch.int32 and result["n"].shape == ()
    assert result["x"][0].dtype == torch.float32 and torch.equal(result["x"][1], torch.ones(3))
    assert result["b"].dtype == torch.uint8 and result["a"].dtype == torch.float64
    with pytest.raises(RuntimeError, match="not attached to a `Trainer`"):
        BoringModel().all_gather(torch.ones(1))


class Grown(BoringModel):
    def __init__(self) -> None:
        super().__init__()
        self.extra = nn.Linear(1, 1)  # not in a BoringModel checkpoint


def _checkpoint(tmp_path: Path) -> str:
    run = quiet_trainer(tmp_path, max_steps=1, logger=False)
    run.fit(BoringModel(), boring_loader())
    path = str(tmp_path / "boring.ckpt")
    run.save_checkpoint(path)
    return path


def test_strict_loading_false_loads_a_checkpoint_with_missing_keys(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    assert Grown().strict_loading
    with pytest.raises(RuntimeError, match="extra.weight"):
        Grown.load_from_checkpoint(path)
    with pytest.warns(UserWarning, match="in the model state dict but not in the checkpoint"):
        loaded = Grown.load_from_checkpoint(path, strict=False)
    assert torch.equal(loaded.layer.weight, torch.load(path)["state_dict"]["layer.weight"])

    class Lenient(Grown):
        def __init__(self) -> None:
            super().__init__()
            self.strict_loading = False

    with pytest.warns(UserWarning, match="extra.weight"):
        Lenient.load_from_checkpoint(path)
    with pytest.raises(ValueError, match="strict=True.*Lenient.strict_loading=False"):
        Lenient.load_from_checkpoint(path, strict=True)
    # the trainer's restore honours it too
    quiet_trainer(tmp_path, logger=False).validate(Lenient(), boring_loader(), ckpt_path=path)
    with pytest.raises(Exception, match="extra"):
        quiet_trainer(tmp_path, logger=False).validate(Grown(), boring_loader(), ckpt_path=path)


GATHER = """
import sys
import torch
import ltrain as pl
from ltrain.data import TensorLoader


class Gather(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        rank = torch.full((3,), float(self.global_rank), requires_grad=True)
        gathered = self.all_gather({"rank": rank, "n": [self.global_rank]}, sync_grads=True)
        gathered["rank"][1].sum().backward()  # each rank's backward of rank 1's slice: to rank 1
        if self.global_rank == 0:
            torch.save({"rank": gathered["rank"].detach(), "n": gathered["n"][0]}, sys.argv[1])
        print(f"grad {self.global_rank} {rank.grad.tolist()}", flush=True)
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


trainer = pl.Trainer(strategy="ddp", devices=2, accelerator="cpu", max_steps=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False)
trainer.fit(Gather(), TensorLoader(torch.ones(4, 2), batch_size=2))
"""


@pytest.mark.slow
def test_all_gather_under_ddp_stacks_every_ranks_tensors(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "gather.py"
    script.write_text(GATHER)
    out = tmp_path / "gathered.pt"
    result = subprocess.run(
        [sys.executable, str(script), str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    gathered = torch.load(out)
    assert torch.equal(gathered["rank"], torch.tensor([[0.0] * 3, [1.0] * 3]))
    assert torch.equal(gathered["n"], torch.tensor([0, 1], dtype=torch.int32))
    assert "grad 1 [2.0, 2.0, 2.0]" in result.stdout and "grad 0 [0.0, 0.0, 0.0]" in result.stdout


class Nested(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 3)))
        self.head = nn.Linear(3, 1)
        self.scale = nn.Parameter(torch.ones(3))  # no layer holds it: "other params"
        self.example_input_array = torch.zeros(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x) * self.scale)


# printed by Lightning 2.6's ModelSummary(max_depth=2) for the same module, frozen and moded as below
NESTED_DEPTH_2 = [
    "  | Name  | Type       | Params | Mode  | FLOPs | In sizes | Out sizes",
    "----------------------------------------------------------------------------",
    "0 | net   | Sequential | 67     | train | 224   | [2, 4]   | [2, 3]   ",
    "1 | net.0 | Linear     | 40     | train | 128   | [2, 4]   | [2, 8]   ",
    "2 | net.1 | ReLU       | 0      | train | 0     | [2, 8]   | [2, 8]   ",
    "3 | net.2 | Sequential | 27     | eval  | 96    | [2, 8]   | [2, 3]   ",
    "4 | head  | Linear     | 4      | train | 12    | [2, 3]   | [2, 1]   ",
    "----------------------------------------------------------------------------",
    "42        Trainable params",
    "32        Non-trainable params",
    "74        Total params",
    "0.000     Total estimated model params size (MB)",
    "4         Modules in train mode",
    "2         Modules in eval mode",
    "236       Total Flops",
]


def test_summary_lists_nested_layers_with_sizes_as_lightning_prints_them() -> None:
    from ltrain.callbacks.model_summary import summary_table

    model = Nested()
    model.net[0].weight.requires_grad_(False)
    model.net[2].eval()
    assert summary_table(model, max_depth=2).splitlines() == NESTED_DEPTH_2
    assert model.training and not model.net[2].training  # the example ran in eval; modes back
    model.example_input_array = None
    top = summary_table(model, max_depth=1).splitlines()
    assert top[0] == "  | Name         | Type       | Params | Mode  | FLOPs"
    assert top[2] == "0 | net          | Sequential | 67     | train | 0    "
    assert top[4] == "  | other params | n/a        | 3      | n/a   | n/a  "
    assert top[-1] == "0         Total Flops"
    deepest = summary_table(model, max_depth=-1)
    assert "4 | net.2.0 | Linear" in deepest
    with pytest.raises(ValueError, match="`max_depth` can be -1, 0 or > 0, got -2"):
        summary_table(model, max_depth=-2)


def test_human_counts_are_lightnings() -> None:
    from ltrain.callbacks.model_summary import human_count

    assert [human_count(n) for n in (0, 123, 1234, 2e6, 999_999, 4e14, 5e15)] == [
        "0  ", "123  ", "1.2 K", "2.0 M", "999 K", "400 T", "5,000 T",
    ]  # fmt: skip


def test_the_callback_prints_the_summary_to_max_depth_at_fit_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class Trained(Nested):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self(batch[0]).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    summary = pl.callbacks.ModelSummary(max_depth=2)
    quiet_trainer(tmp_path, max_steps=1, logger=False, callbacks=[summary]).fit(
        Trained(), boring_loader()
    )
    out = capsys.readouterr().out
    assert "\n".join(NESTED_DEPTH_2[3:5]).replace("eval ", "train") in out
    assert "74        Trainable params" in out


def test_summary_warns_where_its_counts_or_size_are_estimates() -> None:
    from ltrain.callbacks.model_summary import summary_table

    class Lazy(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lazy = nn.LazyLinear(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lazy(x)

    with pytest.warns(UserWarning, match="UninitializedParameter"):
        assert "0         Total params" in summary_table(Lazy())
    lazy = Lazy()
    lazy.example_input_array = torch.zeros(2, 4)  # the example run sizes the layer: no warning
    assert "10        Total params" in summary_table(lazy)
    with pytest.warns(UserWarning, match="Precision bf16-mixed is not supported"):
        summary_table(Nested(), precision="bf16-mixed")
