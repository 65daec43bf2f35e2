"""tensorforge: make trained models fast for inference on NVIDIA GPUs."""

from . import frontends, ir

__version__ = "0.1.0"
__all__ = ["ir", "frontends", "__version__"]
