"""The ONNX converter registry: (domain, op type, since-version) -> converter, with its support check.

An ONNX model names an op and an opset; `onnx.defs.get_schema(op, opset, domain).since_version` says
which version of the op that is, and exactly that version's converter applies. A converter lists the
since-versions it handles, each checked against `onnx.defs` at registration, so a typo fails at import:

    @onnx_converter("LeakyRelu", since=(6, 16))
    def leaky_relu(ctx, *, X, alpha):
        return ctx.emit("nn.leaky_relu", X, alpha=alpha)

It receives the node's inputs by their schema names (`None` for a missing optional input, a list for a
variadic one) and every attribute by its ONNX name, defaults filled from the schema. It returns an
`Operand` or a tuple with one entry per output (`None` for an output it does not produce), or raises
`Unsupported(reason)`: the node then runs through onnxruntime as an opaque node.

Inputs are bound by position: where an older since-version names an input differently
(BatchNormalization-9's `mean`, `var` are `input_mean`, `input_var` from version 14 on), the converter
receives it under the newest registered version's name. Registration checks the converter's signature
against every since-version it claims (each input and attribute accepted, each parameter without a
default given by every version), so a converter that some version would call with a wrong keyword fails
when the package is imported, not when a model of that opset arrives.

`check` (optional) is the converter's static capability validator, asked by the whole-model check
before anything is imported: it takes the same keyword arguments (inputs as `Operand`s carrying only
their types, and their values when they are initializers or constants) plus `used_outputs` (which of the
node's outputs anything reads), and returns None or a reason.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnx
import onnx.defs
from onnx import helper, numpy_helper

ConverterFn = Callable[..., Any]
CheckFn = Callable[..., str | None]


class Unsupported(Exception):
    """Raised by a converter for a node it cannot express in IR ops (the node becomes opaque)."""


def canonical_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


@dataclass(frozen=True)
class OnnxConverter:
    domain: str
    op_type: str
    since: int
    fn: ConverterFn
    check: CheckFn | None
    input_names: tuple[str, ...] | None = None  # only for ops onnx has no schema for (custom domains)
    note: str = ""  # limits only conversion can see (values known at import, static sizes)
    params: tuple[str, ...] = ()  # the converter's parameter name for each schema input, by position

    @property
    def restriction(self) -> str:
        """The "restrictions" column of the op table: the check docstring's first line, then the note."""
        doc = (self.check.__doc__ or "").strip() if self.check else ""
        first = doc.splitlines()[0].rstrip(".") if doc else ""
        parts = [first[:1].lower() + first[1:], self.note]  # table cells: lower-case phrases joined by ";"
        return "; ".join(p for p in parts if p)


_CONVERTERS: dict[tuple[str, str, int], OnnxConverter] = {}


@functools.cache
def _known(domain: str) -> int:
    """The newest since-version of any op of `domain` that the installed onnx has a schema for."""
    versions = [
        s.since_version for s in onnx.defs.get_all_schemas_with_history() if canonical_domain(s.domain) == domain
    ]
    return max(versions, default=0)


