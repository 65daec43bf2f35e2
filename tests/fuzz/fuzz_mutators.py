"""Structure-aware mutations of the JSON documents inside `.tforge` files, their plans and plan-cache entries.

A module's document holds its graph, partition config, options and plan list; a plan's its graph, tactics,
arena, fingerprint, config and digest. The edits (`GRAPH_MUTATIONS`, `MODULE_MUTATIONS`, `PLAN_MUTATIONS`,
`m_hostile`): fields deleted, duplicated, retyped; op names changed to other IR ops, to hostile names, to names
with `..`; huge, negative and NaN numbers; deep nesting; swapped tensor and value names; arena_bytes 1<<40; a
cache directory; output names like '../../x'. Hostile names carry a payload aimed at the canaries. Container,
header, tensor-byte and raw-byte edits, and the file-level drivers, are in fuzz_files.py.

A case is either *corrupted* (digests left as they are: a mutated file that loads and runs must say so with
a warning) or *crafted* (the digests tensorforge checks are recomputed, as an attacker would: it may load as
a different valid model, but must still never crash, hang or run code); see fuzz_files.resigned.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tensorforge.engine.fingerprint import PLAN_FORMAT_VERSION

# ---------------------------------------------------------------------------------------------
# vocabulary
# ---------------------------------------------------------------------------------------------

IR_OPS = [
    "nn.relu",
    "nn.silu",
    "nn.gelu",
    "sigmoid",
    "tanh",
    "add",
    "subtract",
    "multiply",
    "nn.conv2d",
    "nn.dense",
    "nn.bias_add",
    "nn.batch_norm",
    "nn.layer_norm",
    "nn.softmax",
    "matmul",
    "reshape",
    "transpose",
    "mean",
    "take",
    "cast",
    "where",
    "strided_slice",
    "engine.dense",
    "engine.conv",
    "engine.pointwise",
    "engine.layer_norm",
    "engine.strided_view",
    "subgraph",
    "nn.max_pool2d",
    "concatenate",
    "split",
    "full",
    "arange",
    "nn.scaled_dot_product_attention",
    "copy",
]
SIMILAR_ACTIVATIONS = {
    "nn.relu": "nn.silu",
    "nn.silu": "nn.relu",
    "nn.gelu": "nn.relu",
    "sigmoid": "tanh",
    "add": "subtract",
    "multiply": "add",
    "nn.dense": "matmul",
}
OPAQUE_OPS = [
    "torch.aten.cumsum.default",
    "torch.aten.cumprod.default",
    "torch.aten.add.Tensor",
    "torch.aten.empty.memory_format",
    "torch.aten.cumsum",
    "torch.aten.cumsum.default.extra",
    "torch.mylib.myop.default",
    "onnx.Hardmax",
    "onnx.CumSum",
    "onnx.",
    "onnx.com.microsoft.Gelu",
]
# names a hostile file would use to reach Python objects; `payload` says which canary a call would hit
HOSTILE_OPS = [
    ("torch.__class__.__init__.__getattribute__", "any"),
    ("torch.aten.__dict__.x", "any"),
    ("torch.ops.aten.__dict__", "any"),
    ("torch.os.system.default", "system"),
    ("torch.load_library.__self__.load_library", "library"),
    ("torch.import_module.__self__.import_module", "module"),
    ("torch._dir.__self__.import_module", "module"),
    ("torch.aten.cumsum.__call__", "any"),
    ("torch.aten.cumsum.__class__", "any"),
    ("torch.builtins.exec.default", "exec"),
    ("torch.__builtins__.eval.default", "exec"),
    ("torch.._ops.import_module", "module"),
    ("torch.aten..default", "any"),
    ("torch.../../x.default", "any"),
    ("torch.aten.cumsum.default.__globals__", "any"),
    ("torch", "any"),
    ("torch.", "any"),
    ("os.system", "system"),
    ("builtins.eval", "exec"),
    ("__import__", "module"),
    ("subprocess.Popen", "system"),
    ("importlib.import_module", "module"),
    ("plugin.os.system", "system"),
    ("../../x", "any"),
    ("", "any"),
    ("nn.relu\u0000", "any"),
]
DTYPES = [
    "float32",
    "float16",
    "bfloat16",
    "float64",
    "int64",
    "int32",
    "int8",
    "uint8",
    "bool",
    "complex64",
    "float8_e4m3fn",
    "string",
    "",
    "torch.float32",
    "object",
]
ST_DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "C64", "U64", "X", ""]
NASTY_STRINGS = [
    "",
    "../../x",
    "..",
    "/etc/passwd",
    "__class__",
    "__init__",
    "%s%s%n",
    "a" * 5000,
    "\u202e\u0000",
    "main",
    "tensorforge_0",
    "batch",
    "__plans__/x",
    "nn.relu",
    '{"__sym__": 1}',
]
NASTY_INTS = [
    0,
    -1,
    1,
    2,
    3,
    255,
    256,
    2**31 - 1,
    2**31,
    2**32,
    2**40,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63),
    10**30,
]
NASTY_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 1e-300, 1e300, 0.5, 2.5]
DEEP_DEPTHS = [40, 200, 600, 1500, 100000]


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


class ContainerError(Exception):
    """A mutation that does not apply to these bytes (an earlier one broke what it needs): skip it."""


# ---------------------------------------------------------------------------------------------
# the mutation context
# ---------------------------------------------------------------------------------------------


@dataclass
class Context:
    rng: random.Random
    canaries: dict
    crafted: bool
    log: list[str] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict)  # placeholder string -> raw JSON text
    tensor_names: list[str] = field(default_factory=list)  # the container's tensors, for mutations that point at one

    def raw_json(self, text: str) -> str:
        """A placeholder that `dumps` replaces with `text` verbatim (deep nesting, invalid or huge JSON)."""
        key = f"__FUZZ_RAW_{len(self.raw)}_{self.rng.getrandbits(32):08x}__"
        self.raw[key] = text
        return key

    def dumps(self, doc) -> str:
        text = json.dumps(doc)
        for key, raw in self.raw.items():
            text = text.replace(json.dumps(key), raw)
        return text

    def payload(self, kind: str) -> list:
        """Arguments a hostile op name would be called with, aimed at a canary."""
        c = self.canaries
        library = c.get("shared_library") or f"{c['dir']}/no-compiler.so"
        choices = {
            "library": [library],
            "module": [c["module"]],
            "system": [f"touch {c['dir']}/system-ran"],
            "exec": [f"open({c['dir'] + '/exec-ran'!r}, 'w')"],
        }
        if kind == "any":
            kind = self.rng.choice(sorted(choices))
        return choices[kind]


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def _random_value(ctx: Context, like=None):
    """A value of another type, an edge number, a nasty string, or deep nesting."""
    rng = ctx.rng
    r = rng.random()
    if r < 0.2:
        return rng.choice(NASTY_INTS)
    if r < 0.3:
        return rng.choice(NASTY_FLOATS)
    if r < 0.45:
        return rng.choice(NASTY_STRINGS)
    if r < 0.55:
        return rng.choice(
            [
                None,
                True,
                False,
                [],
                {},
                [None],
                {"__sym__": ["batch", 0]},
                {"__sym__": ["..", 1]},
                {"input": 99},
                {"list": [{"input": -1}]},
                {"dtype": "object"},
            ]
        )
    if r < 0.65:
        return ctx.raw_json(_nested(rng.choice(DEEP_DEPTHS)))
    if r < 0.7:
        return ctx.raw_json(rng.choice(["1" + "0" * 5000, "1e999", "-1e999", "NaN", "-Infinity", '{"a":1,"a":2}']))
    if isinstance(like, bool):
        return not like
    if isinstance(like, int):
        return rng.choice([like + 1, like - 1, -like, like * 1000, str(like), float(like)])
    if isinstance(like, float):
        return rng.choice([like * 2, -like, str(like), int(like)])
    if isinstance(like, str):
        return rng.choice([like + "x", like[:-1], like.upper(), "../" + like, like * 3, 1])
    if isinstance(like, list):
        return rng.choice([like[::-1], like + like[:1], like[1:], {"0": like}, [like]])
    if isinstance(like, dict):
        return rng.choice([list(like.values()), {**like, "__extra__": 1}, dict(list(like.items())[1:])])
    return rng.choice(NASTY_INTS)


def _paths(doc, prefix=()) -> list[tuple]:
    """Every path (tuple of keys) into a JSON document."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def _get(doc, path):
    for k in path:
        doc = doc[k]
    return doc


