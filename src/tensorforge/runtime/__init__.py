"""The runtime: compiled modules that run partitioned graphs, and the plan cache."""

from .module import EngineModule, Module, ModuleFormatError, load
from .options import RuntimeOptions

__all__ = ["Module", "EngineModule", "ModuleFormatError", "RuntimeOptions", "load"]
