"""The one epilogue description: `Epilogue.of` on every fused form fuse_bias_activation makes (conv and dense, with
and without bias, residual before or after the activation, each fusable activation), its input positions and
order, and its numerics: the fused reference against the unfused graph, `in_place` against `apply` bit for bit,
and the library tactics that run on a CPU too (cuDNN's and cuBLAS's, bound here on CPU tensors) against the
reference.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tensorforge import ir
from tensorforge.engine import BuilderConfig
from tensorforge.engine.epilogue import FUSABLE_ACTIVATIONS, IN_PLACE_ACTIVATIONS, Epilogue
from tensorforge.engine.passes import PassContext, fuse_bias_activation
from tensorforge.engine.tactics import BindContext, get_tactic
from tensorforge.ir import Graph, Sym, TensorType

BATCH = Sym("batch")
RELU6 = (("a_min", 0.0), ("a_max", 6.0))


@dataclasses.dataclass(frozen=True)
class Form:
    """An unfused layer: conv2d or dense, then [bias], [residual add], [activation], [residual add]."""

    op: str  # "conv" or "dense"
    bias: bool = True
    activation: str | None = None
    attrs: tuple = ()
    residual: str | None = None  # None, "pre_activation" or "post_activation"

    def graph(self) -> Graph:
        torch.manual_seed(1)  # the same weights every time it is built
        g = Graph(f"unfused_{self.op}")
        conv = self.op == "conv"
        x = g.add_input("x", TensorType("float32", (BATCH, 6, 7, 5) if conv else (BATCH, 3, 6)))
        w = g.add_constant(torch.randn(8, 6, 3, 3) * 0.3 if conv else torch.randn(8, 6) * 0.4, "w")
        y = g.call("nn.conv2d", x, w, strides=(1, 1), padding=(1, 1)) if conv else g.call("nn.dense", x, w)
        if self.bias:
            y = g.call("nn.bias_add", y, g.add_constant(torch.randn(8), "b"), axis=1 if conv else -1)
        r = g.add_input("r", y.type) if self.residual else None
        if self.residual == "pre_activation":
            y = g.call("add", r, y)  # the residual on either side of the add
        if self.activation:
            y = g.call(self.activation, y, **dict(self.attrs))
        if self.residual == "post_activation":
            y = g.call("add", y, r)
        g.set_outputs([y])
        return g.verify()

    def inputs(self, batch: int = 2) -> list[torch.Tensor]:
        torch.manual_seed(0)
        return [torch.randn(batch, *v.type.shape[1:]) * 2 for v in self.graph().inputs]


FORMS = {
    "conv-bare": Form("conv", bias=False),
    "conv-bias": Form("conv"),
    "conv-bias-relu": Form("conv", activation="nn.relu"),
    "conv-bias-relu6": Form("conv", activation="clip", attrs=RELU6),
    "conv-bias-residual-relu": Form("conv", activation="nn.relu", residual="pre_activation"),
    "conv-bias-silu-residual": Form("conv", activation="nn.silu", residual="post_activation"),
    "conv-residual": Form("conv", bias=False, residual="pre_activation"),
    "conv-hardswish": Form("conv", bias=False, activation="nn.hardswish"),
    "dense-bias-gelu": Form("dense", activation="nn.gelu"),
    "dense-bias-gelu-tanh": Form("dense", activation="nn.gelu", attrs=(("approximate", "tanh"),)),
    "dense-bias-relu": Form("dense", activation="nn.relu"),
    "dense-bias-residual": Form("dense", residual="pre_activation"),
    "dense-bias-tanh-residual": Form("dense", activation="tanh", residual="post_activation"),
    "dense-leaky-relu": Form("dense", bias=False, activation="nn.leaky_relu", attrs=(("alpha", 0.2),)),
    "dense-bias-sigmoid-residual": Form("dense", activation="sigmoid", residual="pre_activation"),
}


def fused(form: Form):
    out = fuse_bias_activation(form.graph(), PassContext())
    (node,) = out.nodes
    assert node.op == f"engine.{form.op}"
    return out, node


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS)
def test_epilogue_of_every_fused_form(form):
    _, node = fused(form)
    epilogue = Epilogue.of(node)
    assert (epilogue.has_bias, epilogue.has_residual, epilogue.activation) == (
        form.bias,
        form.residual is not None,
        form.activation,
    )
    assert epilogue.activation_kwargs.items() >= dict(form.attrs).items()
    assert epilogue.num_inputs == len(node.inputs)
    bias, residual = epilogue.split(node.inputs)
    assert (bias.name if bias is not None else None) == ("b" if form.bias else None)
    assert (residual.name if residual is not None else None) == ("r" if form.residual else None)
    assert epilogue.bias_index == (2 if form.bias else None)
    assert epilogue.residual_index == ((3 if form.bias else 2) if form.residual else None)
    assert epilogue.residual_position == (form.residual or "pre_activation")
    assert epilogue.residual_before_activation == (form.residual != "post_activation")
    assert Epilogue.from_attrs(epilogue.to_attrs()) == epilogue and epilogue.to_attrs() == {
        k: node.attrs[k] for k in epilogue.to_attrs()
    }


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS)
def test_the_fused_reference_computes_what_the_unfused_graph_did(form):
    graph, _ = fused(form)
    inputs = form.inputs()
    torch.testing.assert_close(
        ir.execute(graph, *inputs)[0], ir.execute(form.graph(), *inputs)[0], rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS)
def test_in_place_is_apply_bit_for_bit(form):
    _, node = fused(form)
    epilogue = Epilogue.of(node)
    y = torch.randn(2, *node.outputs[0].type.shape[1:]) * 3
    residual = torch.randn_like(y) if epilogue.has_residual else None
    expected = epilogue.apply(y.clone(), residual)
    out = y.clone()
    got = epilogue.in_place()(out, residual)
    assert got is out, "in place: the tensor given is the result"
    assert torch.equal(got, expected)


def _layer_inputs(form: Form, node) -> list[torch.Tensor]:
    feed = dict(zip(("x", "r"), form.inputs()))
    return [v.data if v.data is not None else feed[v.name] for v in node.inputs]


# library tactics whose calls run on CPU tensors too: their epilogue handling is checked here (not cublaslt_epilogue:
# on a CPU, torch._addmm_activation computes gelu exactly, where cuBLASLt's epilogue, and the layer, use tanh)
CPU_RUNNABLE = {"conv": ("cudnn_nhwc", "cudnn_nchw"), "dense": ("cublas_addmm",)}


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS)
def test_library_tactics_apply_the_epilogue_as_the_reference_does(form):
    _, node = fused(form)
    inputs = _layer_inputs(form, node)
    expected = node.opdef.run(inputs, node.attrs, {"batch": 2})[0]
    ran = []
    for name in CPU_RUNNABLE[form.op]:
        t = get_tactic(node.op, name)
        if t.supports(node, BuilderConfig()) is not None:
            continue
        kernel = t.bind(node, BindContext(torch.device("cpu"), BuilderConfig(), 2))
        offered = [torch.empty(expected.shape)] if t.writes_arena else [None]
        (got,) = kernel([i.clone() for i in inputs], offered, {"batch": 2})
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
        ran.append(name)
    assert ran, "at least one library tactic takes every fused form"


# -- what an epilogue refuses --------------------------------------------------------------------------------------


def test_every_fusable_activation_has_an_in_place_form():
    assert set(IN_PLACE_ACTIVATIONS) == FUSABLE_ACTIVATIONS


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param(
            dict(residual_position="after"),
            r"residual_position must be one of \('pre_activation', "
            r"'post_activation'\), got 'after'",
            id="position",
        ),
        pytest.param(dict(activation="nn.softplus"), "activation 'nn.softplus' cannot be fused", id="activation"),
        pytest.param(dict(has_bias=1), "has_bias must be a bool, got 1", id="flag"),
        pytest.param(
            dict(activation="nn.relu", activation_attrs=("alpha",)),
            "must be \\(name, value\\) pairs",
            id="activation-attrs",
        ),
    ],
)
def test_an_epilogue_that_means_nothing_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Epilogue(**kwargs)


def test_epilogue_of_names_the_layer_and_refuses_other_ops():
    graph, node = fused(FORMS["conv-bias-residual-relu"])
    node.inputs = node.inputs[:-1]  # the residual gone, has_residual still set
    with pytest.raises(
        ValueError,
        match=r"engine.conv '.*': has_bias=True and has_residual=True need 4 inputs, "
        r"got 3",
    ):
        Epilogue.of(node)
    relu = Form("dense", activation="nn.relu", bias=False).graph().nodes[-1]
    with pytest.raises(ValueError, match="nn.relu has no epilogue"):
        Epilogue.of(relu)


def test_apply_checks_the_residual():
    epilogue = Epilogue(has_residual=True)
    with pytest.raises(ValueError, match="has_residual=True, but a residual was not given"):
        epilogue.apply(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"the residual has shape \(3,\), the layer's output \(2, 3\)"):
        epilogue.apply(torch.zeros(2, 3), torch.zeros(3))


def test_without_residual_keeps_the_rest():
    epilogue = Epilogue(
        has_bias=True, has_residual=True, activation="clip", activation_attrs=RELU6, residual_position="post_activation"
    )
    assert epilogue.without_residual() == Epilogue(has_bias=True, activation="clip", activation_attrs=RELU6)
    assert Epilogue().num_inputs == 2 and Epilogue().split(["x", "w"]) == (None, None)
    assert Epilogue(activation_attrs=[["a_min", 0.0]]).activation_attrs == (("a_min", 0.0),), "JSON lists normalized"
