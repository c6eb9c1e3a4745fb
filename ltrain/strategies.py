"""Lightning's `strategies` namespace: `pl.strategies.DDPStrategy(timeout=..., **ddp_kwargs)`."""

from ltrain.strategy import DDPStrategy, SingleDeviceStrategy

__all__ = ["DDPStrategy", "SingleDeviceStrategy"]