def generic_edit(ctx: Context, doc) -> str | None:
    """Delete, duplicate or retype the value at a random path."""
    paths = [p for p in _paths(doc) if p]
    if not paths:
        return None
    path = ctx.rng.choice(paths)
    parent, key = _get(doc, path[:-1]), path[-1]
    action = ctx.rng.choice(["delete", "retype", "retype", "duplicate"])
    if action == "delete":
        del parent[key]
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif action == "duplicate":
        parent[f"{key}_dup"] = copy.deepcopy(parent[key])
    else:
        parent[key] = _random_value(ctx, parent[key])
    return f"{action} {'/'.join(map(str, path))}"


# ---------------------------------------------------------------------------------------------
# structure-aware mutations of a graph document (ir.graph_to_json)
# ---------------------------------------------------------------------------------------------


def graph_docs(doc) -> list[dict]:
    """A graph document and every subgraph in it, recursively."""
    if not isinstance(doc, dict):
        return []
    out = [doc]
    subs = doc.get("subgraphs")
    if isinstance(subs, dict):
        for sub in subs.values():
            out += graph_docs(sub)
    return out


def _nodes(graph_doc) -> list[dict]:
    return [n for n in graph_doc.get("nodes", []) if isinstance(n, dict)] if isinstance(graph_doc, dict) else []


