"""Q/DQ placement (TensorRT's rules) on a residual CNN and a tiny transformer block, the rewrite's structure and
the quantized graph's numbers against FP32."""

import dataclasses

import pytest
import torch

from quant_models import ResidualCNN, TinyBlock, randomized
from tensorforge import frontends, ir
from tensorforge.quantization import plan_placement, quantize
from tensorforge.quantization.insert import insert_qdq, weight_scales


def _cnn_graph():
    return frontends.from_torch(randomized(ResidualCNN()), (torch.randn(2, 3, 12, 12),))


def _block_graph():
    return frontends.from_torch(TinyBlock().eval(), (torch.randn(2, 5, 16),))


def _reader_ops(graph, placement):
    return {site.value: sorted(graph.node_named(n).op for n, _ in site.readers) for site in placement.activations}


def test_cnn_placement_keeps_first_conv_and_classifier_and_quantizes_the_residual():
    g = _cnn_graph()
    placement = plan_placement(g)
    convs = [n.name for n in g.nodes if n.op == "nn.conv2d"]
    denses = [n.name for n in g.nodes if n.op == "nn.dense"]
    assert placement.quantized_layers == [convs[1], convs[2], denses[0]]
    assert set(placement.kept) == {convs[0], denses[1]}
    assert "first convolution" in placement.kept[convs[0]] and "classifier" in placement.kept[denses[1]]
    # the stem's relu feeds conv1 and, as the residual, the add (whose relu feeds conv2): one shared pair
    readers = _reader_ops(g, placement)
    (stem_relu,) = [name for name, ops in readers.items() if ops == ["add", "nn.conv2d"]]
    assert g.value_named(stem_relu).producer.op == "nn.relu"
    weights = {site.value: site.axis for site in placement.weights}
    assert weights == {"conv1.weight": 0, "conv2.weight": 0, "hidden.weight": 0}


def test_include_first_last_and_exclude():
    g = _cnn_graph()
    everything = plan_placement(g, include_first_last=True)
    assert len(everything.quantized_layers) == 5 and not everything.kept
    assert "stem.weight" in {s.value for s in everything.weights}
    assert "x" in everything.activation_names  # the stem reads the graph input

    no_dense = plan_placement(g, exclude=["nn.dense"], include_first_last=True)
    assert [g.node_named(n).op for n in no_dense.quantized_layers] == ["nn.conv2d"] * 3
    no_residual = plan_placement(g, exclude=["add"])
    assert all("add" not in ops for ops in _reader_ops(g, no_residual).values())
    conv1 = plan_placement(g).quantized_layers[0]
    assert conv1 not in plan_placement(g, exclude=[conv1]).quantized_layers
    with pytest.raises(ValueError, match="neither a node of graph 'main' nor an op: \\['nope'\\]"):
        plan_placement(g, exclude=["nope"])


def test_transformer_block_placement():
    g = _block_graph()
    placement = plan_placement(g)
    matmuls = [n for n in g.nodes if n.op == "matmul"]
    assert all(n.name in placement.quantized_layers for n in matmuls)
    quantized_values = set(placement.activation_names)
    # both operands of the two activation x activation products, softmax's output among them
    assert all(v.name in quantized_values for n in matmuls for v in n.inputs)
    assert "softmax" in quantized_values
    # softmax's and the norms' own inputs stay in floating point, and so does the residual that feeds a norm
    protected = [n for n in g.nodes if n.op in ("nn.softmax", "nn.layer_norm")]
    assert not quantized_values & {n.inputs[0].name for n in protected}
    assert not placement.kept  # no conv, and the last dense feeds a residual add, not the output alone


