"""`Module.to_torchscript` and `Module.to_onnx`: the model exported for serving, as Lightning does.

`Module` calls them with its `trainer` reading None rather than raising, as `torch.jit` probes
every attribute. Both put the module in eval mode for the export and restore its mode after; example inputs go
through the module's batch-transfer hooks onto its device first, as a batch would.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ltrain.module import Module


def to_module_device(module: Module, inputs: Any) -> Any:
    inputs = module.on_before_batch_transfer(inputs, 0)
    inputs = module.transfer_batch_to_device(inputs, module.device, 0)
    return module.on_after_batch_transfer(inputs, 0)


@torch.no_grad()
def to_torchscript(
    module: Module,
    file_path: str | Path | None,
    method: str | None,
    example_inputs: Any,
    **kwargs: Any,
) -> Any:
    """The module scripted (`method="script"`) or traced (`"trace"`), saved to `file_path` if given."""
    warnings.warn(
        "`LightningModule.to_torchscript` is deprecated from Lightning 2.7 (TorchScript is "
        "deprecated in PyTorch); `torch.export.export()` is its replacement.",
        DeprecationWarning,
        stacklevel=3,
    )
    training = module.training
    if method == "script":
        scripted = torch.jit.script(module.eval(), **kwargs)
    elif method == "trace":
        if example_inputs is None:
            if module.example_input_array is None:
                raise ValueError(
                    "Choosing method=`trace` requires either `example_inputs` or "
                    "`model.example_input_array` to be defined."
                )
            example_inputs = module.example_input_array
        if kwargs.get("check_inputs") is not None:
            kwargs["check_inputs"] = to_module_device(module, kwargs["check_inputs"])
        example_inputs = to_module_device(module, example_inputs)
        scripted = torch.jit.trace(module.eval(), example_inputs=example_inputs, **kwargs)
    else:
        raise ValueError(
            f"The 'method' parameter only supports 'script' or 'trace', but value given was: {method}"
        )
    module.train(training)
    if file_path is not None:
        with open(file_path, "wb") as file:
            torch.jit.save(scripted, file)
    return scripted


@torch.no_grad()
def to_onnx(module: Module, file_path: Any, input_sample: Any, **kwargs: Any) -> Any:
    """`torch.onnx.export` of the module on `input_sample` (default `example_input_array`)."""
    name = type(module).__name__
    if importlib.util.find_spec("onnx") is None:
        raise ModuleNotFoundError(
            f"`{name}.to_onnx()` requires `onnx` to be installed: pip install 'ltrain[onnx]'."
        )
    if kwargs.get("dynamo", False) and importlib.util.find_spec("onnxscript") is None:
        raise ModuleNotFoundError(
            f"`{name}.to_onnx(dynamo=True)` requires `onnxscript` to be installed: "
            "pip install 'ltrain[onnx]'."
        )
    if input_sample is None:
        if module.example_input_array is None:
            raise ValueError(
                "Could not export to ONNX since neither `input_sample` nor "
                "`model.example_input_array` attribute is set."
            )
        input_sample = module.example_input_array
    training = module.training
    input_sample = to_module_device(module, input_sample)
    exported = torch.onnx.export(
        module, input_sample, str(file_path) if isinstance(file_path, Path) else file_path, **kwargs
    )
    module.train(training)
    return exported