def _pick_node(ctx: Context, doc, where=None):
    candidates = [(g, n) for g in graph_docs(doc) for n in _nodes(g) if where is None or where(g, n)]
    return ctx.rng.choice(candidates) if candidates else (None, None)


def _value_names(graph_doc) -> list[str]:
    names = [i.get("name") for i in graph_doc.get("inputs", []) if isinstance(i, dict)]
    names += list(graph_doc.get("constants", []))
    for n in _nodes(graph_doc):
        names += [o.get("name") for o in n.get("outputs", []) if isinstance(o, dict)]
    return [n for n in names if isinstance(n, str)]


def m_node_op(ctx: Context, doc) -> str | None:
    g, node = _pick_node(ctx, doc)
    if node is None:
        return None
    old = node.get("op")
    r = ctx.rng.random()
    if r < 0.35 and old in SIMILAR_ACTIVATIONS:
        new = SIMILAR_ACTIVATIONS[old]
    elif r < 0.6:
        new = ctx.rng.choice(IR_OPS)
    elif r < 0.8:
        new = ctx.rng.choice(OPAQUE_OPS)
    else:
        new = ctx.rng.choice(HOSTILE_OPS)[0]
    node["op"] = new
    return f"node {node.get('name')!r} op {old!r} -> {new!r}"


def m_activation(ctx: Context, doc) -> str | None:
    """relu -> silu where it hides best: a fused layer's activation attribute, or an activation node."""
    g, node = _pick_node(
        ctx,
        doc,
        lambda g, n: (
            isinstance(n.get("attrs"), dict) and "activation" in n["attrs"] or n.get("op") in SIMILAR_ACTIVATIONS
        ),
    )
    if node is None:
        return None
    if isinstance(node.get("attrs"), dict) and "activation" in node["attrs"]:
        old = node["attrs"]["activation"]
        node["attrs"]["activation"] = ctx.rng.choice(
            ["nn.silu", "nn.gelu", "sigmoid", None, "nn.relu", "os.system", "torch.aten.cumsum.default"]
        )
        return f"node {node.get('name')!r} activation {old!r} -> {node['attrs']['activation']!r}"
    old = node["op"]
    node["op"] = SIMILAR_ACTIVATIONS[old]
    return f"node {node.get('name')!r} op {old!r} -> {node['op']!r}"


def m_hostile_op(ctx: Context, doc) -> str | None:
    """A hostile op name with arguments aimed at a canary; output_types kept so the node still types."""
    g, node = _pick_node(ctx, doc)
    if node is None:
        return None
    name, kind = ctx.rng.choice(HOSTILE_OPS)
    attrs = node.get("attrs") if isinstance(node.get("attrs"), dict) else {}
    out_types = attrs.get("output_types")
    if out_types is None:
        out_types = [
            [
                o["type"]["dtype"],
                [[d["__sym__"][0], d["__sym__"][1]] if isinstance(d, dict) else d for d in o["type"]["shape"]],
            ]
            for o in node.get("outputs", [])
            if isinstance(o, dict) and isinstance(o.get("type"), dict)
        ]
    node["op"] = name
    node["attrs"] = {"args": ctx.payload(kind), "kwargs": {}, "output_types": out_types}
    return f"node {node.get('name')!r} op -> hostile {name!r} with a {kind} payload"


