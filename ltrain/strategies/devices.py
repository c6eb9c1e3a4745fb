"""Which device a run uses: the accelerator's name resolved ('auto' tries cuda, then mps, then
cpu) and the `devices` argument read as Lightning reads it."""

from __future__ import annotations

from typing import Any

import torch

from ltrain.console import info
from ltrain.errors import MisconfigurationException

VALID_ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(accelerator: str, devices: Any) -> torch.device:
    """The one device for `accelerator` ('auto' tries cuda, then mps, then cpu) and `devices`."""
    accelerator = resolve_accelerator(accelerator)
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
    raise MisconfigurationException(
        f"devices={devices!r} is not valid for accelerator={accelerator!r}; "
        "use 'auto', a number of devices, or a list of device indices such as [0, 1]."
    )


def device_indices(devices: Any, accelerator: str) -> list[int]:
    """The device indices of one node: one process runs on each.

    'auto' (or -1) means every GPU, or one process on the CPU; N means the first N devices (N
    processes on the CPU); a list or a string '0,2' names them.
    """
    if isinstance(devices, bool):
        raise MisconfigurationException(f"devices={devices!r}: expected a number, a list or 'auto'")
    available = torch.cuda.device_count() if accelerator == "cuda" else None
    if devices in ("auto", -1, "-1"):
        return list(range(available)) if available else [0]
    if isinstance(devices, str):
        parts = [p.strip() for p in devices.split(",") if p.strip()]
        if len(parts) == 1 and not devices.strip().endswith(","):
            devices = parts[0]
        elif parts and all(p.isdigit() for p in parts):
            devices = [int(p) for p in parts]
        if isinstance(devices, str):
            if not devices.isdigit():
                raise MisconfigurationException(
                    f"devices={devices!r}: expected a number, a list such as [0, 1], or 'auto'"
                )
            devices = int(devices)
    if isinstance(devices, int):
        if devices < 1:
            raise MisconfigurationException(
                f"devices={devices}: expected at least 1 (or -1 / 'auto' for every device)"
            )
        indices = list(range(devices))
    elif (
        isinstance(devices, (list, tuple))
        and devices
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in devices)
    ):
        indices = list(devices)
    else:
        raise MisconfigurationException(
            f"devices={devices!r}: expected a number, a list of device indices such as [0, 1], "
            "or 'auto'"
        )
    if available is not None and max(indices) >= available:
        raise MisconfigurationException(
            f"devices={devices!r}: there are only {available} CUDA devices"
        )
    if accelerator == "mps" and len(indices) > 1:
        raise MisconfigurationException(f"devices={devices!r}: there is only one MPS device")
    return indices


def resolve_accelerator(accelerator: str) -> str:
    """'cpu', 'cuda' or 'mps' for `accelerator` ('auto' tries cuda, then mps, then cpu)."""
    if accelerator not in VALID_ACCELERATORS:
        raise MisconfigurationException(
            f"accelerator={accelerator!r} is not supported; valid: {', '.join(VALID_ACCELERATORS)}"
        )
    cuda, mps = torch.cuda.is_available(), mps_available()
    if accelerator == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if accelerator == "gpu":
        if not (cuda or mps):
            raise MisconfigurationException(
                "accelerator='gpu' but no GPU is available (no CUDA or MPS device found); "
                "use accelerator='cpu' or 'auto'."
            )
        return "cuda" if cuda else "mps"
    if accelerator == "cuda" and not cuda:
        raise MisconfigurationException(
            "accelerator='cuda' but torch.cuda.is_available() is False; use 'cpu' or 'auto'."
        )
    if accelerator == "mps" and not mps:
        raise MisconfigurationException("accelerator='mps' but no MPS device is available.")
    return accelerator


def gpu_kind() -> str | None:
    """'cuda' or 'mps' when this machine has such a GPU, else None (Lightning's start-up line)."""
    return "cuda" if torch.cuda.is_available() else "mps" if mps_available() else None


def announce_device(device: torch.device, precision: str) -> None:
    """Lightning's start-up lines: is there a GPU, is it used; then the device and precision."""
    kind = gpu_kind()
    used = device.type in ("cuda", "mps")
    info(f"GPU available: {kind is not None}{f' ({kind})' if kind else ''}, used: {used}")
    info(f"Device: {device}, precision: {precision}")
