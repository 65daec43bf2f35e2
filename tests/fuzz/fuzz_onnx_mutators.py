"""Mutations of ONNX models, at the protobuf level and as raw bytes.

Structure-aware edits on the `ModelProto`: attribute types and values, dimensions of inputs, outputs, value
infos and initializers, element types, opset and IR versions, op types and domains (other real ops, unknown and
hostile names), duplicate names, dangling and empty inputs, node order (cycles), external data pointing outside
the model's folder, local functions (recursive ones too), nested control-flow graphs. Byte edits flip bits,
truncate, and insert junk into the serialized model.

The oracle for a mutated model is onnxruntime on the same bytes (see fuzz_worker.py), so a mutation that
yields another valid model is fine: tensorforge must then compute what onnxruntime computes.
"""

from __future__ import annotations

from fuzz_files import mutate_bytes
from fuzz_mutators import NASTY_INTS, ContainerError, Context, weighted_choice

SIMILAR_OPS = {
    "Relu": "Sigmoid",
    "Sigmoid": "Tanh",
    "Add": "Sub",
    "Sub": "Mul",
    "Mul": "Div",
    "MatMul": "Gemm",
    "Gemm": "MatMul",
    "Conv": "ConvTranspose",
    "Softmax": "LogSoftmax",
    "GlobalAveragePool": "GlobalMaxPool",
    "Flatten": "Identity",
    "Transpose": "Identity",
    "Hardmax": "Softmax",
    "CumSum": "ReduceSum",
    "BatchNormalization": "InstanceNormalization",
    "LayerNormalization": "GroupNormalization",
    "Reshape": "Expand",
}
OTHER_OPS = [
    "Relu",
    "Identity",
    "Add",
    "MatMul",
    "Conv",
    "Cast",
    "Shape",
    "Gather",
    "Concat",
    "Split",
    "Slice",
    "Reshape",
    "Where",
    "Loop",
    "If",
    "Scan",
    "NonZero",
    "Resize",
    "TopK",
    "Einsum",
    "Unique",
    "Range",
    "ConstantOfShape",
    "Tile",
    "Pad",
    "Col2Im",
    "DFT",
    "StringNormalizer",
    "RandomNormal",
    "Constant",
]
HOSTILE_OP_TYPES = [
    "",
    "../../x",
    "__import__",
    "os.system",
    "__class__",
    "Relu\x00",
    "torch.aten.cumsum.default",
    "nn.relu",
    "subgraph",
    "a" * 1000,
]
DOMAINS = [
    "com.microsoft",
    "ai.onnx.ml",
    "ai.onnx",
    "evil.domain",
    "..",
    "../../x",
    "torch",
    "ai.onnx.preview.training",
]
OPSETS = [0, 1, 6, 10, 11, 13, 16, 18, 21, 22, 23, 99, 2**31 - 1, -1]
ELEM_TYPES = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 14, 16, 17, 19, 21, 22, 99]  # 8: string, 17+: float8/int4


def _graph_nodes(model):
    return list(model.graph.node)


def _all_names(model) -> list[str]:
    g = model.graph
    names = [v.name for v in g.input] + [t.name for t in g.initializer]
    for n in g.node:
        names += list(n.output)
    return [n for n in names if n]


def m_opset(ctx: Context, model) -> str | None:
    action = ctx.rng.choice(["version", "version", "duplicate", "remove", "domain", "ir"])
    if action == "ir":
        model.ir_version = ctx.rng.choice([0, 1, 3, 7, 11, 99, 2**62])
        return f"ir_version {model.ir_version}"
    if action == "version" and model.opset_import:
        model.opset_import[0].version = ctx.rng.choice(OPSETS)
        return f"opset {model.opset_import[0].version}"
    if action == "duplicate" and model.opset_import:
        extra = model.opset_import.add()
        extra.domain, extra.version = model.opset_import[0].domain, ctx.rng.choice(OPSETS)
    elif action == "remove":
        del model.opset_import[:]
    else:
        extra = model.opset_import.add()
        extra.domain, extra.version = ctx.rng.choice(DOMAINS), ctx.rng.choice([1, 2**31 - 1])
    return f"opset import: {action}"