def m_node_inputs(ctx: Context, doc) -> str | None:
    g, node = _pick_node(ctx, doc, lambda g, n: isinstance(n.get("inputs"), list))
    if node is None:
        return None
    inputs, names = node["inputs"], _value_names(g)
    action = ctx.rng.choice(["swap", "undefined", "later", "duplicate", "drop", "other", "self"])
    if action == "swap" and len(inputs) >= 2:
        i, j = ctx.rng.sample(range(len(inputs)), 2)
        inputs[i], inputs[j] = inputs[j], inputs[i]
    elif action == "undefined":
        inputs.append("no_such_value") if not inputs else inputs.__setitem__(ctx.rng.randrange(len(inputs)), "../../x")
    elif action == "later":  # a value defined after this node (or the node's own output): a cycle
        later = [
            o.get("name")
            for n in _nodes(g)[_nodes(g).index(node) :]
            for o in n.get("outputs", [])
            if isinstance(o, dict)
        ]
        if not later or not inputs:
            return None
        inputs[ctx.rng.randrange(len(inputs))] = ctx.rng.choice(later)
    elif action == "duplicate" and inputs:
        inputs.append(inputs[-1])
    elif action == "drop" and inputs:
        inputs.pop(ctx.rng.randrange(len(inputs)))
    elif action in ("other", "self") and inputs and names:
        inputs[ctx.rng.randrange(len(inputs))] = ctx.rng.choice(names)
    else:
        return None
    return f"node {node.get('name')!r} inputs: {action}"


def _retype_type(ctx: Context, t: dict) -> str:
    rng = ctx.rng
    if not isinstance(t, dict):
        return "nothing"
    action = rng.choice(["dtype", "dim", "rank", "sym", "shape"])
    shape = t.get("shape") if isinstance(t.get("shape"), list) else []
    if action == "dtype":
        t["dtype"] = rng.choice(DTYPES)
    elif action == "dim" and shape:
        shape[rng.randrange(len(shape))] = rng.choice(NASTY_INTS + [1.5, "8", None, -3])
    elif action == "rank":
        shape.append(1) if rng.random() < 0.5 or not shape else shape.pop()
    elif action == "sym" and shape:
        shape[rng.randrange(len(shape))] = {
            "__sym__": [
                rng.choice(["batch", "seq", "..", "", "__class__", 7]),
                rng.choice([1, 0, -1, 2, 2**40, 1.5, "1"]),
            ]
        }
    else:
        t["shape"] = _random_value(ctx, shape)
    return action


def m_node_outputs(ctx: Context, doc) -> str | None:
    g, node = _pick_node(ctx, doc, lambda g, n: isinstance(n.get("outputs"), list) and n["outputs"])
    if node is None:
        return None
    outs = node["outputs"]
    action = ctx.rng.choice(["type", "type", "rename-dup", "drop", "add"])
    if action == "type":
        return f"node {node.get('name')!r} output type: {_retype_type(ctx, outs[0].get('type'))}"
    if action == "rename-dup":
        names = _value_names(g)
        outs[0]["name"] = ctx.rng.choice(names) if names else "x"
    elif action == "drop":
        outs.pop()
    else:
        outs.append(copy.deepcopy(outs[-1]) | {"name": f"{outs[-1].get('name')}_extra"})
    return f"node {node.get('name')!r} outputs: {action}"


def m_node_attrs(ctx: Context, doc) -> str | None:
    g, node = _pick_node(ctx, doc, lambda g, n: isinstance(n.get("attrs"), dict))
    if node is None:
        return None
    attrs = node["attrs"]
    if not attrs or ctx.rng.random() < 0.15:
        attrs[ctx.rng.choice(["unknown_attr", "__class__", "callee", "args", "output_types"])] = _random_value(ctx)
        return f"node {node.get('name')!r}: attribute added"
    key = ctx.rng.choice(sorted(attrs))
    value = attrs[key]
    r = ctx.rng.random()
    if r < 0.15:
        del attrs[key]
        return f"node {node.get('name')!r}: attribute {key!r} deleted"
    if key == "callee" and r < 0.6:
        attrs[key] = ctx.rng.choice(["main", "../../x", "no_such_region", ""] + list(doc.get("subgraphs", {}) or []))
    elif key == "output_types" and isinstance(value, list) and value and r < 0.6:
        spec = value[0]
        if isinstance(spec, list) and len(spec) == 2:
            spec[0] = ctx.rng.choice(DTYPES) if ctx.rng.random() < 0.4 else spec[0]
            spec[1] = _random_value(ctx, spec[1]) if ctx.rng.random() < 0.6 else spec[1]
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and r < 0.6:
        attrs[key] = ctx.rng.choice(NASTY_INTS + NASTY_FLOATS + [value + 1, value - 1, -value])
    elif isinstance(value, list) and value and r < 0.6:
        i = ctx.rng.randrange(len(value))
        value[i] = _random_value(ctx, value[i])
    else:
        attrs[key] = _random_value(ctx, value)
    return f"node {node.get('name')!r}: attribute {key!r} changed"


