"""The verifier rejects every kind of malformed graph, with a message naming the node (or value) at fault.

Each row starts from the same valid graph, breaks one thing the way a buggy pass would, and names the
message the verifier must give. The graph's own methods refuse most of these edits, so those rows write the
graph's private state directly, as code editing the graph behind its methods would.
"""

import pytest
import torch

from tensorforge.ir import Graph, TensorType, Value, VerificationError, verify

F32 = "float32"


def valid_graph() -> Graph:
    """x -> fc (nn.dense with constant w) -> act (nn.relu) -> flat (reshape) -> output"""
    graph = Graph("g")
    x = graph.add_input("x", TensorType(F32, (2, 3)))
    w = graph.add_constant(torch.randn(4, 3), name="w")
    fc = graph.add_node("nn.dense", [x, w], name="fc")
    act = graph.add_node("nn.relu", [fc.output], name="act")
    flat = graph.add_node("reshape", [act.output], {"newshape": (8,)}, name="flat")
    graph.set_outputs([flat.output])
    return graph


def _node(graph, name):
    return next(n for n in graph.nodes if n.name == name)


def unknown_op(g):
    _node(g, "act").op = "nn.rellu"


def op_not_a_string(g):
    _node(g, "act").op = 7


def subgraph_calls_itself(g):
    """A graph that holds itself as a subgraph and calls it: verifying the callee would never end."""
    node = g.add_node("subgraph", [g.inputs[0]], {"callee": "g", "output_types": (("float32", (8,)),)}, name="again")
    g.subgraphs["g"] = g
    g.set_outputs(node.outputs)


def subgraph_callee_not_a_name(g):
    node = g.add_node(
        "subgraph", [_node(g, "flat").output], {"callee": "g", "output_types": (("float32", (8,)),)}, name="call"
    )
    node.attrs["callee"] = {"not": "a name"}
    g.set_outputs(node.outputs)


def too_many_inputs(g):
    act = _node(g, "act")
    act.inputs = [*act.inputs, g.inputs[0]]


def too_few_inputs(g):
    fc = _node(g, "fc")
    fc.inputs = fc.inputs[:-1]


def use_before_define(g):
    g._nodes[0], g._nodes[1] = g._nodes[1], g._nodes[0]
    g._nodes_view = None


def value_not_in_graph(g):
    _node(g, "act")._inputs = (Value("stray", TensorType(F32, (2, 4))),)


def wrong_output_type(g):
    _node(g, "fc").output.type = TensorType(F32, (2, 5))


def wrong_output_dtype(g):
    _node(g, "act").output.type = TensorType("float16", (2, 4))


def unknown_attribute(g):
    _node(g, "act").attrs["alpha"] = 0.1


def missing_required_attribute(g):
    del _node(g, "flat").attrs["newshape"]


def non_canonical_attribute(g):
    _node(g, "flat").attrs["newshape"] = [8]  # a list: attributes are tuples


def duplicate_value_name(g):
    _node(g, "act").output._name = "x"


def duplicate_node_name(g):
    _node(g, "act")._name = "fc"


def undefined_graph_output(g):
    g._outputs = (Value("ghost", TensorType(F32, (8,))),)


def no_graph_outputs(g):
    g.set_outputs([])


def constant_shape_mismatch(g):
    g.constants["w"].data = torch.randn(4, 4)


def constant_dtype_mismatch(g):
    g.constants["w"].data = g.constants["w"].data.half()


def constant_without_data(g):
    g.constants["w"].data = None


def constant_under_wrong_key(g):
    g._constants["w2"] = g._constants.pop("w")


def output_with_wrong_producer(g):
    _node(g, "act").output.producer = _node(g, "fc")


def node_without_outputs(g):
    _node(g, "flat")._outputs = ()


def input_with_producer(g):
    g.inputs[0].producer = _node(g, "fc")


def input_listed_twice(g):
    g._inputs.append(g.inputs[0])


def shape_inference_fails(g):
    g.inputs[0].type = TensorType(F32, (2, 5))  # dense weight wants 3 input features


def input_rewired_behind_the_index(g):
    """A well-formed graph whose def-use index no longer says who reads what."""
    other = g.add_node("nn.relu", [_node(g, "fc").output], name="other", before=_node(g, "flat"))
    _node(g, "flat")._inputs = (other.output,)