def m_op_type(ctx: Context, model) -> str | None:
    nodes = _graph_nodes(model)
    if not nodes:
        return None
    node = ctx.rng.choice(nodes)
    old = node.op_type
    r = ctx.rng.random()
    if r < 0.4 and old in SIMILAR_OPS:
        node.op_type = SIMILAR_OPS[old]
    elif r < 0.7:
        node.op_type = ctx.rng.choice(OTHER_OPS)
    elif r < 0.85:
        node.op_type = ctx.rng.choice(HOSTILE_OP_TYPES)
    else:
        node.domain = ctx.rng.choice(DOMAINS)
        return f"node {node.name!r} domain -> {node.domain!r}"
    return f"node {node.name!r} op {old!r} -> {node.op_type!r}"


def m_attribute(ctx: Context, model) -> str | None:
    from onnx import AttributeProto, helper

    nodes = _graph_nodes(model)
    if not nodes:
        return None
    node = ctx.rng.choice(nodes)
    if not node.attribute or ctx.rng.random() < 0.15:
        name = ctx.rng.choice(
            [
                "axis",
                "kernel_shape",
                "pads",
                "strides",
                "perm",
                "epsilon",
                "group",
                "transA",
                "unknown_attr",
                "dilations",
                "auto_pad",
            ]
        )
        node.attribute.append(helper.make_attribute(name, ctx.rng.choice([-1, 0, 7, [0, 0], [-5], 1e30, "SAME_UPPER"])))
        return f"node {node.name!r}: attribute {name!r} added"
    attr = ctx.rng.choice(list(node.attribute))
    action = ctx.rng.choice(["type", "value", "value", "value", "delete", "duplicate"])
    if action == "type":
        attr.type = ctx.rng.choice(
            [
                AttributeProto.INT,
                AttributeProto.FLOAT,
                AttributeProto.STRING,
                AttributeProto.INTS,
                AttributeProto.FLOATS,
                AttributeProto.TENSOR,
                AttributeProto.GRAPH,
                AttributeProto.UNDEFINED,
                99,
            ]
        )
    elif action == "delete":
        node.attribute.remove(attr)
    elif action == "duplicate":
        node.attribute.append(attr)
    elif attr.type == AttributeProto.INT:
        attr.i = ctx.rng.choice(NASTY_INTS[:12] + [-2, -5, 100, -(2**63)])
    elif attr.type == AttributeProto.INTS:
        values = list(attr.ints)
        choice = ctx.rng.choice(["one", "len", "empty", "dup"])
        if choice == "one" and values:
            values[ctx.rng.randrange(len(values))] = ctx.rng.choice([0, -1, -7, 2**31, 2**40, 1000])
        elif choice == "len":
            values = values + [1]
        elif choice == "dup" and values:
            values = [values[0]] * len(values)
        else:
            values = []
        del attr.ints[:]
        attr.ints.extend(values)
    elif attr.type == AttributeProto.FLOAT:
        attr.f = ctx.rng.choice([float("nan"), float("inf"), -1.0, 0.0, 1e30, -0.0])
    elif attr.type == AttributeProto.STRING:
        attr.s = ctx.rng.choice([b"", b"../../x", b"SAME_UPPER", b"VALID", b"\xff\xfe", b"NOTSET"])
    else:
        return None
    return f"node {node.name!r}: attribute {attr.name!r} {action}"


def _dims_of(ctx: Context, type_proto) -> str | None:
    if not type_proto.HasField("tensor_type"):
        return None
    tt = type_proto.tensor_type
    action = ctx.rng.choice(["dim", "dim", "param", "rank-up", "rank-down", "elem", "clear"])
    dims = tt.shape.dim
    if action == "dim" and dims:
        dims[ctx.rng.randrange(len(dims))].dim_value = ctx.rng.choice([0, 1, 3, 7, 2**31, 2**40, 2**62])
    elif action == "param" and dims:
        dims[ctx.rng.randrange(len(dims))].dim_param = ctx.rng.choice(["batch", "seq", "", "../../x", "N"])
    elif action == "rank-up":
        dims.add().dim_value = 1
    elif action == "rank-down" and dims:
        del dims[-1]
    elif action == "elem":
        tt.elem_type = ctx.rng.choice(ELEM_TYPES)
    elif action == "clear":
        tt.ClearField("shape")
    else:
        return None
    return action


