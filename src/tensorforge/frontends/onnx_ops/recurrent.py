"""Recurrent layers: LSTM, GRU and RNN, unrolled over a sequence whose length is known at import.

The IR has no recurrence, so a layer over T steps is written as the ops of its T steps:

- the input projection of every step and every direction at once: ONE `nn.dense` of X by the directions' W stacked
  (a `matmul` by its transpose where W is computed at run time), with the biases that add linearly (Wb + Rb; GRU's
  Rb stays in the recurrence under linear_before_reset) as its `nn.bias_add`;
- per step and direction: a dense of the previous hidden state by R, added to that step's slice of the projection,
  then the gates as pointwise ops (activations, products, sums), which the engine's fusion passes fuse;
- Y, Y_h and Y_c, those that something reads, stacked from the steps' states in the layout asked for.

A zero initial state (absent, or zeros computed from the batch size, as exporters write it) skips the first step's
recurrent dense.

The node runs through onnxruntime instead, with the reason, when the sequence length is not known at import or is
more than UNROLL_LIMIT steps; when sequence_lens is not that length for every sequence (each sequence would stop at its
own step: that is data-dependent control flow); and for an activation outside the spec's list, or an Affine,
ScaledTanh or ThresholdedRelu without its alpha/beta (no ONNX op gives Affine's and ScaledTanh's defaults, and for
ThresholdedRelu the op's 1.0 and onnxruntime's 0.0 disagree).

The torch.export frontend needs none of this: torch's own decompositions write nn.LSTM, nn.GRU and nn.RNN
(`aten.lstm.input`, `aten.gru.input`, `aten.rnn_tanh.input`, ...) as the same unrolled linear layers and pointwise
ops, which frontends/aten.py converts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import elementwise
from .context import OnnxContext, Operand
from .registry import Unsupported, onnx_converter

# steps per direction beyond which a layer runs through onnxruntime: each step adds about a dozen nodes
UNROLL_LIMIT = 1024

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
# the activations of one direction: LSTM's f, g, h; GRU's f, g; RNN's f
_DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
_DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}  # per direction: backwards?

Apply = Callable[[OnnxContext, Operand, float, float], Operand]


def _number(ctx: OnnxContext, value: float, like: Operand) -> Operand:
    return ctx.const(float(value), dtype=like.dtype)


@dataclass(frozen=True)
class _Function:
    """An activation function of the spec's list. Where it takes alpha (beta), the default is the ONNX op's of that
    name; None where the model must give it (Affine and ScaledTanh are no ops any more; ThresholdedRelu's op says
    1.0 and onnxruntime 0.0)."""

    name: str
    apply: Apply
    takes_alpha: bool = False
    takes_beta: bool = False
    alpha: float | None = None
    beta: float | None = None


_FUNCTIONS = {
    f.name.lower(): f  # onnxruntime matches the names in any case
    for f in (
        _Function("Relu", lambda ctx, x, a, b: ctx.emit("nn.relu", x)),
        _Function("Tanh", lambda ctx, x, a, b: ctx.emit("tanh", x)),
        _Function("Sigmoid", lambda ctx, x, a, b: ctx.emit("sigmoid", x)),
        _Function(
            "Affine",
            lambda ctx, x, a, b: ctx.emit("add", ctx.emit("multiply", x, _number(ctx, a, x)), _number(ctx, b, x)),
            takes_alpha=True,
            takes_beta=True,
        ),
        _Function(
            "LeakyRelu", lambda ctx, x, a, b: elementwise.leaky_relu(ctx, X=x, alpha=a), takes_alpha=True, alpha=0.01
        ),
        _Function(
            "ThresholdedRelu", lambda ctx, x, a, b: elementwise.thresholded_relu(ctx, X=x, alpha=a), takes_alpha=True
        ),
        _Function(
            "ScaledTanh",
            lambda ctx, x, a, b: ctx.emit(
                "multiply", ctx.emit("tanh", ctx.emit("multiply", x, _number(ctx, b, x))), _number(ctx, a, x)
            ),
            takes_alpha=True,
            takes_beta=True,
        ),
        _Function(
            "HardSigmoid",
            lambda ctx, x, a, b: elementwise.hard_sigmoid(ctx, X=x, alpha=a, beta=b),
            takes_alpha=True,
            takes_beta=True,
            alpha=0.2,
            beta=0.5,
        ),
        _Function("Elu", lambda ctx, x, a, b: elementwise.elu(ctx, X=x, alpha=a), takes_alpha=True, alpha=1.0),
        _Function("Softsign", lambda ctx, x, a, b: elementwise.softsign(ctx, input=x)),
        _Function("Softplus", lambda ctx, x, a, b: ctx.emit("nn.softplus", x)),
    )
}


@dataclass(frozen=True)
class _Activation:
    function: _Function
    alpha: float
    beta: float

    def __call__(self, ctx: OnnxContext, x: Operand) -> Operand:
        return self.function.apply(ctx, x, self.alpha, self.beta)


def _activations(op: str, names, alphas, betas, directions: int) -> tuple[tuple[_Activation, ...], ...]:
    """The activation functions of each direction, their alpha and beta taken in order from the lists where they
    take one (as onnxruntime reads them)."""
    per_direction = len(_DEFAULT_ACTIVATIONS[op])
    names = tuple(names) if names else _DEFAULT_ACTIVATIONS[op] * directions
    if op == "RNN" and directions == 1 and len(names) == 2:
        names = names[:1]  # RNN's schema default, [Tanh, Tanh], names both directions: one reads the first
    if len(names) != per_direction * directions:
        raise Unsupported(
            f"{len(names)} activations ({', '.join(names)}); a {op} of {directions} direction(s) takes "
            f"{per_direction * directions}"
        )
    alpha_values, beta_values = iter(alphas or ()), iter(betas or ())
    resolved = []
    for name in names:
        function = _FUNCTIONS.get(name.lower())
        if function is None:
            raise Unsupported(
                f"activation {name!r} is not one of the spec's ({', '.join(f.name for f in _FUNCTIONS.values())})"
            )
        alpha = next(alpha_values, function.alpha) if function.takes_alpha else 0.0
        beta = next(beta_values, function.beta) if function.takes_beta else 0.0
        if alpha is None or beta is None:
            missing = "alpha" if alpha is None else "beta"
            raise Unsupported(
                f"activation {function.name} without its {missing} in activation_{missing}: no default is agreed on "
                f"by the spec and onnxruntime"
            )
        resolved.append(_Activation(function, float(alpha), float(beta)))
    return tuple(tuple(resolved[i : i + per_direction]) for i in range(0, len(resolved), per_direction))


@dataclass(frozen=True)
class _Layer:
    """What an LSTM, GRU or RNN node computes, read from its attributes and input types."""

    op: str
    steps: int
    hidden: int
    reverse: tuple[bool, ...]  # per direction: whether it runs from the last step to the first
    activations: tuple[tuple[_Activation, ...], ...]  # per direction
    clip: float | None
    batch_major: bool  # layout 1: X is [batch, seq, input], the states [batch, directions, hidden]

    @property
    def directions(self) -> int:
        return len(self.reverse)

    @property
    def time_axis(self) -> int:
        return 1 if self.batch_major else 0

    @property
    def direction_axis(self) -> int:
        """The axis of the directions in Y_h, Y_c, initial_h and initial_c."""
        return 1 if self.batch_major else 0

    def gate(self, ctx: OnnxContext, activation: _Activation, x: Operand) -> Operand:
        """activation(x), with x clipped to [-clip, clip] first where the node says so."""
        if self.clip is not None:
            x = ctx.emit("clip", x, a_min=-self.clip, a_max=self.clip)
        return activation(ctx, x)


def _attributes(op, direction, layout, activations, activation_alpha, activation_beta, clip):
    if direction not in _DIRECTIONS:
        raise Unsupported(f"direction {direction!r}")
    if layout not in (0, 1):
        raise Unsupported(f"layout {layout}")
    if clip is not None and not clip > 0:
        raise Unsupported(f"clip {clip}: the threshold must be positive")
    reverse = _DIRECTIONS[direction]
    return reverse, _activations(op, activations, activation_alpha, activation_beta, len(reverse))


def _steps(X: Operand, layout: int) -> int:
    steps = X.shape[1 if layout else 0]
    if not isinstance(steps, int):
        raise Unsupported(
            f"a sequence length not known at import ({steps}): the layer is unrolled over its steps (give the model "
            f"a fixed sequence length, input_shapes=...)"
        )
    if not 1 <= steps <= UNROLL_LIMIT:
        raise Unsupported(f"a sequence of {steps} steps: from 1 to UNROLL_LIMIT ({UNROLL_LIMIT}) are unrolled")
    return steps


# IR ops whose output holds only elements of their first input: a tensor filled with one number stays filled
_SAME_ELEMENTS = frozenset(
    {"broadcast_to", "reshape", "expand_dims", "squeeze", "copy", "transpose", "strided_slice", "take", "split", "tile"}
)


def _filled_with(x: Operand, number: int | float) -> bool:
    """Whether every element of x is `number`, as far as import can tell: a known tensor's values, or a run-time
    `full` (what exporters make of zeros sized by the batch: torch.onnx.export slices each layer's initial states
    from one ConstantOfShape), seen through the ops that move or pick elements."""
    if x.is_known:
        return all(bool((p == number).all()) for p in x.known_probes)
    value = x.value
    while value is not None and value.producer is not None:
        node = value.producer
        if node.op in ("full", "full_like"):
            return bool(node.attrs["fill_value"] == number)
        if node.op not in _SAME_ELEMENTS:
            return False
        value = node.inputs[0]
    return value is not None and value.data is not None and bool((value.data == number).all())


def _sequence_lens_reason(sequence_lens: Operand | None, steps: int) -> str | None:
    if sequence_lens is None or _filled_with(sequence_lens, steps):
        return None
    if sequence_lens.is_known:
        return (
            f"sequence_lens other than the sequence length ({steps}) for some sequence: padded sequences, each "
            f"stopping at its own step, are not unrolled"
        )
    return (
        f"sequence_lens computed at run time: only sequences that all run the whole length, {steps}, are unrolled, "
        f"and that must be known at import"
    )


def _check(op: str):
    def check(
        *,
        X=None,
        sequence_lens=None,
        direction="forward",
        layout=0,
        activations=None,
        activation_alpha=None,
        activation_beta=None,
        clip=None,
        **_,
    ):
        try:
            _attributes(op, direction, layout, activations, activation_alpha, activation_beta, clip)
            if X is not None and X.type is not None:
                steps = _steps(X, layout)
                if sequence_lens is not None and sequence_lens.is_known:
                    return _sequence_lens_reason(sequence_lens, steps)
        except Unsupported as exc:
            return str(exc)
        return None

    check.__doc__ = (
        f"The sequence length known at import (unrolled, up to {UNROLL_LIMIT} steps); sequence_lens absent or that "
        "length; activations of the spec (Affine, ScaledTanh, ThresholdedRelu with their alpha/beta given)."
    )
    check.__name__ = f"_{op.lower()}_check"
    return check


def _read(
    op: str,
    *,
    X,
    W,
    R,
    sequence_lens,
    activation_alpha,
    activation_beta,
    activations,
    clip,
    direction,
    hidden_size,
    layout,
) -> _Layer:
    """The layer a node computes, or Unsupported with the reason it is not unrolled."""
    reverse, resolved = _attributes(op, direction, layout, activations, activation_alpha, activation_beta, clip)
    steps = _steps(X, layout)
    reason = _sequence_lens_reason(sequence_lens, steps)
    if reason:
        raise Unsupported(reason)
    hidden = R.shape[-1]
    width = _GATES[op] * hidden if isinstance(hidden, int) else None
    expected = {"W": (len(reverse), width, X.shape[-1]), "R": (len(reverse), width, hidden)}
    for name, operand in (("W", W), ("R", R)):
        if width is None or tuple(operand.shape) != expected[name] or not isinstance(X.shape[-1], int):
            raise Unsupported(f"{name} of shape {list(operand.shape)} for X of shape {list(X.shape)}")
    if hidden_size is not None and hidden_size != hidden:
        raise Unsupported(f"hidden_size {hidden_size}, but R's shape {list(R.shape)} says {hidden}")
    return _Layer(op, steps, hidden, reverse, resolved, clip, bool(layout))


def _check_shapes(layer: _Layer, X: Operand, optional: dict[str, Operand | None]) -> None:
    """The optional inputs of the shapes the spec gives for X: a state's batch must be X's batch, the same size
    expression (two symbols equal only at run time cannot meet in one elementwise op)."""
    d, hidden = layer.directions, layer.hidden
    batch = X.shape[0 if layer.batch_major else 1]
    state = (batch, d, hidden) if layer.batch_major else (d, batch, hidden)
    expected = {"B": (d, 2 * _GATES[layer.op] * hidden), "initial_h": state, "initial_c": state, "P": (d, 3 * hidden)}
    for name, operand in optional.items():
        if operand is not None and tuple(operand.shape) != expected[name]:
            want = ", ".join(map(str, expected[name]))
            raise Unsupported(f"{name} of shape [{', '.join(map(str, operand.shape))}], not [{want}] (X: {X.type})")


# -- building blocks ----------------------------------------------------------------------------------------------


def _linear(ctx: OnnxContext, x: Operand, weight: Operand) -> Operand:
    """x @ weight.T: an nn.dense where the weight is known at import (the engine's layers take constant weights),
    else a matmul by its transpose."""
    if weight.is_known:
        return ctx.emit("nn.dense", x, weight)
    return ctx.emit("matmul", x, ctx.emit("transpose", weight, axes=(1, 0)))


def _pick(ctx: OnnxContext, x: Operand, index: int, axis: int) -> Operand:
    """x's entry `index` along `axis`, without that axis."""
    return ctx.emit("take", x, ctx.const(index), axis=axis)


def _split(ctx: OnnxContext, x: Operand, sections: int | Sequence[int], axis: int) -> tuple[Operand, ...]:
    if sections == 1:
        return (x,)
    pieces = ctx.emit(
        "split", x, indices_or_sections=sections if isinstance(sections, int) else tuple(sections), axis=axis
    )
    return pieces if isinstance(pieces, tuple) else (pieces,)


def _step_inputs(ctx: OnnxContext, layer: _Layer, projection: Operand) -> list[tuple[Operand, ...]]:
    """Per step, per direction, that step's slice of the input projection: [batch, gates * hidden]."""
    axis = layer.time_axis
    steps = []
    for piece in _split(ctx, projection, layer.steps, axis):
        step = ctx.emit("squeeze", piece, axis=(axis,))
        steps.append(_split(ctx, step, layer.directions, 1))
    return steps


def _initial(ctx: OnnxContext, layer: _Layer, state: Operand | None, direction: int) -> Operand | None:
    """A direction's initial state, [batch, hidden]; None for zeros."""
    if state is None or _filled_with(state, 0):
        return None
    return _pick(ctx, state, direction, layer.direction_axis)


# -- one step of each cell ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Direction:
    """What every step of one direction reads: its activations, its R (GRU's split in the update and reset gates'
    rows and the candidate's where the candidate's dense reads the reset gate), GRU's Rb under linear_before_reset,
    LSTM's peepholes (P_i, P_o, P_f), and the constant 1 of the input's dtype."""

    activations: tuple[_Activation, ...]
    recurrence: tuple[Operand, ...]
    recurrence_bias: Operand | None
    peepholes: tuple[Operand, ...] | None
    one: Operand


def _plus(ctx: OnnxContext, maybe: Operand | None, x: Operand) -> Operand:
    """maybe + x, where None stands for zeros (what a zero state contributes)."""
    return x if maybe is None else ctx.emit("add", maybe, x)


def _lstm_step(ctx, layer: _Layer, cell: _Direction, x: Operand, h, c, input_forget: bool):
    """One LSTM step: (H_t, C_t) from the step's projection x [batch, 4*hidden] and (H_t-1, C_t-1) (None: zeros)."""
    f, g, h_act = cell.activations
    pre = x if h is None else _plus(ctx, _linear(ctx, h, cell.recurrence[0]), x)
    if cell.peepholes is None:  # the input, output and forget gates are one block of one activation
        block, candidate = _split(ctx, pre, (3 * layer.hidden,), 1)
        input_gate, output_gate, forget_gate = _split(ctx, layer.gate(ctx, f, block), 3, 1)
    else:
        p_input, p_output, p_forget = cell.peepholes
        input_pre, output_pre, forget_pre, candidate = _split(ctx, pre, 4, 1)
        if c is not None:
            input_pre = ctx.emit("add", input_pre, ctx.emit("multiply", p_input, c))
            forget_pre = ctx.emit("add", forget_pre, ctx.emit("multiply", p_forget, c))
        input_gate, forget_gate = layer.gate(ctx, f, input_pre), layer.gate(ctx, f, forget_pre)
    if input_forget:  # coupled: the forget gate is 1 - the input gate
        forget_gate = ctx.emit("subtract", cell.one, input_gate)
    written = ctx.emit("multiply", input_gate, layer.gate(ctx, g, candidate))
    state = written if c is None else ctx.emit("add", ctx.emit("multiply", forget_gate, c), written)
    if cell.peepholes is not None:
        output_gate = layer.gate(ctx, f, ctx.emit("add", output_pre, ctx.emit("multiply", p_output, state)))
    # clip bounds the inputs of the gates, not the cell state h() reads (as onnxruntime computes it)
    return ctx.emit("multiply", output_gate, h_act(ctx, state)), state


def _gru_step(ctx, layer: _Layer, cell: _Direction, x: Operand, h, linear_before_reset: bool):
    """One GRU step: H_t from the step's projection x [batch, 3*hidden] and H_t-1 (None: zeros)."""
    f, g = cell.activations
    x_update_reset, x_candidate = _split(ctx, x, (2 * layer.hidden,), 1)
    if linear_before_reset:  # r (.) (H_t-1 R_h^T + Rb_h): one dense of H_t-1 by all of R, with Rb as its bias
        recurrent = cell.recurrence_bias if h is None else _linear(ctx, h, cell.recurrence[0])
        if h is not None and cell.recurrence_bias is not None:
            recurrent = ctx.emit("nn.bias_add", recurrent, cell.recurrence_bias, axis=-1)
        r_update_reset, r_candidate = None, None
        if recurrent is not None:
            r_update_reset, r_candidate = _split(ctx, recurrent, (2 * layer.hidden,), recurrent.rank - 1)
        update, reset = _split(ctx, layer.gate(ctx, f, _plus(ctx, r_update_reset, x_update_reset)), 2, 1)
        reset_candidate = None if r_candidate is None else ctx.emit("multiply", reset, r_candidate)
    else:  # (r (.) H_t-1) R_h^T: the candidate's dense reads the reset gate
        r_update_reset = None if h is None else _linear(ctx, h, cell.recurrence[0])
        update, reset = _split(ctx, layer.gate(ctx, f, _plus(ctx, r_update_reset, x_update_reset)), 2, 1)
        reset_candidate = None
        if h is not None:
            reset_candidate = _linear(ctx, ctx.emit("multiply", reset, h), cell.recurrence[1])
    candidate = layer.gate(ctx, g, _plus(ctx, reset_candidate, x_candidate))
    kept = ctx.emit("multiply", ctx.emit("subtract", cell.one, update), candidate)
    return kept if h is None else ctx.emit("add", kept, ctx.emit("multiply", update, h))


def _rnn_step(ctx, layer: _Layer, cell: _Direction, x: Operand, h):
    """One RNN step: H_t from the step's projection x [batch, hidden] and H_t-1 (None: zeros)."""
    (f,) = cell.activations
    return layer.gate(ctx, f, x if h is None else _plus(ctx, _linear(ctx, h, cell.recurrence[0]), x))


# -- the layer ------------------------------------------------------------------------------------------------------


def _direction(ctx, layer: _Layer, d: int, *, R, P, recurrence_bias, linear_before_reset: bool, one) -> _Direction:
    recurrence = _pick(ctx, R, d, 0)
    parts: tuple[Operand, ...] = (recurrence,)
    if layer.op == "GRU" and not linear_before_reset:
        rows = 2 * layer.hidden, 3 * layer.hidden
        parts = tuple(
            ctx.emit("strided_slice", recurrence, begin=(begin,), end=(end,), axes=(0,))
            for begin, end in ((0, rows[0]), rows)
        )
    peepholes = None
    if P is not None and not _filled_with(P, 0):
        peepholes = _split(ctx, _pick(ctx, P, d, 0), 3, 0)
    return _Direction(layer.activations[d], parts, recurrence_bias, peepholes, one)


def _unroll(
    ctx: OnnxContext,
    layer: _Layer,
    *,
    X,
    W,
    R,
    B,
    initial_h,
    initial_c=None,
    P=None,
    input_forget: bool = False,
    linear_before_reset: bool = False,
):
    """The node's outputs (Y, Y_h, Y_c; None where nothing reads it) from the layer unrolled over its steps."""
    _check_shapes(layer, X, {"B": B, "initial_h": initial_h, "initial_c": initial_c, "P": P})
    directions, hidden = layer.directions, layer.hidden
    width = _GATES[layer.op] * hidden
    projection = _linear(ctx, X, ctx.emit("reshape", W, newshape=(directions * width, X.shape[-1])))
    recurrence_biases: list[Operand | None] = [None] * directions
    if B is not None:
        input_bias = ctx.emit("strided_slice", B, begin=(0,), end=(width,), axes=(1,))
        recurrent_bias = ctx.emit("strided_slice", B, begin=(width,), end=(2 * width,), axes=(1,))
        if layer.op == "GRU" and linear_before_reset:  # Rb_h is multiplied by the reset gate: it stays per step
            recurrence_biases = [_pick(ctx, recurrent_bias, d, 0) for d in range(directions)]
        else:
            input_bias = ctx.emit("add", input_bias, recurrent_bias)
        flat_bias = ctx.emit("reshape", input_bias, newshape=(directions * width,))
        projection = ctx.emit("nn.bias_add", projection, flat_bias, axis=-1)
    steps = _step_inputs(ctx, layer, projection)
    one = _number(ctx, 1.0, X)

    states: list[list[Operand]] = []  # per direction, H at each step, in time order
    last_h: list[Operand] = []
    last_c: list[Operand] = []
    for d, backwards in enumerate(layer.reverse):
        cell = _direction(
            ctx,
            layer,
            d,
            R=R,
            P=P,
            recurrence_bias=recurrence_biases[d],
            linear_before_reset=linear_before_reset,
            one=one,
        )
        h = _initial(ctx, layer, initial_h, d)
        c = _initial(ctx, layer, initial_c, d)
        at: dict[int, Operand] = {}
        for t in reversed(range(layer.steps)) if backwards else range(layer.steps):
            if layer.op == "LSTM":
                h, c = _lstm_step(ctx, layer, cell, steps[t][d], h, c, input_forget)
            elif layer.op == "GRU":
                h = _gru_step(ctx, layer, cell, steps[t][d], h, linear_before_reset)
            else:
                h = _rnn_step(ctx, layer, cell, steps[t][d], h)
            at[t] = h
        states.append([at[t] for t in range(layer.steps)])
        last_h.append(at[layer.steps - 1 if not backwards else 0])
        if c is not None:
            last_c.append(c)

    def used(i: int) -> bool:
        return i < len(ctx.outputs_used) and ctx.outputs_used[i]

    y = None
    if used(0):  # [seq, directions, batch, hidden], or [batch, seq, directions, hidden]: one stack, then a reshape
        ordered = [states[d][t] for t in range(layer.steps) for d in range(directions)]
        stacked = ctx.emit("stack", *ordered, axis=layer.time_axis)
        batch = X.shape[0 if layer.batch_major else 1]
        shape = (
            (batch, layer.steps, directions, hidden) if layer.batch_major else (layer.steps, directions, batch, hidden)
        )
        y = ctx.emit("reshape", stacked, newshape=shape)
    y_h = ctx.emit("stack", *last_h, axis=layer.direction_axis) if used(1) else None
    y_c = ctx.emit("stack", *last_c, axis=layer.direction_axis) if used(2) and last_c else None
    return y, y_h, y_c


@onnx_converter("LSTM", since=(7, 14, 22), check=_check("LSTM"))
def lstm(
    ctx,
    *,
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    initial_c=None,
    P=None,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    input_forget=0,
    layout=0,
):
    layer = _read(
        "LSTM",
        X=X,
        W=W,
        R=R,
        sequence_lens=sequence_lens,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        activations=activations,
        clip=clip,
        direction=direction,
        hidden_size=hidden_size,
        layout=layout,
    )
    return _unroll(
        ctx, layer, X=X, W=W, R=R, B=B, initial_h=initial_h, initial_c=initial_c, P=P, input_forget=bool(input_forget)
    )


@onnx_converter("GRU", since=(7, 14, 22), check=_check("GRU"))
def gru(
    ctx,
    *,
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    layout=0,
    linear_before_reset=0,
):
    layer = _read(
        "GRU",
        X=X,
        W=W,
        R=R,
        sequence_lens=sequence_lens,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        activations=activations,
        clip=clip,
        direction=direction,
        hidden_size=hidden_size,
        layout=layout,
    )
    return _unroll(ctx, layer, X=X, W=W, R=R, B=B, initial_h=initial_h, linear_before_reset=bool(linear_before_reset))[
        :2
    ]


@onnx_converter("RNN", since=(7, 14, 22), check=_check("RNN"))
def rnn(
    ctx,
    *,
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    layout=0,
):
    layer = _read(
        "RNN",
        X=X,
        W=W,
        R=R,
        sequence_lens=sequence_lens,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        activations=activations,
        clip=clip,
        direction=direction,
        hidden_size=hidden_size,
        layout=layout,
    )
    return _unroll(ctx, layer, X=X, W=W, R=R, B=B, initial_h=initial_h)[:2]