def m_nodes_list(ctx: Context, doc) -> str | None:
    graphs = [g for g in graph_docs(doc) if isinstance(g.get("nodes"), list) and g["nodes"]]
    if not graphs:
        return None
    g = ctx.rng.choice(graphs)
    nodes = g["nodes"]
    action = ctx.rng.choice(["delete", "duplicate", "swap", "reverse"])
    if action == "delete":
        nodes.pop(ctx.rng.randrange(len(nodes)))
    elif action == "duplicate":
        i = ctx.rng.randrange(len(nodes))
        nodes.insert(i, copy.deepcopy(nodes[i]))
    elif action == "swap" and len(nodes) >= 2:
        i, j = ctx.rng.sample(range(len(nodes)), 2)
        nodes[i], nodes[j] = nodes[j], nodes[i]
    else:
        nodes.reverse()
    return f"graph {g.get('name')!r} nodes: {action}"


def m_graph_io(ctx: Context, doc) -> str | None:
    g = ctx.rng.choice(graph_docs(doc)) if graph_docs(doc) else None
    if g is None:
        return None
    action = ctx.rng.choice(
        [
            "input-type",
            "input-dup",
            "input-drop",
            "output-undefined",
            "output-dup",
            "output-empty",
            "constant-missing",
            "constant-drop",
            "constant-dup",
            "rename-output-path",
        ]
    )
    inputs = g.get("inputs") if isinstance(g.get("inputs"), list) else []
    outputs = g.get("outputs") if isinstance(g.get("outputs"), list) else []
    constants = g.get("constants") if isinstance(g.get("constants"), list) else []
    if action == "input-type" and inputs and isinstance(inputs[0], dict):
        _retype_type(ctx, inputs[ctx.rng.randrange(len(inputs))].get("type"))
    elif action == "input-dup" and inputs:
        inputs.append(copy.deepcopy(inputs[0]))
    elif action == "input-drop" and inputs:
        inputs.pop()
    elif action == "output-undefined":
        outputs.append("../../x")
    elif action == "output-dup" and outputs:
        outputs.append(outputs[0])
    elif action == "output-empty":
        g["outputs"] = []
    elif action == "constant-missing":
        constants.append("no_such_tensor")
    elif action == "constant-drop" and constants:
        constants.pop(ctx.rng.randrange(len(constants)))
    elif action == "constant-dup" and constants:
        constants.append(constants[0])
    elif action == "rename-output-path":
        return m_rename_value(ctx, doc)
    else:
        return None
    return f"graph {g.get('name')!r}: {action}"


def m_rename_value(ctx: Context, doc) -> str | None:
    """Rename a node's output to a path-like name everywhere it is used: the graph stays well formed."""
    g, node = _pick_node(
        ctx, doc, lambda g, n: isinstance(n.get("outputs"), list) and n["outputs"] and isinstance(n["outputs"][0], dict)
    )
    if node is None:
        return None
    old = node["outputs"][0].get("name")
    new = ctx.rng.choice(["../../x", "/tmp/x", "..", "a/../../b", "__plans__/x", "C:\\x", "x" * 300])
    node["outputs"][0]["name"] = new
    for n in _nodes(g):
        if isinstance(n.get("inputs"), list):
            n["inputs"] = [new if i == old else i for i in n["inputs"]]
    if isinstance(g.get("outputs"), list):
        g["outputs"] = [new if o == old else o for o in g["outputs"]]
    return f"value {old!r} renamed {new!r}"


