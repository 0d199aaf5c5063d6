"""End-to-end hypernetwork training through the frozen base model (`code2lora train hypernet --config FILE`)."""

from training.hypernet.config import TrainConfig, load_config
from training.hypernet.split import SplitLM, top_targets

__all__ = ["SplitLM", "TrainConfig", "load_config", "top_targets"]