def onnx_converter(
    op_type: str,
    *,
    since: int | tuple[int, ...],
    domain: str = "",
    check: CheckFn | None = None,
    inputs: tuple[str, ...] | None = None,
    note: str = "",
) -> Callable[[ConverterFn], ConverterFn]:
    """Decorator: register a converter for `op_type` at each since-version in `since`.

    `check` is the static validator (see the module docstring); `note` states, for the op table, the
    limits the converter itself enforces at import (where it raises Unsupported).

    Ops of onnx's own domains are checked against `onnx.defs` and bound by their schema. A custom op
    (a domain onnx has no schema for, e.g. "com.example") names its inputs with `inputs=`; it receives the
    attributes the node carries (the converter's own keyword defaults fill the rest).
    """
    domain = canonical_domain(domain)
    # a since-version newer than the installed onnx knows (Range-27 under onnx 1.21) cannot come from a model that
    # onnx can check or infer here: it is left out rather than refusing the whole import of tensorforge
    versions = (since,) if isinstance(since, int) else tuple(since)
    if inputs is None and _known(domain):  # a domain onnx has schemas for, but maybe not this new
        versions = tuple(v for v in versions if v <= _known(domain))

    def decorate(fn: ConverterFn) -> ConverterFn:
        schemas = {}
        for version in versions:
            if inputs is None:
                try:
                    schema = onnx.defs.get_schema(op_type, version, domain)
                except onnx.defs.SchemaError as exc:
                    raise ValueError(
                        f"onnx has no schema {op_type}-{version} in domain {domain or 'ai.onnx'!r}; "
                        f"a custom op names its inputs with inputs=(...)"
                    ) from exc
                if schema.since_version != version:
                    raise ValueError(
                        f"{op_type}-{version} is not a since-version of {op_type}: opset {version} "
                        f"resolves to {op_type}-{schema.since_version}"
                    )
                schemas[version] = schema
            elif schema_for(op_type, domain, version) is not None:
                raise ValueError(f"{op_type} has an onnx schema: its inputs are bound by name, drop inputs=")
        for version in versions:
            if (domain, op_type, version) in _CONVERTERS:
                old = _CONVERTERS[(domain, op_type, version)].fn
                raise ValueError(
                    f"a converter for {op_type}-{version} is already registered ({old.__module__}.{old.__name__})"
                )
        newest = [p.name for p in schemas[max(schemas)].inputs] if schemas else []
        params = {v: _input_params(fn, schema, newest) for v, schema in schemas.items()}  # all checked first
        for version in versions:
            _CONVERTERS[(domain, op_type, version)] = OnnxConverter(
                domain,
                op_type,
                version,
                fn,
                check,
                tuple(inputs) if inputs is not None else None,
                note,
                params.get(version, ()),
            )
        return fn

    return decorate


def _input_params(fn: ConverterFn, schema, newest: list[str]) -> tuple[str, ...]:
    """The converter's keyword for each of the schema's inputs: its own name, else (an older version that named
    it differently) the newest registered version's name at that position. Raises ValueError when some version
    of the op would call `fn` with a keyword it lacks, or without one it requires."""
    signature = inspect.signature(fn)
    keywords = {
        n: p
        for n, p in signature.parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n != "ctx"
    }
    if any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        return tuple(p.name for p in schema.inputs)  # takes anything: the schema's own names
    where = f"converter {fn.__module__}.{fn.__name__} for {schema.name}-{schema.since_version}"
    params = []
    for i, formal in enumerate(schema.inputs):
        if formal.name in keywords:
            params.append(formal.name)
        elif i < len(newest) and newest[i] in keywords:
            params.append(newest[i])
        else:
            raise ValueError(
                f"{where}: input {i} ({formal.name!r}) has no parameter; name one {formal.name!r}"
                + (f" or {newest[i]!r}" if i < len(newest) else "")
            )
    absent = sorted(set(schema.attributes) - set(keywords))
    if absent:
        raise ValueError(f"{where}: no parameter for the attribute(s) {absent}")
    given = set(params) | set(schema.attributes)
    required = sorted(n for n, p in keywords.items() if p.default is p.empty and n not in given)
    if required:
        raise ValueError(f"{where}: the schema gives no {required}; give them defaults")
    return tuple(params)


def schema_for(op_type: str, domain: str, opset: int):
    """The schema the model's opset selects, or None when onnx knows no such op."""
    try:
        return onnx.defs.get_schema(op_type, opset, canonical_domain(domain))
    except onnx.defs.SchemaError:
        return None


def resolve(op_type: str, domain: str, opset: int):
    """(since-version, schema or None, converter or None) of an op in a model importing `opset` of `domain`."""
    schema = schema_for(op_type, domain, opset)
    if schema is not None:
        return schema.since_version, schema, lookup(op_type, domain, schema.since_version)
    versions = [v for v in mapped_versions(op_type, domain) if v <= opset]
    if versions:
        return max(versions), None, lookup(op_type, domain, max(versions))
    return opset, None, None


def lookup(op_type: str, domain: str, since: int) -> OnnxConverter | None:
    return _CONVERTERS.get((canonical_domain(domain), op_type, since))


def mapped_versions(op_type: str, domain: str = "") -> list[int]:
    domain = canonical_domain(domain)
    return sorted(v for (d, op, v) in _CONVERTERS if d == domain and op == op_type)


def registered_converters() -> dict[tuple[str, str, int], OnnxConverter]:
    return dict(sorted(_CONVERTERS.items()))