def m_subgraphs(ctx: Context, doc) -> str | None:
    subs = doc.get("subgraphs") if isinstance(doc, dict) else None
    if not isinstance(subs, dict) or not subs:
        return None
    names = sorted(subs)
    action = ctx.rng.choice(["delete", "swap", "self-call", "deep", "rename"])
    if action == "delete":
        del subs[ctx.rng.choice(names)]
    elif action == "swap" and len(names) >= 2:
        a, b = ctx.rng.sample(names, 2)
        subs[a], subs[b] = subs[b], subs[a]
    elif action == "self-call":  # a region whose first node calls the region itself
        name = ctx.rng.choice(names)
        region = subs[name]
        if not _nodes(region):
            return None
        node = _nodes(region)[0]
        node["op"], node["attrs"] = (
            "subgraph",
            {"callee": name, "target": "tensorforge", "output_types": node.get("attrs", {}).get("output_types", [])},
        )
        region.setdefault("subgraphs", {})[name] = copy.deepcopy(region)
    elif action == "deep":  # subgraphs nested `depth` levels deep
        depth = ctx.rng.choice([50, 300, 1200])
        empty = (
            '{"format": "tensorforge.ir", "version": 1, "name": "d", "inputs": [], "constants": [], "nodes": [], '
            '"outputs": [], "subgraphs": '
        )
        subs["deep"] = ctx.raw_json((empty + '{"d": ') * depth + empty + "{}}" + "}}" * depth)
    else:
        name = ctx.rng.choice(names)
        subs[ctx.rng.choice(["../../x", "main", "", name + "_"])] = subs.pop(name)
    return f"subgraphs: {action}"


def m_format_fields(ctx: Context, doc) -> str | None:
    g = ctx.rng.choice(graph_docs(doc)) if graph_docs(doc) else None
    if g is None:
        return None
    key = ctx.rng.choice(["format", "version", "name", "inputs", "nodes", "outputs", "constants", "subgraphs"])
    g[key] = _random_value(ctx, g.get(key))
    return f"graph field {key!r} retyped"


GRAPH_MUTATIONS: list[tuple[float, Callable]] = [
    (3, m_node_op),
    (3, m_activation),
    (2, m_hostile_op),
    (3, m_node_inputs),
    (3, m_node_outputs),
    (4, m_node_attrs),
    (2, m_nodes_list),
    (3, m_graph_io),
    (1, m_rename_value),
    (2, m_subgraphs),
    (1, m_format_fields),
    (3, generic_edit),
]


# ---------------------------------------------------------------------------------------------
# module and plan documents
# ---------------------------------------------------------------------------------------------


def m_options(ctx: Context, meta) -> str | None:
    options = meta.get("options")
    if not isinstance(options, dict):
        return None
    key = ctx.rng.choice(
        [
            "cache_dir",
            "cache_dir",
            "cache_dir",
            "max_workspace_size",
            "multi_engine",
            "max_streams",
            "fp16",
            "optimization_level",
            "cuda_graph",
            "strict_types",
            "timing_cache",
            "timing_cache",
            "__class__",
        ]
    )
    if key == "cache_dir":
        options[key] = ctx.rng.choice([f"{ctx.canaries['dir']}/cache-from-file", "../../x", "~/x", "/proc/self/x"])
        if ctx.rng.random() < 0.5:
            meta["plans"] = []  # nothing built: the first run builds and writes to the cache directory
    elif key == "timing_cache":  # a machine resource: the file may name one, and loading must ignore it
        options[key] = ctx.rng.choice([f"{ctx.canaries['dir']}/timing-from-file", "../../x", "/proc/self/mem"])
        if ctx.rng.random() < 0.5:
            meta["plans"] = []  # nothing built: the first run builds, reading and writing the timing cache
    else:
        options[key] = _random_value(ctx, options.get(key))
    return f"options.{key} = {options[key]!r}"


def m_partition_config(ctx: Context, meta) -> str | None:
    text = meta.get("partition_config")
    if not isinstance(text, str):
        meta["partition_config"] = _random_value(ctx, text)
        return "partition_config retyped"
    r = ctx.rng.random()
    if r < 0.2:
        meta["partition_config"] = ctx.rng.choice(["{", "[]", "null", "1", "", json.loads(text)])
        return "partition_config replaced"
    try:
        config = json.loads(text)
    except ValueError:
        return None
    desc = generic_edit(ctx, config)
    meta["partition_config"] = ctx.dumps(config)
    return f"partition_config: {desc}"


