"""tensorforge: make trained models fast for inference on NVIDIA GPUs."""

from . import frontends, ir
from .api import build, compile, convert, export_triton, load, plugin, serve  # noqa: A004
from .frontends.converters import converter
from .partition import PartitionConfig, PartitionReport, partition_for_tensorforge
from .quantization import quantize
from .runtime import EngineModule, Module

__version__ = "0.1.0"
__all__ = [
    "ir",
    "frontends",
    "partition_for_tensorforge",
    "PartitionConfig",
    "PartitionReport",
    "build",
    "load",
    "convert",
    "compile",
    "EngineModule",
    "Module",
    "converter",
    "plugin",
    "quantize",
    "serve",
    "export_triton",
    "__version__",
]
