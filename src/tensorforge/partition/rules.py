"""Support rules: which nodes the tensorforge engine takes, and why it refuses the others.

One registry, keyed by IR op name, holds one `SupportRule` per op. Most ops need no check beyond the
generic ones, so they are declared as data in `SUPPORTED` (one line each); the few with restrictions
register a `check(node, ctx) -> str | None` with `@support_rule`. Registering an op twice is an error.

`support_reason(node, ctx)` is the single source of truth the partitioner asks. It returns None when the
engine takes the node, otherwise a sentence saying why not. The checks run cheapest first:

1. forced out by `torch_executed_ops`;
2. opaque ops (no IR op: they can only run through their source framework);
3. no rule for the op;
4. engine version (`since=`) and device capability (`capability=`) gates, compared as tuples;
5. dtypes of every input and output (and bfloat16 needs compute capability 8.0);
6. implicit batch mode: ops that change or reduce the batch dimension (see `batch.py`);
7. the op's own check.

Device capability: `ctx.device_capability` None means no GPU is known, so capability gates are not
applied (partitioning stays the same on every machine). Pass `torch.cuda.get_device_capability()`, or
"auto" to `partition_for_tensorforge`, to gate for a real device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..ir.types import GPU_FLOAT_DTYPES
from .batch import batch_reason

if TYPE_CHECKING:
    from ..ir.graph import Graph, Node, Value

Version = tuple[int, int, int]
Capability = tuple[int, int]
CheckFn = Callable[["Node", "SupportContext"], str | None]

# The engine this tensorforge builds. `version=` in partition_for_tensorforge targets an older one.
ENGINE_VERSION: Version = (0, 3, 0)

BASE: Version = (0, 1, 0)
V0_2: Version = (0, 2, 0)
V0_3: Version = (0, 3, 0)

FLOAT = GPU_FLOAT_DTYPES
NUMBER = FLOAT | {"int32", "int64"}
ANY = NUMBER | {"bool"}

# dtypes the engine can hold only on newer GPUs
DTYPE_CAPABILITY: dict[str, Capability] = {"bfloat16": (8, 0)}


def format_version(version: Iterable[int]) -> str:
    return ".".join(str(v) for v in version)


@dataclass(frozen=True)
class SupportContext:
    """What a rule may look at besides the node: the options, and which values depend on graph inputs.

    A value is *static* when it is a constant, or computed from static values only and free of symbolic
    dimensions (so it is known before the first run and has no batch dimension: `arange(stop=batch)` is not
    static). Every other value is an *activation*.
    """

    graph: Graph | None = None
    version: Version = ENGINE_VERSION
    use_implicit_batch: bool = True
    device_capability: Capability | None = None
    torch_executed_ops: frozenset[str] = frozenset()

    @functools.cached_property
    def _static(self) -> frozenset[int]:
        static: set[int] = set()
        if self.graph is None:
            return frozenset()
        static |= {id(v) for v in self.graph.constants.values()}
        for node in self.graph.nodes:
            if all(id(v) in static for v in node.inputs) and all(v.type.is_static for v in node.outputs):
                static |= {id(v) for v in node.outputs}
        return frozenset(static)

    def is_static(self, value: Value) -> bool:
        if value.data is not None:
            return True
        return id(value) in self._static

    def is_activation(self, value: Value) -> bool:
        return not self.is_static(value)


@dataclass(frozen=True)
class SupportRule:
    op: str
    since: tuple[int, ...] = BASE  # (major, minor, patch), checked at registration
    capability: tuple[int, ...] | None = None
    dtypes: frozenset[str] = ANY
    check: CheckFn | None = field(default=None, compare=False)

    @property
    def restriction(self) -> str:
        """The check's docstring, first line: the "restrictions" column of the op table."""
        doc = (self.check.__doc__ or "").strip() if self.check else ""
        return doc.splitlines()[0] if doc else ""


_RULES: dict[str, SupportRule] = {}