def m_plans_list(ctx: Context, meta) -> str | None:
    plans = meta.get("plans")
    if not isinstance(plans, list):
        return None
    action = ctx.rng.choice(["swap-regions", "region", "max_batch", "tensor", "duplicate", "drop", "weight-as-plan"])
    if not plans:
        plans.append({"region": "tensorforge_0", "max_batch": 2, "tensor": "__plans__/tensorforge_0/2"})
        return "plans: added an entry for a missing tensor"
    entry = ctx.rng.choice(plans)
    if not isinstance(entry, dict):
        return None
    if action == "swap-regions" and len(plans) >= 2:
        a, b = ctx.rng.sample(plans, 2)
        a["tensor"], b["tensor"] = b.get("tensor"), a.get("tensor")
    elif action == "region":
        entry["region"] = ctx.rng.choice(["../../x", "main", "no_such_region", 0, None])
    elif action == "max_batch":
        entry["max_batch"] = ctx.rng.choice([0, -1, 1, 3, 2**40, "2", 2.5, None, math.nan])
    elif action == "tensor":
        entry["tensor"] = ctx.rng.choice(["../../x", "no_such_tensor", "", None, 7])
    elif action == "duplicate":
        plans.append(copy.deepcopy(entry))
    elif action == "drop":
        plans.remove(entry)
    elif action == "weight-as-plan":
        weights = [n for n in ctx.tensor_names if not n.startswith("__plans__/")]
        if not weights:
            return None
        entry["tensor"] = ctx.rng.choice(weights)
    else:
        return None
    return f"plans: {action}"


def m_module_fields(ctx: Context, meta) -> str | None:
    key = ctx.rng.choice(
        ["format", "version", "graph", "options", "plans", "partition_config", "omitted_weights", "extra"]
    )
    meta[key] = _random_value(ctx, meta.get(key))
    return f"module field {key!r} retyped"


def m_omitted_weights(ctx: Context, meta) -> str | None:
    """The types recorded for region weights a file leaves out (its plans hold them): keys that name no region, a
    weight the file does hold, or a path; types that are symbolic, huge, negative or not types at all."""
    omitted = meta.get("omitted_weights")
    if not isinstance(omitted, dict):
        return None
    action = ctx.rng.choice(["key", "key", "type", "type", "drop", "add-held"])
    if action == "add-held":  # a weight the file holds, declared left out as well
        weights = [n for n in ctx.tensor_names if "/" in n and not n.startswith("__plans__/")]
        if not weights:
            return None
        name = ctx.rng.choice(weights)
        omitted[name] = {"dtype": "float32", "shape": [1]}
        return f"omitted_weights: {name!r} added, which the file holds"
    if not omitted:
        return None
    key = ctx.rng.choice(sorted(omitted))
    if action == "key":
        new_key = ctx.rng.choice(["../../x", "main/x", "no_such_region/w", key.split("/", 1)[0], "", "/" + key])
        omitted[new_key] = omitted.pop(key)
        return f"omitted_weights: {key!r} renamed {new_key!r}"
    if action == "type":
        omitted[key] = ctx.rng.choice(
            [
                {"dtype": "float32", "shape": [{"__sym__": ["batch", 1]}, 4]},
                {"dtype": "float32", "shape": [2**40, 2**40]},
                {"dtype": "float32", "shape": [-1]},
                {"dtype": "object", "shape": [1]},
                {"shape": [1]},
                {"dtype": "float32"},
                _random_value(ctx, omitted[key]),
            ]
        )
        return f"omitted_weights: {key!r} typed {omitted[key]!r}"
    del omitted[key]  # the region then has neither these weights nor their types
    return f"omitted_weights: {key!r} dropped"


def m_module_graph(ctx: Context, meta) -> str | None:
    graph = meta.get("graph")
    if not isinstance(graph, dict):
        return None
    return weighted_choice(ctx, GRAPH_MUTATIONS)(ctx, graph)


def m_hostile(ctx: Context, meta) -> str | None:
    """What an attacker would try first: a hostile op name with a payload, a cache directory of the file's
    choosing, path-like value names, a deeply nested attribute."""
    graph = meta.get("graph")
    action = ctx.rng.choice(["op", "op", "op", "cache_dir", "rename", "deep"])
    if action == "op":
        return m_hostile_op(ctx, graph)
    if action == "cache_dir":
        options = meta.setdefault("options", {})
        options["cache_dir"] = f"{ctx.canaries['dir']}/cache-from-file"
        meta["plans"] = []
        return "options.cache_dir set to the canary folder, plans removed"
    if action == "rename":
        return m_rename_value(ctx, graph)
    g, node = _pick_node(ctx, graph, lambda g, n: isinstance(n.get("attrs"), dict))
    if node is None:
        return None
    depth = ctx.rng.choice(DEEP_DEPTHS)
    node["attrs"][ctx.rng.choice(sorted(node["attrs"]) or ["x"])] = ctx.raw_json(_nested(depth))
    return f"node {node.get('name')!r}: an attribute nested {depth} deep"


