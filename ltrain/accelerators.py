"""`trainer.accelerator`: the kind of device a run uses, as Lightning's accelerator classes.

User code checks `isinstance(trainer.accelerator, CUDAAccelerator)` or reads the class name; the
device itself is `trainer.device` (the strategy decides it).
"""

from __future__ import annotations

import torch


class Accelerator:
    """The kind of device of a run; `is_available()` and `auto_device_count()` as in Lightning."""

    @staticmethod
    def is_available() -> bool:
        raise NotImplementedError

    @staticmethod
    def auto_device_count() -> int:
        return 1


class CPUAccelerator(Accelerator):
    @staticmethod
    def is_available() -> bool:
        return True


class CUDAAccelerator(Accelerator):
    @staticmethod
    def is_available() -> bool:
        return torch.cuda.is_available()

    @staticmethod
    def auto_device_count() -> int:
        return torch.cuda.device_count()


class MPSAccelerator(Accelerator):
    @staticmethod
    def is_available() -> bool:
        return torch.backends.mps.is_available()


def accelerator_for(device: torch.device) -> Accelerator:
    """The accelerator of a run on `device` (cpu, cuda or mps)."""
    kinds = {"cpu": CPUAccelerator, "cuda": CUDAAccelerator, "mps": MPSAccelerator}
    return kinds[device.type]()