def _version(v, what: str) -> tuple[int, ...]:
    v = tuple(v)
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        raise ValueError(f"{what} must be a tuple of non-negative ints, got {v!r}")
    return v


def register_supported_op(
    op: str,
    *,
    since: Version = BASE,
    capability: Capability | None = None,
    dtypes: Iterable[str] = ANY,
    check: CheckFn | None = None,
) -> SupportRule:
    """Declare that the engine takes `op` (from engine version `since`, on devices of at least `capability`).

    `check(node, ctx)` adds op-specific restrictions: it returns None or a reason string. This is the public
    way to make a new op (a plugin, an op added to the IR) eligible for offloading.
    """
    if op in _RULES:
        raise ValueError(
            f"a support rule for {op!r} is already registered "
            f"({_RULES[op].check.__module__ if _RULES[op].check else 'in the SUPPORTED table'})"
        )
    checked_since = _version(since, f"{op}: since")
    if len(checked_since) != 3:
        raise ValueError(f"{op}: since must be (major, minor, patch), got {checked_since!r}")
    checked_capability = None if capability is None else _version(capability, f"{op}: capability")
    rule = SupportRule(op=op, since=checked_since, capability=checked_capability, dtypes=frozenset(dtypes), check=check)
    _RULES[op] = rule
    return rule


def support_rule(
    op: str, *, since: Version = BASE, capability: Capability | None = None, dtypes: Iterable[str] = ANY
) -> Callable[[CheckFn], CheckFn]:
    """Decorator: register `check(node, ctx) -> str | None` as the support rule of `op`."""

    def decorate(check: CheckFn) -> CheckFn:
        register_supported_op(op, since=since, capability=capability, dtypes=dtypes, check=check)
        return check

    return decorate


def get_rule(op: str) -> SupportRule | None:
    return _RULES.get(op)


def registered_rules() -> dict[str, SupportRule]:
    return dict(sorted(_RULES.items()))


def support_reason(node: Node, ctx: SupportContext) -> str | None:
    """None when the engine takes `node`, else the reason it runs through PyTorch."""
    if node.op in ctx.torch_executed_ops:
        return "forced out by torch_executed_ops"
    if node.opdef.opaque:
        runner = "onnxruntime" if node.op.startswith("onnx.") else "PyTorch"
        return f"no IR op: {node.op} runs through {runner}"
    rule = _RULES.get(node.op)
    if rule is None:
        return f"the engine has no support rule for {node.op}"
    if rule.since > tuple(ctx.version):
        return (
            f"{node.op} needs engine version {format_version(rule.since)} or newer "
            f"(targeting {format_version(ctx.version)})"
        )
    if (
        rule.capability is not None
        and ctx.device_capability is not None
        and tuple(ctx.device_capability) < rule.capability
    ):
        return (
            f"{node.op} needs compute capability {format_version(rule.capability)}, "
            f"the device has {format_version(ctx.device_capability)}"
        )
    for value in list(node.inputs) + list(node.outputs):
        dtype = value.type.dtype
        if dtype not in rule.dtypes:
            return f"dtype {dtype} is not supported (the engine's {node.op} takes {', '.join(sorted(rule.dtypes))})"
        need = DTYPE_CAPABILITY.get(dtype)
        if need and ctx.device_capability is not None and tuple(ctx.device_capability) < need:
            return (
                f"dtype {dtype} needs compute capability {format_version(need)}; "
                f"the device has {format_version(ctx.device_capability)}"
            )
    reason = batch_reason(node, ctx) if ctx.use_implicit_batch else None
    if reason is None and rule.check is not None:
        reason = rule.check(node, ctx)
    if reason is not None and not isinstance(reason, str):
        raise TypeError(f"the support rule of {node.op} returned {reason!r}; rules return None or a reason string")
    return reason


# ---------------------------------------------------------------------------------------------
# The op table: ops the engine takes with no check beyond the generic ones.
# ---------------------------------------------------------------------------------------------

