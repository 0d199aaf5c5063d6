"""Re-export: the split model lives in the library (`hypernet.split`), which the context encoder also uses."""

from hypernet.split import SplitLM, top_targets

__all__ = ["SplitLM", "top_targets"]