MODULE_MUTATIONS: list[tuple[float, Callable]] = [
    (14, m_module_graph),
    (3, m_options),
    (2, m_partition_config),
    (3, m_plans_list),
    (1, m_module_fields),
    (2, m_omitted_weights),
    (1, generic_edit),
]


def m_plan_memory(ctx: Context, meta) -> str | None:
    memory = meta.get("memory")
    if not isinstance(memory, dict):
        return None
    slots = memory.get("slots") if isinstance(memory.get("slots"), dict) else {}
    action = ctx.rng.choice(["arena", "arena", "alignment", "overlap", "slot", "drop-slot", "extra-slot"])
    if action == "arena":
        memory["arena_bytes"] = ctx.rng.choice([1 << 40, 1 << 62, -1, 0, 2**64, "1", math.nan])
    elif action == "alignment":
        memory["alignment"] = ctx.rng.choice([0, -256, 1, 3, 2**40, None, 0.5])
    elif action == "overlap" and slots:  # every activation at offset 0: live values share memory
        for slot in slots.values():
            if isinstance(slot, dict):
                slot["offset"] = 0
            elif isinstance(slot, list) and slot:
                slot[0] = 0
    elif action == "slot" and slots:
        name = ctx.rng.choice(sorted(slots))
        slots[name] = _random_value(ctx, slots[name])
    elif action == "drop-slot" and slots:
        del slots[ctx.rng.choice(sorted(slots))]
    elif action == "extra-slot":
        slots["../../x"] = next(iter(slots.values())) if slots else [0, 256]
        memory["slots"] = slots
    else:
        return None
    return f"plan memory: {action}"


def m_plan_tactics(ctx: Context, meta) -> str | None:
    tactics = meta.get("tactics")
    if not isinstance(tactics, dict) or not tactics:
        return None
    layer = ctx.rng.choice(sorted(tactics))
    tactics[layer] = ctx.rng.choice(
        [
            "reference",
            "eager",
            "cudnn",
            "triton",
            "gemm_triton",
            "conv_triton",
            "cublaslt",
            "__init__",
            "../../x",
            "",
            None,
            1,
            "os.system",
        ]
    )
    if ctx.rng.random() < 0.2:
        del tactics[layer]
    return f"plan tactic of {layer!r} -> {tactics.get(layer)!r}"


def m_plan_fields(ctx: Context, meta) -> str | None:
    key = ctx.rng.choice(
        ["max_batch", "max_batch", "config", "fingerprint", "counters", "sha256", "cache_key", "version", "format"]
    )
    value = meta.get(key)
    if key == "max_batch":
        meta[key] = ctx.rng.choice([0, -1, 1, 3, 2**40, 2**63, "2", 2.5, None, math.nan, math.inf])
    elif key in ("config", "fingerprint", "counters") and isinstance(value, dict) and value and ctx.rng.random() < 0.8:
        sub = ctx.rng.choice(sorted(value))
        if key == "fingerprint" and ctx.rng.random() < 0.5:
            value[sub] = {
                "device_type": "cuda",
                "torch": "1.0.0",
                "plan_format": PLAN_FORMAT_VERSION - 1,  # the format before this one: refused, never read
                "capability": [9, 0],
                "device_name": "NVIDIA H100",
            }.get(sub, _random_value(ctx, value[sub]))
        elif key == "config" and sub in ("max_streams", "max_workspace_size") and ctx.rng.random() < 0.5:
            value[sub] = ctx.rng.choice([0, -1, 2**40, 1])
        else:
            value[sub] = _random_value(ctx, value[sub])
        key = f"{key}.{sub}"
    else:
        meta[key] = _random_value(ctx, value)
    return f"plan field {key!r} changed"


def m_plan_graph(ctx: Context, meta) -> str | None:
    graph = meta.get("graph")
    if not isinstance(graph, dict):
        return None
    return weighted_choice(ctx, GRAPH_MUTATIONS)(ctx, graph)


PLAN_MUTATIONS: list[tuple[float, Callable]] = [
    (8, m_plan_graph),
    (4, m_plan_memory),
    (3, m_plan_tactics),
    (4, m_plan_fields),
    (1, generic_edit),
]


def weighted_choice(ctx: Context, table: list[tuple[float, Callable]]) -> Callable:
    total = sum(w for w, _ in table)
    r = ctx.rng.random() * total
    for w, fn in table:
        r -= w
        if r < 0:
            return fn
    return table[-1][1]
