"""tensorforge: make trained models fast for inference on NVIDIA GPUs."""

from . import frontends, ir

__version__ = "0.1.0"
__all__ = ["ir", "frontends", "__version__"]
from .partition import PartitionConfig, PartitionReport, partition_for_tensorforge  # noqa: E402,F401
