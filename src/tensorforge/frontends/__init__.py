"""Frontends turn a model into an `ir.Graph`."""

from .torch import from_torch

__all__ = ["from_torch"]
