"""Lightning's `utilities` that user code imports: `CombinedLoader`."""

from ltrain.utilities.combined_loader import CombinedLoader

__all__ = ["CombinedLoader"]