def m_value_types(ctx: Context, model) -> str | None:
    g = model.graph
    pool = [("input", v) for v in g.input] + [("output", v) for v in g.output]
    pool += [("value_info", v) for v in g.value_info]
    if not pool:
        return None
    where, value = ctx.rng.choice(pool)
    action = _dims_of(ctx, value.type)
    return f"{where} {value.name!r}: {action}" if action else None


def m_initializer(ctx: Context, model) -> str | None:
    from onnx import TensorProto

    inits = list(model.graph.initializer)
    if not inits:
        return None
    t = ctx.rng.choice(inits)
    action = ctx.rng.choice(
        ["dims", "dims", "dtype", "truncate", "extend", "both", "external", "external", "segment", "nan"]
    )
    if action == "dims" and len(t.dims):
        t.dims[ctx.rng.randrange(len(t.dims))] = ctx.rng.choice([0, 1, 2, -1, 2**40, 2**62])
    elif action == "dims":
        t.dims.append(ctx.rng.choice([0, 2, 2**40]))
    elif action == "dtype":
        t.data_type = ctx.rng.choice(ELEM_TYPES)
    elif action == "truncate" and t.raw_data:
        t.raw_data = t.raw_data[: ctx.rng.randrange(len(t.raw_data))]
    elif action == "extend":
        t.raw_data = t.raw_data + b"\x00" * ctx.rng.choice([1, 4, 4096])
    elif action == "both":
        t.float_data.extend([1.0, 2.0])
    elif action == "external":  # data outside the model's folder, or an absurd span
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        location = ctx.rng.choice(
            [
                "../../../../etc/hostname",
                "/etc/hostname",
                "/proc/self/environ",
                "missing.bin",
                "..",
                "",
                ctx.canaries["dir"] + "/../seeds/manifest.json",
            ]
        )
        for key, value in (
            ("location", location),
            ("offset", ctx.rng.choice(["0", "-1", str(2**62)])),
            ("length", ctx.rng.choice(["4", str(2**40), "-4", "x"])),
        ):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        t.ClearField("raw_data")
        return f"initializer {t.name!r}: external {location!r}"
    elif action == "segment":
        t.segment.begin, t.segment.end = 0, 2**40
    elif action == "nan" and t.data_type == TensorProto.FLOAT and len(t.raw_data) >= 4:
        t.raw_data = b"\x00\x00\xc0\x7f" + t.raw_data[4:]
    else:
        return None
    return f"initializer {t.name!r}: {action}"


def m_names(ctx: Context, model) -> str | None:
    g = model.graph
    nodes = _graph_nodes(model)
    names = _all_names(model)
    if not nodes or not names:
        return None
    action = ctx.rng.choice(
        [
            "dup-output",
            "dangling",
            "empty-input",
            "input-is-init",
            "dup-init",
            "dup-input",
            "self-loop",
            "output-missing",
            "output-dup",
            "drop-input",
        ]
    )
    node = ctx.rng.choice(nodes)
    if action == "dup-output" and node.output:
        node.output[0] = ctx.rng.choice(names)
    elif action == "dangling" and node.input:
        node.input[ctx.rng.randrange(len(node.input))] = ctx.rng.choice(["no_such_value", "../../x", "x "])
    elif action == "empty-input" and node.input:
        node.input[ctx.rng.randrange(len(node.input))] = ""
    elif action == "input-is-init" and g.initializer and g.input:
        g.input[0].name = g.initializer[0].name
    elif action == "dup-init" and g.initializer:
        g.initializer.append(g.initializer[0])
    elif action == "dup-input" and g.input:
        g.input.append(g.input[0])
    elif action == "self-loop" and node.input and node.output:
        node.input[0] = node.output[0]
    elif action == "output-missing" and g.output:
        g.output[0].name = "not_computed"
    elif action == "output-dup" and g.output:
        g.output.append(g.output[0])
    elif action == "drop-input" and g.input:
        del g.input[0]
    else:
        return None
    return f"names: {action}"


