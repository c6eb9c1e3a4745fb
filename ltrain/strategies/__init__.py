"""Where a run executes: the device, and the process layout around it (Lightning's `strategies`).

The loop talks to a strategy object (`root_device`, `reduce`, `broadcast`, `is_global_zero`),
never to environment variables. `SingleDeviceStrategy` runs one process on one device;
`DDPStrategy` runs one process per device on torch.distributed (launcher.py starts them).
`devices.py` resolves the `accelerator` and `devices` arguments.
"""

from __future__ import annotations

from typing import Any

from ltrain.errors import MisconfigurationException
from ltrain.strategies.ddp import DDP_STRATEGY_NAMES, DDPStrategy, launcher_environment
from ltrain.strategies.devices import device_indices, gpu_kind, resolve_accelerator, select_device
from ltrain.strategies.single_device import SingleDeviceStrategy

__all__ = [
    "DDPStrategy",
    "SingleDeviceStrategy",
    "gpu_kind",
    "launcher_environment",
    "make_strategy",
]


def make_strategy(
    strategy: Any, accelerator: str, devices: Any, num_nodes: int
) -> SingleDeviceStrategy | DDPStrategy:
    """The strategy object for the Trainer's arguments.

    'auto' is one device in one process unless several devices or nodes are asked for (or a
    launcher started several processes): then it is 'ddp'.
    """
    if isinstance(strategy, str) and strategy not in ("auto", "single_device", *DDP_STRATEGY_NAMES):
        valid = ", ".join(repr(n) for n in ("auto", "single_device", *DDP_STRATEGY_NAMES))
        raise MisconfigurationException(f"strategy={strategy!r} is not available; valid: {valid}")
    if isinstance(strategy, SingleDeviceStrategy):
        return strategy
    if not isinstance(strategy, (str, DDPStrategy)) and strategy is not None:
        raise MisconfigurationException(
            f"strategy={type(strategy).__name__}: expected a name such as 'ddp', a DDPStrategy "
            "or a SingleDeviceStrategy"
        )
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise MisconfigurationException(f"num_nodes={num_nodes!r}: expected an integer >= 1")
    accelerator = resolve_accelerator(accelerator)
    launched = launcher_environment()
    several = launched is not None and launched["WORLD_SIZE"] > 1
    if strategy in ("auto", None, "single_device"):
        if devices in ("auto", -1, "-1") and accelerator != "cuda" and not several:
            return SingleDeviceStrategy(select_device(accelerator, devices))
        indices = device_indices(devices, accelerator)
        if len(indices) == 1 and num_nodes == 1 and not several:
            return SingleDeviceStrategy(select_device(accelerator, [indices[0]]))
        if strategy == "single_device":
            raise MisconfigurationException(
                f"strategy='single_device' with devices={devices!r} and num_nodes={num_nodes}: "
                "several processes need strategy='ddp'"
            )
        strategy = "ddp"
    if isinstance(strategy, str):
        strategy = DDPStrategy(find_unused_parameters=strategy == "ddp_find_unused_parameters_true")
    strategy.configure(accelerator, devices, num_nodes)
    return strategy
