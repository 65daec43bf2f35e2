"""The epilogue of a fused layer: what an `engine.conv` or `engine.dense` does to its product before it stores it.

`fuse_bias_activation` writes it as the node's attributes (`has_bias`, `has_residual`, `residual_position`,
`activation`, `activation_attrs`) and orders the node's inputs (data, weight, [bias], [residual]).
`Epilogue.of(node)` reads all of that once into one frozen record: where the bias and the residual are among the
inputs, the activation with its attributes, and whether the residual is added before or after it. The reference
implementations (ops.py) and every conv and GEMM tactic take it from there, and so can the passes that make or move
fused layers (`to_attrs`, `without_residual`): no module needs to work out input positions or the residual's order
on its own.

    y = product + bias                   the bias is a vector along the channel axis, added by the product's
                                         library call (F.conv2d, F.linear, addmm) or kernel
    pre_activation  (ResNet:    conv -> bn -> add(residual) -> relu):  y = activation(y + residual)
    post_activation (post-norm: conv -> relu -> add(residual)):        y = activation(y) + residual

`apply` is the definition (each activation through its own IR op's reference, so fused and unfused graphs share
one definition of every activation); `in_place` is the same tail for tactics that own their output tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch
import torch.nn.functional as F

from ..ir import get_op

if TYPE_CHECKING:
    from ..ir import Node

FUSED_LAYERS = ("engine.conv", "engine.dense", "engine.qconv", "engine.qdense")
# quantized layers (quantized_ops.py) read their dequantization scale after the weight: their bias and residual
# come one input later
QUANTIZED_LAYERS = ("engine.qconv", "engine.qdense")
ResidualPosition = Literal["pre_activation", "post_activation"]
RESIDUAL_POSITIONS: tuple[ResidualPosition, ...] = ("pre_activation", "post_activation")

InPlace = Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor]
# The activations an epilogue may hold (IR op name), each with a form that overwrites the tensor it is given, so
# that a tactic applying one after a library GEMM or convolution pays no extra tensor. Their attributes travel along.
IN_PLACE_ACTIVATIONS: dict[str, InPlace] = {
    "nn.relu": lambda y, a: y.relu_(),
    "clip": lambda y, a: y.clamp_(a.get("a_min"), a.get("a_max")),
    "nn.gelu": lambda y, a: torch.ops.aten.gelu_(y, approximate=a.get("approximate", "none")),
    "nn.silu": lambda y, a: F.silu(y, inplace=True),
    "nn.hardswish": lambda y, a: F.hardswish(y, inplace=True),
    "nn.leaky_relu": lambda y, a: F.leaky_relu(y, a.get("alpha", 0.01), inplace=True),
    "sigmoid": lambda y, a: y.sigmoid_(),
    "tanh": lambda y, a: y.tanh_(),
}
FUSABLE_ACTIVATIONS = frozenset(IN_PLACE_ACTIVATIONS)

# the node attributes that hold an epilogue, with the values that mean "nothing after the product"
EPILOGUE_ATTRS: dict[str, Any] = {
    "has_bias": False,
    "activation": None,
    "activation_attrs": (),
    "has_residual": False,
    "residual_position": "pre_activation",
}
FIRST_EXTRA_INPUT = 2  # after the data and the weight (a quantized layer: and its scale)

T = TypeVar("T")


@dataclass(frozen=True)
class Epilogue:
    """A fused layer's epilogue (see the module docstring). `Epilogue()` is none at all."""

    has_bias: bool = False
    has_residual: bool = False
    activation: str | None = None
    activation_attrs: tuple[tuple[str, Any], ...] = ()
    residual_position: ResidualPosition = "pre_activation"
    first_extra: int = FIRST_EXTRA_INPUT  # where the bias (else the residual) is among the inputs

    def __post_init__(self) -> None:
        for flag in ("has_bias", "has_residual"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.residual_position not in RESIDUAL_POSITIONS:
            raise ValueError(f"residual_position must be one of {RESIDUAL_POSITIONS}, got {self.residual_position!r}")
        if self.activation is not None and self.activation not in FUSABLE_ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} cannot be fused; fusable: {sorted(FUSABLE_ACTIVATIONS)}")
        try:
            pairs = tuple((str(name), value) for name, value in self.activation_attrs)
        except (TypeError, ValueError):
            raise ValueError(f"activation_attrs must be (name, value) pairs, got {self.activation_attrs!r}") from None
        object.__setattr__(self, "activation_attrs", pairs)  # JSON brings lists: one form for comparisons

    # -- reading it ---------------------------------------------------------------------------------------

    @classmethod
    def of(cls, node: Node) -> Epilogue:
        """The epilogue of `node`, an engine.conv or engine.dense; ValueError when its attributes or its number
        of inputs do not describe one."""
        if node.op not in FUSED_LAYERS:
            raise ValueError(f"{node.op} has no epilogue (fused layers: {', '.join(FUSED_LAYERS)})")
        try:
            epilogue = cls.from_attrs(node.attrs, FIRST_EXTRA_INPUT + int(node.op in QUANTIZED_LAYERS))
            epilogue.check_inputs(len(node.inputs))
        except ValueError as exc:
            raise ValueError(f"{node.op} {node.name!r}: {exc}") from None
        return epilogue

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], first_extra: int = FIRST_EXTRA_INPUT) -> Epilogue:
        """The epilogue the attributes of a fused layer describe (absent ones take EPILOGUE_ATTRS' values), its
        bias or residual the input at `first_extra`."""
        values = {name: attrs.get(name, default) for name, default in EPILOGUE_ATTRS.items()}
        return cls(
            has_bias=values["has_bias"],
            has_residual=values["has_residual"],
            activation=values["activation"],
            activation_attrs=values["activation_attrs"],  # checked and made a tuple of pairs by __post_init__
            residual_position=values["residual_position"],
            first_extra=first_extra,
        )

    def to_attrs(self) -> dict[str, Any]:
        """The node attributes that describe this epilogue (what `from_attrs` reads)."""
        return {
            "has_bias": self.has_bias,
            "activation": self.activation,
            "activation_attrs": self.activation_attrs,
            "has_residual": self.has_residual,
            "residual_position": self.residual_position,
        }

    def without_residual(self) -> Epilogue:
        """The same epilogue with its residual add taken out (a pass that moves the add elsewhere)."""
        return Epilogue(self.has_bias, False, self.activation, self.activation_attrs, first_extra=self.first_extra)

    # -- where things are ---------------------------------------------------------------------------------

    @property
    def num_inputs(self) -> int:
        """Inputs of the fused layer: data, weight (a quantized layer: its scale), then the bias and the residual
        where present."""
        return self.first_extra + int(self.has_bias) + int(self.has_residual)

    @property
    def bias_index(self) -> int | None:
        """The bias's position among the layer's inputs, or None without one."""
        return self.first_extra if self.has_bias else None

    @property
    def residual_index(self) -> int | None:
        """The residual's position among the layer's inputs (after the bias), or None without one."""
        return self.first_extra + int(self.has_bias) if self.has_residual else None

    def check_inputs(self, count: int) -> None:
        if count != self.num_inputs:
            raise ValueError(
                f"has_bias={self.has_bias} and has_residual={self.has_residual} need {self.num_inputs} "
                f"inputs, got {count}"
            )

    def split(self, inputs: Sequence[T]) -> tuple[T | None, T | None]:
        """(bias, residual) among a layer's `inputs` (None for an absent one), after checking their number."""
        self.check_inputs(len(inputs))
        bias = inputs[self.bias_index] if self.bias_index is not None else None
        residual = inputs[self.residual_index] if self.residual_index is not None else None
        return bias, residual

    # -- what it does -------------------------------------------------------------------------------------

    @property
    def residual_before_activation(self) -> bool:
        """Whether a residual is added before the activation (pre_activation); meaningful with a residual."""
        return self.residual_position == "pre_activation"

    @property
    def activation_kwargs(self) -> dict[str, Any]:
        return dict(self.activation_attrs)

    def apply(self, y: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The reference: the steps after the bias on `y` (product + bias), out of place, the activation through
        its own IR op's reference."""
        self._check_residual(y, residual)
        if residual is not None and self.residual_before_activation:
            y = y + residual
        if self.activation is not None:
            (y,) = get_op(self.activation).run([y], self.activation_kwargs, {})
        if residual is not None and not self.residual_before_activation:
            y = y + residual
        return y

    def in_place(self) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
        """`apply` for a tactic that owns its output: a function (bound once) that overwrites `y` with the result
        and returns it. Numerically the same as `apply` (the same additions and activations, in the same order)."""
        act = IN_PLACE_ACTIVATIONS[self.activation] if self.activation is not None else None
        kwargs = self.activation_kwargs
        before = self.residual_before_activation

        def run(y: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
            if residual is not None and before:
                y.add_(residual)
            if act is not None:
                y = act(y, kwargs)
            if residual is not None and not before:
                y.add_(residual)
            return y

        return run

    def _check_residual(self, y: torch.Tensor, residual: torch.Tensor | None) -> None:
        if (residual is not None) != self.has_residual:
            raise ValueError(
                f"has_residual={self.has_residual}, but a residual was{' not' if residual is None else ''} given"
            )
        if residual is not None and tuple(residual.shape) != tuple(y.shape):
            raise ValueError(f"the residual has shape {tuple(residual.shape)}, the layer's output {tuple(y.shape)}")
