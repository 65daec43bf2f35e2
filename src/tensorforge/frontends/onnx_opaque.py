"""Opaque ONNX ops: an ONNX node the IR has no mapping for, kept whole and run through onnxruntime.

The ONNX frontend owns them: importing this module registers the `onnx.` namespace of opaque op names with the IR
(`ir.registry.register_opaque_namespace`), so the IR itself imports neither onnx nor onnxruntime. `tensorforge`
imports it with its frontends (onnx and onnxruntime are imported only when such a node is read or run), so a saved
graph holding such nodes loads wherever `tensorforge` is imported.

A node named `onnx.Hardmax` (default domain) or `onnx.com.microsoft.Gelu` (another domain) runs its
ONNX node alone: a one-node model is built from the recorded node, its opset imports and the types of
the tensors it receives, and run by an onnxruntime `InferenceSession` on CPU (tensors move to the CPU
and back). Sessions are cached per node and input signature, so a node builds its session once.

Attributes (all JSON-able, so graphs with such nodes save and load like any other):
- `node`: the ONNX `NodeProto`, serialized and base64-encoded (protobuf, not pickle);
- `opset_imports`: `((domain, version), ...)` of the source model; `ir_version`: its IR version;
- `input_names`: the ONNX name of each IR input (the node's present inputs, and any outer-scope value a
  control-flow body refers to, which the one-node model then offers as a graph input);
- `output_names`: the ONNX names of the node's present outputs, one per IR output;
- `output_types`: the IR types shape inference gave them (nothing else can infer them);
- `reason`: why the node could not be mapped, for reports.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import re
import sys
import threading

import numpy as np
import torch

from ..ir.ops.opaque import decode_output_type
from ..ir.registry import OpDef, UnknownOpError, register_opaque_namespace
from ..ir.types import dtype_name
from .onnx_dtypes import ONNX_ELEMENT_TYPES


def encode_node(node) -> str:
    return base64.b64encode(node.SerializeToString()).decode("ascii")


def decode_node(text: str):
    import onnx

    node = onnx.NodeProto()
    node.ParseFromString(base64.b64decode(text))
    return node


def one_node_model(node, opset_imports, ir_version: int, input_names, input_specs, output_names, output_dtypes):
    """A model holding `node` alone; inputs typed by (ir dtype, rank) with free dims, outputs by dtype (or None)."""
    import onnx
    from onnx import helper

    inputs = [
        helper.make_tensor_value_info(name, ONNX_ELEMENT_TYPES[dtype], [f"{name}_d{i}" for i in range(rank)])
        for name, (dtype, rank) in zip(input_names, input_specs)
    ]
    # an output of unknown dtype (a custom op shape inference knows nothing about) is left for onnxruntime to type
    outputs = [
        helper.make_tensor_value_info(name, ONNX_ELEMENT_TYPES[dtype], None)
        if dtype
        else onnx.ValueInfoProto(name=name)
        for name, dtype in zip(output_names, output_dtypes)
    ]
    graph = helper.make_graph([node], "tensorforge_opaque_node", inputs, outputs)
    opsets = [helper.make_opsetid(domain, version) for domain, version in opset_imports]
    # the oldest IR version these opsets allow: onnxruntime may not read the newest one yet
    ir_version = min(ir_version, max(helper.find_min_ir_version_for(opsets, ignore_unknown=True), 7))
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version, producer_name="tensorforge")


_STDOUT_LOCK = threading.Lock()


@contextlib.contextmanager
def _stdout_to_stderr():
    """File descriptor 1 points at stderr inside: what native code prints there cannot reach a caller's stdout
    (`tensorforge run --json` writes its result there). One thread at a time: the descriptor is the process's."""
    with _STDOUT_LOCK:
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            os.dup2(2, 1)
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def onnxruntime_session(model, providers=("CPUExecutionProvider",), severity: int = 4):
    """An onnxruntime InferenceSession that writes nothing to stdout (every session the project creates is one).

    `severity`: its log (to stderr) keeps messages from this level on (4: fatal only; failures come back as
    exceptions anyway). onnxruntime announces a provider fallback with print() ("EP Error ... Falling back"), on
    stdout: a session of the CPU provider alone has none, and while a session is created stdout (descriptor and
    Python object) leads to stderr, where the banner of a fallback from another provider then goes. A run that
    fails raises (no fallback, no banner)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = severity
    fallback = int(len(providers) > 1)
    with _stdout_to_stderr(), contextlib.redirect_stdout(sys.stderr):
        session = ort.InferenceSession(model, options, providers=list(providers), enable_fallback=fallback)
    session.disable_fallback()
    return session


@functools.lru_cache(maxsize=512)
def _session(
    node_text: str,
    opset_imports: tuple,
    ir_version: int,
    input_names: tuple,
    input_specs: tuple,
    output_names: tuple,
    output_dtypes: tuple,
):
    model = one_node_model(
        decode_node(node_text), opset_imports, ir_version, input_names, input_specs, output_names, output_dtypes
    )
    return onnxruntime_session(model.SerializeToString())


def onnx_node_session(
    node: str, *, opset_imports, ir_version: int, input_names, input_specs, output_names, output_dtypes
):
    """The cached session that runs an encoded node on inputs of `input_specs` ((dtype, rank) each): an importer
    creates it to learn, before the node is kept, that onnxruntime accepts it."""
    return _session(
        node,
        tuple(tuple(x) for x in opset_imports),
        int(ir_version),
        tuple(input_names),
        tuple(tuple(x) for x in input_specs),
        tuple(output_names),
        tuple(output_dtypes),
    )


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        raise TypeError("onnxruntime's Python API cannot take bfloat16 tensors (numpy has no bfloat16)")
    return t.detach().cpu().contiguous().numpy()


def run_onnx_node(
    tensors, *, node: str, opset_imports, ir_version: int, input_names, output_names, output_dtypes, device=None
) -> tuple[torch.Tensor, ...]:
    """Run one encoded ONNX node through onnxruntime; results come back on `device` (default: the inputs')."""
    specs = tuple((dtype_name(t.dtype), t.dim()) for t in tensors)
    session = _session(
        node,
        tuple(tuple(x) for x in opset_imports),
        int(ir_version),
        tuple(input_names),
        specs,
        tuple(output_names),
        tuple(output_dtypes),
    )
    feeds = {name: _to_numpy(t) for name, t in zip(input_names, tensors)}
    results = session.run(list(output_names), feeds)
    target = tensors[0].device if tensors else (device if device is not None else torch.device("cpu"))
    if str(target) == "meta":  # shape inference never runs this op (its types are recorded), but be explicit
        raise RuntimeError("opaque ONNX nodes cannot run on meta tensors")
    # np.asarray(order="C"), not np.ascontiguousarray: that one makes 0-d results 1-d (a scalar y_scale of
    # DynamicQuantizeLinear would come back as [1])
    return tuple(torch.from_numpy(np.asarray(r, order="C")).to(target) for r in results)


def opaque_onnx_name(op_type: str, domain: str) -> str:
    """Hardmax -> onnx.Hardmax; (com.microsoft, Gelu) -> onnx.com.microsoft.Gelu."""
    return f"onnx.{op_type}" if domain in ("", "ai.onnx") else f"onnx.{domain}.{op_type}"


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DOMAINS_ONNX_DEFINES = ("", "ai.onnx.ml")  # the domains whose op types onnx.defs knows


def _split_onnx_name(name: str) -> tuple[str, str]:
    """onnx.Hardmax -> ("", "Hardmax"); onnx.com.microsoft.Gelu -> ("com.microsoft", "Gelu"), or UnknownOpError.

    The name comes from a file: it must be an op type the ONNX opset defines (or, in another domain, an identifier
    that onnxruntime resolves itself: such a node only ever runs inside an onnxruntime session)."""
    parts = name.split(".")[1:]
    if not parts or not all(_IDENTIFIER.match(p) and not p.startswith("__") for p in parts):
        raise UnknownOpError(f"opaque ONNX op names look like onnx.<OpType> or onnx.<domain>.<OpType>, got {name!r}")
    domain, op_type = ".".join(parts[:-1]), parts[-1]
    if domain in _DOMAINS_ONNX_DEFINES or domain == "ai.onnx":
        import onnx.defs

        if not onnx.defs.has(op_type, "" if domain == "ai.onnx" else domain):
            raise UnknownOpError(f"{name!r}: ONNX defines no operator {op_type!r} in domain {domain or 'ai.onnx'!r}")
    return domain, op_type


@functools.lru_cache(maxsize=1024)  # bounded: names come from files
def _resolve_onnx(name: str) -> OpDef:
    domain, op_type = _split_onnx_name(name)

    def compute(
        *tensors, node, opset_imports, ir_version, input_names, output_names, output_types, reason="", device=None
    ):
        proto = decode_node(node)
        if proto.op_type != op_type or (proto.domain or "") not in ((domain,) if domain else ("", "ai.onnx")):
            raise ValueError(
                f"opaque node {name}: its recorded ONNX node is a {proto.domain or 'ai.onnx'}."
                f"{proto.op_type} (the graph is inconsistent)"
            )
        dtypes = [decode_output_type(spec).dtype for spec in output_types]
        outs = run_onnx_node(
            tensors,
            node=node,
            opset_imports=opset_imports,
            ir_version=ir_version,
            input_names=input_names,
            output_names=output_names,
            output_dtypes=dtypes,
            device=device,
        )
        return outs if len(outs) != 1 else outs[0]

    compute.__doc__ = f"{name}: run through onnxruntime"

    def infer(inputs, attrs):
        return [decode_output_type(spec) for spec in attrs["output_types"]]

    return OpDef(name=name, compute=compute, num_inputs=(0, None), infer=infer, family="opaque", opaque=True)


register_opaque_namespace("onnx.", _resolve_onnx)