def onnx_op_table() -> list[dict]:
    """Every mapped ONNX op as a row (op, domain, since-versions, restriction): the documented op table.

    Versions of one op share a row; the restriction is the newest version's (they rarely differ, and
    where they do, the newest is what current exporters write)."""
    rows: dict[tuple[str, str], list[OnnxConverter]] = {}
    for (domain, op, _version), conv in sorted(_CONVERTERS.items()):
        rows.setdefault((domain, op), []).append(conv)
    return [
        {
            "op": op,
            "domain": domain or "ai.onnx",
            "versions": ", ".join(str(c.since) for c in convs),
            "restriction": convs[-1].restriction,
        }
        for (domain, op), convs in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1].lower()))
    ]


# ---------------------------------------------------------------------------------------------
# Binding a node's inputs and attributes to a converter's keyword arguments
# ---------------------------------------------------------------------------------------------


def tensor_from_proto(proto: onnx.TensorProto):
    """An ONNX tensor (initializer, attribute) as a torch tensor; bfloat16 and float8 included, which numpy lacks."""
    import torch

    array = numpy_helper.to_array(proto)
    if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: same bits as torch's
        return torch.from_numpy(array.view("uint16").copy()).view(torch.bfloat16)
    if array.dtype.name == "float8_e4m3fn":  # ml_dtypes' float8_e4m3fn: same bits as torch's
        return torch.from_numpy(array.view("uint8").copy()).view(torch.float8_e4m3fn)
    return torch.from_numpy(array.copy())


def attribute_value(attr: onnx.AttributeProto):
    """An ONNX attribute as a Python value: ints/floats/strs, tuples of them, torch tensors for tensors."""
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, onnx.TensorProto):
        return tensor_from_proto(value)
    if isinstance(value, list):
        return tuple(v.decode("utf-8") if isinstance(v, bytes) else v for v in value)
    return value


def bind_attributes(schema, node: onnx.NodeProto) -> dict[str, Any]:
    """Every attribute of the schema by name: the node's value, else the schema default, else None."""
    given = {a.name: a for a in node.attribute}
    unknown = sorted(set(given) - set(schema.attributes))
    if unknown:
        raise Unsupported(f"attribute(s) {unknown} are not in the {schema.name}-{schema.since_version} schema")
    out = {}
    for name, spec in schema.attributes.items():
        if name in given:
            out[name] = attribute_value(given[name])
        elif spec.default_value.type != onnx.AttributeProto.UNDEFINED:
            out[name] = attribute_value(spec.default_value)
        else:
            out[name] = None
    return out


def bind_inputs(schema, values: list, params: tuple[str, ...] = ()) -> dict[str, Any]:
    """The node's inputs by the converter's parameter names (`params`, by position; the schema's names where it
    gives none); `values` holds one entry per node input (None where it is "")."""
    out: dict[str, Any] = {}
    formal = list(schema.inputs)
    names = list(params) if len(params) == len(formal) else [p.name for p in formal]
    for i, (param, name) in enumerate(zip(formal, names)):
        if param.option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
            out[name] = list(values[i:])
            return out
        out[name] = values[i] if i < len(values) else None
    if len(values) > len(formal):
        raise Unsupported(f"{len(values)} inputs, the {schema.name}-{schema.since_version} schema has {len(formal)}")
    return out


def call_kwargs(schema, node: onnx.NodeProto, values: list, converter: OnnxConverter | None = None) -> dict[str, Any]:
    """Keyword arguments of a converter (or check) for `node`, whose input operands are `values`."""
    if schema is None:  # a custom op: inputs by the names the converter declared, attributes as given
        names = (converter.input_names if converter is not None else None) or ()
        if len(values) > len(names):
            raise Unsupported(f"{len(values)} inputs, the converter names {len(names)}: {names}")
        kwargs = dict(zip(names, values))
        attrs = {a.name: attribute_value(a) for a in node.attribute}
    else:
        kwargs = bind_inputs(schema, values, converter.params if converter is not None else ())
        attrs = bind_attributes(schema, node)
    clash = set(kwargs) & set(attrs)
    if clash:  # never happens in the standard schemas; a custom schema could do it
        raise Unsupported(f"input and attribute names clash: {sorted(clash)}")
    kwargs.update(attrs)
    return kwargs
