"""The engine's errors: a build that cannot succeed, a plan that cannot run here, a layer that failed while running."""

from __future__ import annotations


class BuildError(RuntimeError):
    """The builder cannot make a plan from this region with these options; the message says why and what to change."""


class PlanCompatibilityError(ValueError):
    """Bytes that are not a usable plan for this machine: not a plan, corrupt, another format version, or built for
    another device or library. The message lists every difference."""


class LayerError(RuntimeError):
    """A layer (or a fallback op) failed while running: the message names it, its op and tactic, and what the kernel
    said. It means the inputs or the model's own data do not fit that op (an index out of range, a shape a loaded
    graph declares wrongly); out-of-memory errors pass through unchanged, as PyTorch raised them."""