def m_node_order(ctx: Context, model) -> str | None:
    nodes = _graph_nodes(model)
    if len(nodes) < 2:
        return None
    action = ctx.rng.choice(["reverse", "swap", "delete", "duplicate", "cycle"])
    if action == "reverse":
        nodes.reverse()
    elif action == "swap":
        i, j = ctx.rng.sample(range(len(nodes)), 2)
        nodes[i], nodes[j] = nodes[j], nodes[i]
    elif action == "delete":
        nodes.pop(ctx.rng.randrange(len(nodes)))
    elif action == "duplicate":
        nodes.insert(0, nodes[ctx.rng.randrange(len(nodes))])
    else:  # the first node reads the last node's output
        first, last = nodes[0], nodes[-1]
        if first.input and last.output:
            first.input[0] = last.output[0]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return f"nodes: {action}"


def m_functions(ctx: Context, model) -> str | None:
    """A local function named like a real op (recursive, or shadowing the op) or a nested control-flow graph."""
    from onnx import helper

    nodes = _graph_nodes(model)
    if not nodes:
        return None
    node = ctx.rng.choice(nodes)
    action = ctx.rng.choice(["recursive", "shadow", "if-nested"])
    if action == "recursive":
        fn = helper.make_function(
            "local",
            "Loopy",
            ["x"],
            ["y"],
            [helper.make_node("Loopy", ["x"], ["y"], domain="local")],
            [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        )
        model.functions.append(fn)
        model.opset_import.append(helper.make_opsetid("local", 1))
        node.op_type, node.domain = "Loopy", "local"
        del node.input[1:]
        del node.output[1:]
        del node.attribute[:]
    elif action == "shadow":
        fn = helper.make_function(
            "",
            node.op_type,
            list(node.input),
            list(node.output),
            [helper.make_node("Identity", [node.input[0]], [node.output[0]])] if node.input and node.output else [],
            [helper.make_opsetid("", 17)],
        )
        model.functions.append(fn)
    else:
        depth = ctx.rng.choice([3, 30, 60])  # protobuf itself parses at most ~100 levels
        leaf = helper.make_graph(
            [helper.make_node("Identity", [node.input[0] if node.input else "x"], ["b"])],
            "branch",
            [],
            [helper.make_tensor_value_info("b", 1, None)],
        )
        inner = leaf
        for _ in range(depth):  # the then-branch nests; the else-branch stays a leaf (no exponential size)
            cond_node = helper.make_node("If", ["cond_true"], ["b"], then_branch=inner, else_branch=leaf)
            inner = helper.make_graph([cond_node], "branch", [], [helper.make_tensor_value_info("b", 1, None)])
        model.graph.initializer.append(helper.make_tensor("cond_true", 9, [], [True]))
        if_node = helper.make_node(
            "If", ["cond_true"], [node.output[0] if node.output else "y"], then_branch=inner, else_branch=leaf
        )
        idx = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(idx, if_node)
        return f"node {node.name!r} replaced by If nested {depth} deep"
    return f"functions: {action}"


ONNX_MUTATIONS = [
    (2, m_opset),
    (3, m_op_type),
    (5, m_attribute),
    (3, m_value_types),
    (3, m_initializer),
    (3, m_names),
    (2, m_node_order),
    (1, m_functions),
]


def mutate_onnx(ctx: Context, data: bytes) -> bytes:
    """One mutation of serialized ONNX bytes: structure-aware (85%) or raw bytes."""
    import onnx
    from google.protobuf.message import DecodeError

    if ctx.rng.random() < 0.15:
        data, desc = mutate_bytes(ctx, data)
        ctx.log.append(f"onnx {desc}")
        return data
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError:
        raise ContainerError("no longer parses") from None
    try:
        desc = weighted_choice(ctx, ONNX_MUTATIONS)(ctx, model)
    except Exception as exc:  # noqa: BLE001 - protobuf refuses some edits (depth, field values) in its own types
        raise ContainerError(f"not applicable ({exc})") from None
    if desc is None:
        raise ContainerError("not applicable")
    ctx.log.append(desc)
    try:
        return model.SerializeToString()
    except Exception as exc:  # noqa: BLE001 - protobuf refuses some field values only when serializing
        raise ContainerError(f"does not serialize ({exc})") from None
