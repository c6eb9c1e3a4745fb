"""Where a run executes: the accelerator and device choice, and the process layout around it.

The loop talks to a strategy object (`root_device`, `reduce`, `is_global_zero`), never to
`if distributed:` branches. This version runs one process on one device.
"""

from __future__ import annotations

from typing import Any

import torch

from ltrain.errors import MisconfigurationException

VALID_ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(accelerator: str, devices: Any) -> torch.device:
    """The device for `accelerator` ('auto' tries cuda, then mps, then cpu) and `devices`."""
    if accelerator not in VALID_ACCELERATORS:
        raise MisconfigurationException(
            f"accelerator={accelerator!r} is not supported; valid: {', '.join(VALID_ACCELERATORS)}"
        )
    cuda, mps = torch.cuda.is_available(), _mps_available()
    if accelerator == "auto":
        accelerator = "cuda" if cuda else "mps" if mps else "cpu"
    elif accelerator == "gpu":
        if not (cuda or mps):
            raise MisconfigurationException(
                "accelerator='gpu' but no GPU is available (no CUDA or MPS device found); "
                "use accelerator='cpu' or 'auto'."
            )
        accelerator = "cuda" if cuda else "mps"
    elif accelerator == "cuda" and not cuda:
        raise MisconfigurationException(
            "accelerator='cuda' but torch.cuda.is_available() is False; use 'cpu' or 'auto'."
        )
    elif accelerator == "mps" and not mps:
        raise MisconfigurationException("accelerator='mps' but no MPS device is available.")

    index = _device_index(devices, accelerator)
    if accelerator == "cuda":
        if index >= torch.cuda.device_count():
            raise MisconfigurationException(
                f"devices={devices!r}: there are only {torch.cuda.device_count()} CUDA devices"
            )
        return torch.device("cuda", index)
    return torch.device(accelerator)


def _device_index(devices: Any, accelerator: str) -> int:
    """The one device index `devices` names: 'auto', 1, '1', [i] or 'i,'."""
    if devices in ("auto", 1, "1", -1, "-1") and not isinstance(devices, bool):
        return 0
    if isinstance(devices, (list, tuple)) and len(devices) == 1 and isinstance(devices[0], int):
        return devices[0]
    if isinstance(devices, str) and devices.endswith(",") and devices[:-1].strip().isdigit():
        return int(devices[:-1])
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 1:
        raise MisconfigurationException(
            f"devices={devices}: several devices need strategy='ddp', which this version of "
            "ltrain does not provide yet; use devices=1."
        )
    raise MisconfigurationException(
        f"devices={devices!r} is not valid for accelerator={accelerator!r}; "
        "use 'auto', 1, or a one-element list such as [0]."
    )


class SingleDeviceStrategy:
    """One process on one device: reductions are identities and every rank is rank zero."""

    world_size = 1
    global_rank = 0
    local_rank = 0
    node_rank = 0
    is_global_zero = True

    def __init__(self, device: torch.device) -> None:
        self.root_device = device

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        return tensor

    def barrier(self) -> None:
        """Nothing to wait for with one process."""


def make_strategy(
    strategy: Any, accelerator: str, devices: Any, num_nodes: int
) -> SingleDeviceStrategy:
    if strategy not in ("auto", "single_device", None):
        raise MisconfigurationException(
            f"strategy={strategy!r} is not available in this version of ltrain; use 'auto'."
        )
    if num_nodes != 1:
        raise MisconfigurationException(
            f"num_nodes={num_nodes}: multi-node runs need strategy='ddp', not available yet; use 1."
        )
    return SingleDeviceStrategy(select_device(accelerator, devices))


def gpu_available() -> bool:
    return torch.cuda.is_available() or _mps_available()
