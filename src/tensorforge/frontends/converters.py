"""The converter registry: how a framework op becomes IR ops.

A converter is registered for one or more qualified op names ("aten::convolution.default", or
"aten::add" for every overload; "mylib::myop" for a custom op) and receives the op's arguments
by their schema names, never by position:

    @converter("aten::hardtanh.default")
    def hardtanh(ctx, *, input, min_val, max_val):
        return ctx.emit("clip", input, a_min=min_val, a_max=max_val)

It returns an IR `Value`, a tuple of them (for multi-output ops), or raises `Unsupported(reason)`
when this particular call cannot be expressed — the node then runs through its framework as an
opaque node, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable

ConverterFn = Callable[..., object]

_CONVERTERS: dict[str, ConverterFn] = {}


class Unsupported(Exception):
    """Raised by a converter for a call it cannot express in IR ops (the node becomes opaque)."""


def converter(*names: str) -> Callable[[ConverterFn], ConverterFn]:
    """Decorator: register a converter for the qualified op names (`ns::op` or `ns::op.overload`)."""
    if not names:
        raise ValueError("converter() needs at least one op name, e.g. converter('mylib::myop')")

    def decorate(fn: ConverterFn) -> ConverterFn:
        for name in names:
            if "::" not in name:
                raise ValueError(f"converter names look like 'namespace::op[.overload]', got {name!r}")
            if name in _CONVERTERS:
                raise ValueError(
                    f"a converter for {name!r} is already registered "
                    f"({_CONVERTERS[name].__module__}.{_CONVERTERS[name].__name__})"
                )
            _CONVERTERS[name] = fn
        return fn

    return decorate


def lookup(qualified_name: str) -> ConverterFn | None:
    """Exact overload first ("aten::add.Tensor"), then the whole op ("aten::add")."""
    fn = _CONVERTERS.get(qualified_name)
    if fn is None and "." in qualified_name.split("::", 1)[-1]:
        fn = _CONVERTERS.get(qualified_name.rsplit(".", 1)[0])
    return fn


def registered_names() -> list[str]:
    return sorted(_CONVERTERS)