SUPPORTED: list[tuple[str, frozenset[str], Version]] = [
    # activations and unary math
    ("nn.relu", NUMBER, BASE),
    ("nn.leaky_relu", FLOAT, BASE),
    ("nn.elu", FLOAT, BASE),
    ("nn.prelu", FLOAT, BASE),
    ("nn.gelu", FLOAT, BASE),
    ("nn.silu", FLOAT, BASE),
    ("nn.mish", FLOAT, BASE),
    ("nn.hardswish", FLOAT, BASE),
    ("nn.hardsigmoid", FLOAT, BASE),
    ("nn.softplus", FLOAT, BASE),
    ("sigmoid", FLOAT, BASE),
    ("tanh", FLOAT, BASE),
    ("exp", FLOAT, BASE),
    ("log", FLOAT, BASE),
    ("sqrt", FLOAT, BASE),
    ("rsqrt", FLOAT, BASE),
    ("reciprocal", FLOAT, BASE),
    ("erf", FLOAT, BASE),
    ("sin", FLOAT, BASE),
    ("cos", FLOAT, BASE),
    ("tan", FLOAT, BASE),
    ("atan", FLOAT, BASE),
    ("abs", NUMBER, BASE),
    ("negative", NUMBER, BASE),
    ("sign", NUMBER, BASE),
    ("ceil", NUMBER, BASE),
    ("floor", NUMBER, BASE),
    ("round", NUMBER, BASE),
    ("clip", NUMBER, BASE),
    ("cast", ANY, BASE),
    ("logical_not", ANY, BASE),
    # binary arithmetic, comparisons, selection
    ("add", NUMBER, BASE),
    ("subtract", NUMBER, BASE),
    ("multiply", NUMBER, BASE),
    ("divide", NUMBER, BASE),
    ("floor_divide", NUMBER, BASE),
    ("trunc_divide", NUMBER, BASE),
    ("floor_mod", NUMBER, BASE),
    ("trunc_mod", NUMBER, V0_3),
    ("power", NUMBER, BASE),
    ("maximum", NUMBER, BASE),
    ("minimum", NUMBER, BASE),
    ("equal", ANY, BASE),
    ("not_equal", ANY, BASE),
    ("less", ANY, BASE),
    ("less_equal", ANY, BASE),
    ("greater", ANY, BASE),
    ("greater_equal", ANY, BASE),
    ("logical_and", ANY, BASE),
    ("logical_or", ANY, BASE),
    ("logical_xor", ANY, BASE),
    ("where", ANY, V0_2),
    # matrix products (nn.dense has a rule below: its weight must be static)
    ("matmul", FLOAT, BASE),
    ("nn.batch_matmul", FLOAT, BASE),
    # normalization, softmax, attention
    ("nn.bias_add", FLOAT, BASE),
    ("nn.layer_norm", FLOAT, BASE),
    ("nn.group_norm", FLOAT, V0_2),
    ("nn.softmax", FLOAT, BASE),
    ("nn.log_softmax", FLOAT, BASE),
    ("nn.scaled_dot_product_attention", FLOAT | {"bool"}, V0_2),  # a mask may be boolean
    # pooling and resizing
    ("nn.max_pool1d", FLOAT, BASE),
    ("nn.max_pool2d", FLOAT, BASE),
    ("nn.max_pool3d", FLOAT, BASE),
    ("nn.avg_pool1d", FLOAT, BASE),
    ("nn.avg_pool2d", FLOAT, BASE),
    ("nn.avg_pool3d", FLOAT, BASE),
    ("nn.global_max_pool2d", FLOAT, BASE),
    ("nn.global_avg_pool2d", FLOAT, BASE),
    ("nn.adaptive_max_pool2d", FLOAT, BASE),
    ("nn.adaptive_avg_pool2d", FLOAT, BASE),
    ("image.resize2d", FLOAT, V0_2),
    # reductions (the batch axis is guarded generically in implicit batch mode)
    ("sum", NUMBER, BASE),
    ("prod", NUMBER, BASE),
    ("max", NUMBER, BASE),
    ("min", NUMBER, BASE),
    ("mean", FLOAT, BASE),
    ("variance", FLOAT, BASE),
    ("argmax", NUMBER, BASE),
    ("argmin", NUMBER, BASE),
    ("cumsum", ANY, V0_3),  # a bool input counts ones (its sums are int64); axis 0 is guarded like a reduction's
    # shape and layout
    ("reshape", ANY, BASE),
    ("transpose", ANY, BASE),
    ("layout_transform", ANY, BASE),
    ("expand_dims", ANY, BASE),
    ("squeeze", ANY, BASE),
    ("concatenate", ANY, BASE),
    ("stack", ANY, BASE),
    ("split", ANY, BASE),
    ("strided_slice", ANY, BASE),
    ("slice_scatter", ANY, V0_3),
    ("broadcast_to", ANY, BASE),
    ("tile", ANY, BASE),
    ("reverse", ANY, BASE),
    ("roll", ANY, V0_3),
    ("copy", ANY, BASE),
    ("nn.batch_flatten", ANY, BASE),
    ("nn.pad", NUMBER, BASE),
    # indexing
    ("take", ANY, BASE),
    ("adv_index", ANY, BASE),
    ("gather", ANY, V0_2),
    # tensors made from attributes (folded into the plan)
    ("arange", NUMBER, BASE),
    ("full", ANY, BASE),
    ("full_like", ANY, BASE),
]

