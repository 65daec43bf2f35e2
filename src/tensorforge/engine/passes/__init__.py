"""The builder's graph passes, in the order they run.

Each pass is one file and one pure function `(graph, ctx) -> graph`: it returns a new graph and never
changes its input. Each counts its rewrites in `ctx.counters[<pass name>]`, which the plan reports.
Adding a pass: write `passes/<name>.py` with a docstring saying why it exists, put it in `PASSES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import InitVar, dataclass, field

from ...ir import Graph
from ...ir.profile import Profile
from ..config import BuilderConfig, as_profile
from .assign_precision import assign_precision
from .constant_folding import constant_folding
from .dead_code import dead_code
from .dense_from_matmul import dense_from_matmul
from .fold_batch_norm import fold_batch_norm
from .fold_view_chains import fold_view_chains
from .fuse_bias_activation import fuse_bias_activation
from .fuse_horizontal_dense import fuse_horizontal_dense
from .fuse_layer_norm import fuse_layer_norm
from .fuse_pointwise import fuse_pointwise
from .fuse_quantized_layers import fuse_quantized_layers
from .hoist_attention_masks import hoist_attention_masks
from .reorder_dense_rows import reorder_dense_rows
from .sink_dequantize import sink_dequantize
from .sink_transposes import sink_transposes


@dataclass
class PassContext:
    """What passes may read (options, the profile the plan is built for) and the counters they bump.

    `max_batch=n` (not a field) is shorthand for `profile=Profile.batch(n)`, as in `Builder.build`."""

    config: BuilderConfig = field(default_factory=BuilderConfig)
    profile: Profile = field(default_factory=lambda: Profile.batch(1))
    fold_limit_bytes: int = 64 << 20  # constant folding never makes a constant larger than this
    counters: dict[str, int] = field(default_factory=dict)
    max_batch: InitVar[int | None] = None

    def __post_init__(self, max_batch: int | None) -> None:
        if max_batch is not None:
            self.profile = as_profile(max_batch)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


Pass = Callable[[Graph, PassContext], Graph]

PASSES: list[Pass] = [
    constant_folding,  # constant subexpressions (arange/broadcast chains) become weights
    fold_batch_norm,  # inference batch norm disappears into the conv/dense before it
    dense_from_matmul,  # a matmul by a constant matrix is a dense layer, a vector added to its output its bias
    fuse_bias_activation,  # conv/dense + bias + residual + activation become one layer
    sink_dequantize,  # a dequantize moves below reshapes, transposes, pools; quantize(dequantize(x)) is x
    fuse_quantized_layers,  # dequantize -> layer -> quantize becomes one 8-bit layer (its weight stays 8-bit)
    fuse_horizontal_dense,  # dense layers reading the same input (Q, K, V) become one wide GEMM + split
    assign_precision,  # fp16/bf16: safe layers and their weights in the reduced type, casts at boundaries
    sink_transposes,  # a transpose read by a cast or a GEMM moves below it (no copy into row order)
    reorder_dense_rows,  # a GEMM takes its rows in the order its reader wants (MHA's out-projection: no copy)
    fuse_layer_norm,  # layer norm + the casts around it + the residual add before it become one kernel
    hoist_attention_masks,  # a boolean attention mask becomes an additive one, made once for every layer
    fuse_pointwise,  # elementwise chains (and the casts precision left) become one generated kernel each
    fold_view_chains,  # reshape/transpose/slice chains become one strided view where strides can say it
    dead_code,  # drop what the rewrites left unused
]


def run_passes(graph: Graph, ctx: PassContext, passes: list[Pass] | None = None, *, verify_each: bool = False) -> Graph:
    """Run `passes` (default `PASSES`) in order; every pass's counter exists afterwards, even when zero.
    `verify_each` runs the IR verifier after every pass (tests do; the builder verifies the final graph)."""
    for p in PASSES if passes is None else passes:
        ctx.counters.setdefault(p.__name__, 0)
        graph = p(graph, ctx)
        if verify_each:
            graph.verify()
    return graph


__all__ = [
    "PASSES",
    "PassContext",
    "run_passes",
    "constant_folding",
    "dead_code",
    "fold_batch_norm",
    "fuse_bias_activation",
    "fuse_horizontal_dense",
    "fuse_layer_norm",
    "fuse_quantized_layers",
]
