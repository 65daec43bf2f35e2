"""PartitionConfig: the options of `partition_for_tensorforge`, plus the report of what it did.

A frozen dataclass, as in TVM's `partition_for_tensorrt`, which returns the config the build step reads.
`to_json()` / `from_json()` round-trip everything, the report included, so a saved model can say how it
was partitioned.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from ..ir.registry import UnknownOpError, get_op
from .fold import DEFAULT_LIMIT_BYTES
from .report import PartitionReport
from .rules import ENGINE_VERSION, format_version

FORMAT = "tensorforge.partition_config"
FORMAT_VERSION = 1


def _int_tuple(value, name: str, length: int) -> tuple[int, ...]:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a tuple of {length} ints, got {value!r}")
    out = tuple(value)
    if len(out) != length or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in out):
        raise ValueError(f"{name} must be a tuple of {length} non-negative ints, got {value!r}")
    return out


@dataclass(frozen=True)
class PartitionConfig:
    """Options of one partitioning (see `partition_for_tensorforge` for their meaning) and its report."""

    version: tuple[int, int, int] = ENGINE_VERSION
    use_implicit_batch: bool = True
    min_block_size: int = 1
    remove_no_mac_subgraphs: bool = False
    max_workspace_size: int = 1 << 30
    torch_executed_ops: tuple[str, ...] = ()
    device_capability: tuple[int, int] | None = None
    fold_constants: bool = True
    fold_limit_bytes: int = DEFAULT_LIMIT_BYTES
    report: PartitionReport | None = None

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (normalizing a frozen instance)
        version = _int_tuple(self.version, "version", 3)
        if version > ENGINE_VERSION:
            raise ValueError(
                f"version {format_version(version)} is newer than the engine this tensorforge "
                f"builds ({format_version(ENGINE_VERSION)})"
            )
        set_("version", version)
        for flag in ("use_implicit_batch", "remove_no_mac_subgraphs", "fold_constants"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        for name, low in (("min_block_size", 1), ("max_workspace_size", 1), ("fold_limit_bytes", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        ops = self.torch_executed_ops
        ops = (ops,) if isinstance(ops, str) else tuple(ops)
        for op in ops:
            try:
                get_op(op)
            except UnknownOpError as exc:
                raise ValueError(f"torch_executed_ops: {exc}") from None
        set_("torch_executed_ops", ops)
        if self.device_capability is not None:
            set_("device_capability", _int_tuple(self.device_capability, "device_capability", 2))

    def to_dict(self) -> dict:
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "report":
                value = None if value is None else value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            doc[f.name] = value
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, doc: dict) -> PartitionConfig:
        if doc.get("format") != FORMAT:
            raise ValueError(f"not a tensorforge partition config (format {doc.get('format')!r})")
        if doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"partition config format version {doc.get('format_version')} is not supported "
                f"(this tensorforge reads version {FORMAT_VERSION})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in doc.items() if k in names}
        if kwargs.get("report") is not None:
            kwargs["report"] = PartitionReport.from_dict(kwargs["report"])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> PartitionConfig:
        return cls.from_dict(json.loads(text))