for _op, _dtypes, _since in SUPPORTED:
    register_supported_op(_op, since=_since, dtypes=_dtypes)


# ---------------------------------------------------------------------------------------------
# Ops with restrictions: one check each, its docstring's first line is the restriction.
# ---------------------------------------------------------------------------------------------


def _static_inputs(node: Node, ctx: SupportContext, indices: Iterable[int], what: str) -> str | None:
    for i in indices:
        if i < len(node.inputs) and not ctx.is_static(node.inputs[i]):
            return f"{what} is computed from the graph inputs; the engine needs it constant"
    return None


def _weight_is_static(node: Node, ctx: SupportContext) -> str | None:
    """The weight (input 1) must be a constant or computed from constants only."""
    return _static_inputs(node, ctx, (1,), "the weight")


for _ndim in (1, 2, 3):
    support_rule(f"nn.conv{_ndim}d", dtypes=FLOAT)(_weight_is_static)
    support_rule(f"nn.conv{_ndim}d_transpose", dtypes=FLOAT)(_weight_is_static)
support_rule("nn.dense", dtypes=FLOAT)(_weight_is_static)


@support_rule("nn.batch_norm", dtypes=FLOAT)
def _batch_norm(node: Node, ctx: SupportContext) -> str | None:
    """gamma, beta, mean and variance must be constants (they fold into a scale and shift)."""
    return _static_inputs(node, ctx, (1, 2, 3, 4), "a batch-norm parameter (gamma, beta, mean or variance)")


# Explicit quantization (issue 15): the quantized types travel only between a quantize and its dequantize (and
# from a quantized weight constant to its dequantize); layers between them compute in float, on the values the
# quantized model has.
QUANTIZED = frozenset({"int8", "uint8", "float8_e4m3fn"})


def _scales_are_static(node: Node, ctx: SupportContext) -> str | None:
    """The scale and zero point must be constants (a calibrated or imported model's are)."""
    return _static_inputs(node, ctx, (1, 2), "the scale or zero point")


support_rule("quantize", since=V0_3, dtypes=FLOAT | QUANTIZED)(_scales_are_static)
support_rule("dequantize", since=V0_3, dtypes=FLOAT | QUANTIZED | {"int32"})(_scales_are_static)


def rule_table() -> list[dict]:
    """Every rule as a row (op, since, capability, dtypes, restriction): the documented op table."""
    return [
        {
            "op": r.op,
            "since": format_version(r.since),
            "capability": format_version(r.capability) if r.capability else "",
            "dtypes": ", ".join(sorted(r.dtypes)),
            "restriction": r.restriction,
        }
        for r in registered_rules().values()
    ]