@pytest.mark.parametrize("precision, qdtype", [("int8", "int8"), ("fp8", "float8_e4m3fn")])
@pytest.mark.parametrize("make_graph", [_cnn_graph, _block_graph], ids=["cnn", "block"])
def test_quantized_graph_structure_and_error(make_graph, precision, qdtype):
    g = make_graph()
    shape = tuple(g.inputs[0].type.shape[1:])
    calibration = [torch.randn(4, *shape) for _ in range(6)]
    q = quantize(g, calibration, precision=precision)
    q.verify()
    placement = plan_placement(g)
    sites = len(placement.activations) + len(placement.weights)
    counts = q.op_counts()
    assert counts["quantize"] == counts["dequantize"] == sites
    for node in q.nodes:
        if node.op == "quantize":
            assert node.attrs["dtype"] == qdtype and node.output.type.dtype == qdtype
            (reader,) = q.users_of(node.output)
            assert reader.op == "dequantize"
    for name in placement.quantized_layers:
        assert all(v.producer is not None and v.producer.op == "dequantize" for v in q.node_named(name).inputs[:2])
    assert g.op_counts()["quantize"] == 0  # the input graph is left as it was
    for batch in (1, 3, 8):
        x = torch.randn(batch, *shape)
        (want,), (got,) = ir.execute(g, x), ir.execute(q, x)
        error = ((got - want).norm() / want.norm()).item()
        assert 1e-5 < error < {"int8": 0.02, "fp8": 0.05}[precision], error  # quantized, and close


def test_quantize_takes_a_module_and_its_first_batch():
    torch.manual_seed(1)
    model = randomized(ResidualCNN())
    calibration = iter([torch.randn(4, 3, 12, 12) for _ in range(3)])  # an iterator: the first batch is not lost
    q = quantize(model, calibration, method="minmax")
    x = torch.randn(2, 3, 12, 12)
    (got,) = ir.execute(q, x)
    want = model(x)
    assert ((got - want).norm() / want.norm()).item() < 0.05


def test_per_channel_beats_per_tensor_on_channels_of_very_different_ranges():
    g = ir.Graph()
    x = g.add_input("x", ir.TensorType("float32", (ir.Sym("batch"), 32)))
    weight = torch.randn(8, 32) * torch.logspace(-3, 0, 8).unsqueeze(1)  # channel ranges 0.001 .. 1
    y = g.call("nn.dense", x, g.add_constant(weight, "w"), name="dense")
    g.outputs = [g.call("nn.relu", y, name="out")]
    placement = plan_placement(g)
    assert [(s.value, s.axis) for s in placement.weights] == [("w", 0)]
    per_tensor = dataclasses.replace(placement, weights=[dataclasses.replace(placement.weights[0], axis=None)])
    scales = {"x": 4.0 / 127}
    xs = torch.randn(64, 32).clamp(-4, 4)
    (want,) = ir.execute(g, xs)
    errors = {}
    for name, p in (("channel", placement), ("tensor", per_tensor)):
        (got,) = ir.execute(insert_qdq(g, p, scales), xs)
        errors[name] = ((got - want).abs().amax(0) / want.abs().amax(0).clamp_min(1e-9)).amax().item()
    assert errors["channel"] < 0.05 and errors["tensor"] > 5 * errors["channel"], errors


def test_weight_scales_per_channel_and_zero_channels():
    weight = torch.tensor([[1.0, -2.0], [0.0, 0.0], [0.5, 0.25]])
    assert torch.equal(weight_scales(weight, 0, "int8"), torch.tensor([2 / 127, 1.0, 0.5 / 127]))
    assert torch.equal(weight_scales(weight, None, "float8_e4m3fn"), torch.tensor(2 / 448))
    assert torch.equal(weight_scales(weight, 1, "int8"), torch.tensor([1 / 127, 2 / 127]))


def test_a_weight_scale_that_would_be_subnormal_is_1():
    """A channel of weights within 1e-36 of 0 gets scale 1 (it quantizes to zeros), not a subnormal scale whose
    products with the activation's scale underflow."""
    weight = torch.tensor([[1e-40, -2e-40], [1.0, 0.5]])
    assert torch.equal(weight_scales(weight, 0, "int8"), torch.tensor([1.0, 1 / 127]))


def test_a_graph_with_nothing_to_quantize_says_so(caplog):
    g = frontends.from_torch(torch.nn.Sequential(torch.nn.Linear(4, 2)).eval(), (torch.randn(2, 4),))
    with caplog.at_level("WARNING", logger="tensorforge"):
        q = quantize(g, [torch.randn(2, 4)])
    assert q.op_counts()["quantize"] == 0
    assert "no layer of graph 'main' is quantized" in caplog.text and "classifier" in caplog.text
