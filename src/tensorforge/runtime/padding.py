"""Padding buckets (`RuntimeOptions.pad_to_multiple`, docs/dynamic_shapes.md step 6): run a graph at sizes rounded up
to a multiple — `{"seq": 32}` runs sequence lengths 1..32 at 32, 33..64 at 64 — so a handful of shapes serve all
traffic: fewer plans built on a miss, fewer CUDA graphs captured, each replayed more often.

How: every input axis whose dim is a padded symbol is filled up to the next multiple with the pad value the caller
declares for that input (an attention mask's 0, the tokenizer's pad id for input ids); the graph runs; every output
axis whose dim is that symbol is sliced back to the true size.

What it means for results: outputs equal the unpadded ones only where padded positions cannot reach real ones —
attention whose mask is an input padded with "masked out" (softmax gives padded keys weight 0). A model that pools,
normalises or attends over the sequence without that mask (a plain mean over tokens, say) gives different results,
and no check here can see that: it is the caller's declaration of the pad values that makes it sound, which is why
padding is off by default and every padded input needs its pad value named.

What is checked, symbolically, when the padding is planned (`plan_padding`): each padded symbol is an input axis of
its own; no input or output dim is another expression of a padded symbol (`2*seq`, `seq - 1`, `8*seq` after a
flatten: padding would change it by other than the padding, so it could not be sliced back); every input with a
padded axis has a pad value. A refusal names the input or output, the axis and its dim.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..ir.graph import Graph
from ..ir.symbolic import SymExpr
from ..ir.types import Dim

PadValue = bool | int | float
# (axis, symbol) of each padded axis of one tensor
Axes = tuple[tuple[int, str], ...]


class PaddingError(ValueError):
    """Padding asked for where it cannot be undone by slicing, or without the pad values it needs."""


def check_multiples(value: object) -> Mapping[str, int]:
    """`pad_to_multiple` as given (symbol -> multiple), checked: identifiers mapped to positive ints."""
    if not isinstance(value, Mapping):
        raise ValueError(f"pad_to_multiple must be a dict of symbol -> multiple, e.g. {{'seq': 32}}; got {value!r}")
    for symbol, multiple in value.items():
        if not isinstance(symbol, str) or not symbol.isidentifier():
            raise ValueError(f"pad_to_multiple: {symbol!r} is not a symbol name (an identifier such as 'seq')")
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise ValueError(f"pad_to_multiple[{symbol!r}] must be a positive int, got {multiple!r}")
    return dict(sorted(value.items()))


def round_up(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


@dataclass(frozen=True)
class Padding:
    """A graph's padding, checked (`plan_padding`): what to pad on each input, with what, and what to slice back on
    each output. Pure data; `run` applies it around any function of the graph's inputs."""

    multiples: tuple[tuple[str, int], ...]
    input_axes: tuple[Axes, ...]  # per graph input
    pad_values: tuple[PadValue | None, ...]  # per graph input (None: it has no padded axis)
    output_axes: tuple[Axes, ...]  # per graph output
    input_names: tuple[str, ...]

    def sizes(self, inputs: Sequence[torch.Tensor]) -> dict[str, int]:
        """The true size of every padded symbol, read from the inputs' padded axes (two inputs must agree)."""
        env: dict[str, int] = {}
        for name, axes, tensor in zip(self.input_names, self.input_axes, inputs):
            for axis, symbol in axes:
                size = tensor.shape[axis]
                if env.setdefault(symbol, size) != size:
                    raise ValueError(
                        f"input {name!r} axis {axis} is {symbol} = {size}, but an earlier input has {symbol} = "
                        f"{env[symbol]}"
                    )
        return env

    def padded_sizes(self, env: Mapping[str, int]) -> dict[str, int]:
        return {symbol: round_up(env[symbol], multiple) for symbol, multiple in self.multiples}

    def pad(self, inputs: Sequence[torch.Tensor], padded: Mapping[str, int]) -> list[torch.Tensor]:
        """The inputs filled up along their padded axes to the `padded` sizes, with each input's pad value."""
        out = []
        for axes, value, tensor in zip(self.input_axes, self.pad_values, inputs):
            shape = list(tensor.shape)
            for axis, symbol in axes:
                shape[axis] = padded[symbol]
            if shape == list(tensor.shape):
                out.append(tensor)
                continue
            assert value is not None, "plan_padding gives every padded input a pad value"
            filled = torch.full(shape, value, dtype=tensor.dtype, device=tensor.device)
            filled[tuple(slice(0, n) for n in tensor.shape)] = tensor
            out.append(filled)
        return out

    def unpad(self, outputs: Sequence[torch.Tensor], env: Mapping[str, int]) -> tuple[torch.Tensor, ...]:
        """The outputs sliced back along their padded axes to the true sizes of `env`."""
        out = []
        for axes, tensor in zip(self.output_axes, outputs):
            index = [slice(None)] * tensor.dim()
            for axis, symbol in axes:
                index[axis] = slice(0, env[symbol])
            out.append(tensor[tuple(index)] if axes else tensor)
        return tuple(out)

    def run(
        self, fn: Callable[..., Sequence[torch.Tensor]], inputs: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, ...]:
        """`fn(*inputs)` run on the padded inputs, its outputs sliced back."""
        env = self.sizes(inputs)
        return self.unpad(fn(*self.pad(inputs, self.padded_sizes(env))), env)


