"""The engine's two errors: a build that cannot succeed, and a plan that cannot run here."""

from __future__ import annotations


class BuildError(RuntimeError):
    """The builder cannot make a plan from this region with these options; the message says why and what to change."""


class PlanCompatibilityError(ValueError):
    """Bytes that are not a usable plan for this machine: not a plan, corrupt, another format version, or built for
    another device or library. The message lists every difference."""