MALFORMED = [
    (unknown_op, r"node 'act' \(nn\.rellu\): unknown IR op 'nn\.rellu'; did you mean nn\.relu"),
    (op_not_a_string, r"node 'act' \(7\): the op name must be a string"),
    (subgraph_calls_itself, r"graph 'g': calls itself through its subgraphs"),
    (subgraph_callee_not_a_name, r"node 'call' \(subgraph\): calls subgraph \{'not': 'a name'\}, which the graph"),
    (too_many_inputs, r"node 'act' \(nn\.relu\): nn\.relu takes 1 inputs, got 2"),
    (too_few_inputs, r"node 'fc' \(nn\.dense\): nn\.dense takes 2 inputs, got 1"),
    (use_before_define, r"node 'act' \(nn\.relu\): input 0 %fc is used before it is defined"),
    (value_not_in_graph, r"node 'act' \(nn\.relu\): input 0 %stray .*not in the graph"),
    (wrong_output_type, r"node 'fc' \(nn\.dense\): output types f32\[2,5\] differ from the inferred f32\[2,4\]"),
    (wrong_output_dtype, r"node 'act' \(nn\.relu\): output types f16\[2,4\] differ from the inferred f32\[2,4\]"),
    (unknown_attribute, r"node 'act' \(nn\.relu\): nn\.relu: unknown attribute\(s\) \['alpha'\]"),
    (missing_required_attribute, r"node 'flat' \(reshape\): reshape: attribute 'newshape' is required"),
    (non_canonical_attribute, r"node 'flat' \(reshape\): attributes .* are not in canonical form"),
    (duplicate_value_name, r"node 'act' \(nn\.relu\): value name %x is already used by input %x"),
    (duplicate_node_name, r"node 'fc' \(nn\.relu\): another node has the same name"),
    (undefined_graph_output, r"graph output %ghost is not defined in the graph"),
    (no_graph_outputs, r"graph 'g': has no outputs"),
    (constant_shape_mismatch, r"constant @w: its data \(torch\.float32, \(4, 4\)\) does not match its type f32\[4,3\]"),
    (constant_dtype_mismatch, r"constant @w: its data \(torch\.float16, \(4, 3\)\) does not match its type f32\[4,3\]"),
    (constant_without_data, r"constant @w has no data"),
    (constant_under_wrong_key, r"constant @w is stored under the key 'w2'"),
    (output_with_wrong_producer, r"node 'act' \(nn\.relu\): output %act does not name this node as its producer"),
    (node_without_outputs, r"node 'flat' \(reshape\): has no outputs"),
    (input_with_producer, r"graph input %x must not have a producer"),
    (input_listed_twice, r"input %x: value %x is defined twice"),
    (shape_inference_fails, r"node 'fc' \(nn\.dense\): shape inference failed: nn\.dense\(f32\[2,5\], f32\[4,3\]"),
    (input_rewired_behind_the_index, r"graph 'g': the def-use index differs from the nodes' inputs"),
]


def test_the_valid_graph_verifies():
    graph = valid_graph()
    assert verify(graph) is None
    assert graph.verify() is graph


@pytest.mark.parametrize("break_it, message", MALFORMED, ids=[f.__name__.replace("_", "-") for f, _ in MALFORMED])
def test_verifier_rejects(break_it, message):
    graph = valid_graph()
    break_it(graph)
    with pytest.raises(VerificationError, match=message) as info:
        graph.verify()
    assert str(info.value).startswith("graph 'g': ")


def test_breaking_only_an_unused_value_name_is_still_caught():
    """Names must be unique even between values nobody reads: the serializer looks values up by name."""
    graph = valid_graph()
    extra = graph.add_node("nn.relu", [graph.inputs[0]], name="unused")
    extra.output._name = "fc"
    with pytest.raises(
        VerificationError,
        match=r"node 'unused' \(nn\.relu\): value name %fc is already used by "
        r"node 'fc'",
    ):
        graph.verify()


def test_builder_refuses_duplicate_input_names():
    graph = Graph("g")
    graph.add_input("x", TensorType(F32, (1,)))
    with pytest.raises(ValueError, match="already has a value named 'x'"):
        graph.add_input("x", TensorType(F32, (1,)))


def test_builder_gives_fresh_names():
    graph = Graph("g")
    x = graph.add_input("relu", TensorType(F32, (2,)))
    a = graph.add_node("nn.relu", [x])
    b = graph.add_node("nn.relu", [a.output])
    c = graph.add_constant(torch.zeros(2), name="relu")
    graph.set_outputs([b.output, c])
    names = [x.name, a.output.name, b.output.name, c.name]
    assert len(set(names)) == 4, names
    assert a.name != b.name
    graph.verify()
