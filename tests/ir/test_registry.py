"""The op registry and the types: declaration rules, attribute normalization, shape inference errors."""

import pytest
import torch

from tensorforge.ir import REQUIRED, Graph, ShapeInferenceError, Sym, TensorType, UnknownOpError, get_op, register_op
from tensorforge.ir.registry import canonical_attr


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="'nn.relu' is already registered"):
        register_op("nn.relu")(lambda x: x)


def test_unknown_op_suggests_close_names():
    with pytest.raises(UnknownOpError) as info:
        get_op("nn.conv2")
    assert str(info.value).startswith("unknown IR op 'nn.conv2'; did you mean nn.conv2d")


def test_attributes_get_defaults_and_canonical_form():
    attrs = get_op("nn.conv2d").normalize_attrs({"strides": [2, 2], "padding": torch.Size([1, 1])})
    assert attrs == {"strides": (2, 2), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    assert type(attrs["padding"]) is tuple
    assert get_op("cast").normalize_attrs({"dtype": torch.float16}) == {"dtype": "float16"}


def test_attribute_errors_name_the_op():
    with pytest.raises(ValueError, match=r"nn\.conv2d: unknown attribute\(s\) \['stride'\]"):
        get_op("nn.conv2d").normalize_attrs({"stride": (2, 2)})
    with pytest.raises(ValueError, match="reshape: attribute 'newshape' is required"):
        get_op("reshape").normalize_attrs({})
    assert repr(REQUIRED) == "REQUIRED"


def test_attribute_values_must_be_plain_data():
    with pytest.raises(TypeError, match="not allowed in the IR"):
        canonical_attr(object())
    with pytest.raises(TypeError, match="not allowed in the IR"):
        canonical_attr(torch.zeros(2))  # tensors are constants, never attributes
    assert canonical_attr([1, [2.5, None], Sym("batch"), "s", True]) == (1, (2.5, None), Sym("batch"), "s", True)


def test_shape_inference_error_names_op_and_input_types():
    graph = Graph("g")
    x = graph.add_input("x", TensorType("float32", (2, 5)))
    w = graph.add_input("w", TensorType("float32", (4, 3)))
    with pytest.raises(ShapeInferenceError, match=r"nn\.dense\(f32\[2,5\], f32\[4,3\]; \{\}\)"):
        graph.add_node("nn.dense", [x, w])


def test_shape_inference_rejects_wrong_arity():
    with pytest.raises(ShapeInferenceError, match="add takes 2 inputs, got 1"):
        get_op("add").infer_types([TensorType("float32", (2,))], {})


def test_shape_inference_solves_scaled_symbols():
    t = TensorType("float32", (Sym("batch"), 3, 4))
    (out,) = get_op("reshape").infer_types([t], {"newshape": (-1, 4)})
    assert out.shape == (Sym("batch", 3), 4)
    (out,) = get_op("concatenate").infer_types([t, t, t], {"axis": 0})
    assert out.shape == (Sym("batch", 3), 3, 4)


def test_two_symbols_are_told_apart():
    a = TensorType("float32", (Sym("batch"), 4))
    b = TensorType("float32", (Sym("tokens"), 4))
    (out,) = get_op("matmul").infer_types([a, TensorType("float32", (4, Sym("tokens")))], {})
    assert out.shape == (Sym("batch"), Sym("tokens"))
    # different symbols are not assumed equal: joining along another axis needs equal sizes
    with pytest.raises(ShapeInferenceError, match="concatenate"):
        get_op("concatenate").infer_types([a, b], {"axis": 1})


def test_inexpressible_dimension_is_refused():
    # ceil(batch / 1.5) with a float step: no size expression, and arange's arithmetic covers only integer steps
    with pytest.raises(ShapeInferenceError, match="cannot express"):
        get_op("arange").infer_types([], {"start": 0, "stop": Sym("batch"), "step": 1.5, "dtype": "int64"})


def test_types_validate_their_parts():
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        TensorType("float8", (1,))
    with pytest.raises(ValueError, match="non-negative int or Sym"):
        TensorType("float32", (2, -1))
    with pytest.raises(ValueError, match="non-negative int or Sym"):
        TensorType("float32", (True,))
    with pytest.raises(ValueError, match="identifier"):
        Sym("batch size")
    with pytest.raises(ValueError, match=">= 1"):
        Sym("batch", 0)
    assert TensorType(torch.float16, [Sym("batch", 12), 64]).dtype == "float16"


def test_type_queries():
    t = TensorType("bfloat16", (Sym("batch", 2), 3))
    assert str(t) == "bf16[2*batch,3]" and t.rank == 2 and not t.is_static and t.symbols == {"batch"}
    assert t.concrete_shape({"batch": 5}) == (10, 3)
    assert t.nbytes({"batch": 5}) == 60
    assert TensorType.of(torch.zeros(2, 3, dtype=torch.int8)) == TensorType("int8", (2, 3))
    with pytest.raises(ValueError, match="not bound"):
        t.concrete_shape({})