def _padded_axes(what: str, dims: Sequence[Dim], padded: Mapping[str, int]) -> Axes:
    axes = []
    for axis, dim in enumerate(dims):
        if isinstance(dim, int):
            continue
        touched = sorted(dim.free_symbols & set(padded))
        if not touched:
            continue
        if dim != SymExpr.symbol(touched[0]):
            raise PaddingError(
                f"{what} axis {axis} is {dim}: padding {touched[0]!r} to a multiple of {padded[touched[0]]} would "
                f"change it by other than the padding, so it cannot be sliced back; padding needs every dim that "
                f"depends on {touched[0]!r} to be {touched[0]} itself"
            )
        axes.append((axis, touched[0]))
    return tuple(axes)


def plan_padding(graph: Graph, pad_to_multiple: Mapping[str, int], pad_values: Mapping[str, PadValue]) -> Padding:
    """Check that `graph` can run padded to `pad_to_multiple` (symbol -> multiple) with `pad_values` (input name ->
    the value its padded positions get) and say how; a PaddingError names what stands in the way."""
    multiples = check_multiples(pad_to_multiple)
    names = [v.name for v in graph.inputs]
    unknown = sorted(set(pad_values) - set(names))
    if unknown:
        raise PaddingError(f"pad values name input(s) {unknown} the graph lacks; its inputs: {', '.join(names)}")
    for name, value in pad_values.items():
        if not isinstance(value, (bool, int, float)):
            raise PaddingError(f"the pad value of input {name!r} must be a number or a bool, got {value!r}")
    input_axes = tuple(_padded_axes(f"input {v.name!r}", v.type.shape, multiples) for v in graph.inputs)
    bare = {symbol for axes in input_axes for _, symbol in axes}
    missing_symbols = sorted(set(multiples) - bare)
    if missing_symbols:
        symbols = sorted(
            {s for v in graph.inputs for d in v.type.shape if not isinstance(d, int) for s in d.free_symbols}
        )
        raise PaddingError(
            f"pad_to_multiple names {missing_symbols}, which no input has as a dimension; the inputs' symbols: "
            f"{', '.join(symbols) or 'none (all shapes static)'}"
        )
    values: list[PadValue | None] = []
    for v, axes in zip(graph.inputs, input_axes):
        if axes and v.name not in pad_values:
            raise PaddingError(
                f"input {v.name!r} is padded along {', '.join(s for _, s in axes)} but has no pad value: name "
                f"it (e.g. {{{v.name!r}: 0}}); an attention mask's pad value must mask the padded positions out"
            )
        values.append(pad_values.get(v.name) if axes else None)
    output_axes = tuple(
        _padded_axes(f"output {i} ({v.name!r})", v.type.shape, multiples) for i, v in enumerate(graph.outputs)
    )
    return Padding(tuple(multiples.items()), input_axes, tuple(values), output_axes, tuple(names))
