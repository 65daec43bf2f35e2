"""Resize: every mode and coordinate transformation, exactly, as one small matrix per resized axis.

ONNX Resize is separable: along each resized axis every output element is a fixed weighted sum of
input elements (one for nearest, two for linear, four for cubic, more with antialiasing). The weights
depend only on sizes and attributes, so they are computed here, at import, following the ONNX
reference implementation step by step. Then:

- where the weights equal what PyTorch's interpolation computes (the common cases: nearest with
  asymmetric/floor, nearest_exact, bilinear, bicubic with or without align_corners) the node becomes
  `image.resize2d`, which the engine runs as one layer;
- otherwise nearest becomes a `take` of constant indices per axis (exact for every dtype), and
  linear/cubic an `nn.dense` with the constant weight matrix along that axis.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ...ir import SymExpr
from ...ir.types import FLOAT_DTYPES, bind_dim
from .context import Operand, normalize_axis
from .registry import Unsupported, onnx_converter

_MODES = ("nearest", "linear", "cubic")


def _nearest_coeffs(ratio: float, mode: str) -> list[float]:
    if float(ratio).is_integer():
        return [0.0, 1.0]
    if mode == "round_prefer_floor":
        return [float(ratio <= 0.5), float(ratio > 0.5)]
    if mode == "round_prefer_ceil":
        return [float(ratio < 0.5), float(ratio >= 0.5)]
    if mode == "floor":
        return [1.0, 0.0]
    if mode == "ceil":
        return [0.0, 1.0]
    raise Unsupported(f"nearest_mode {mode!r}")


def _cubic_coeffs(ratio: float, a: float) -> list[float]:
    r = ratio
    return [
        ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
        ((a + 2) * r - (a + 3)) * r * r + 1,
        ((a + 2) * (1 - r) - (a + 3)) * (1 - r) * (1 - r) + 1,
        ((a * ((1 - r) + 1) - 5 * a) * ((1 - r) + 1) + 8 * a) * ((1 - r) + 1) - 4 * a,
    ]


def _cubic_coeffs_antialias(ratio: float, scale: float, a: float) -> list[float]:
    scale = min(scale, 1.0)

    def kernel(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    start = int(np.floor(-2 / scale) + 1)
    coeffs = [kernel(scale * (i - ratio)) for i in range(start, 2 - start)]
    return [c / sum(coeffs) for c in coeffs]


def _linear_coeffs_antialias(ratio: float, scale: float) -> list[float]:
    scale = min(scale, 1.0)
    start = int(np.floor(-1 / scale) + 1)
    args = (np.arange(start, start + 2 - 2 * start) - ratio) * scale
    coeffs = np.clip(1 - np.abs(args), 0, 1)
    return list(coeffs / coeffs.sum())


def _source_coords(mode: str, out_len: int, in_len: int, scale: float, roi) -> tuple[np.ndarray, np.ndarray | None]:
    """Where each output position samples the input (the ONNX coordinate transformation)."""
    y = np.arange(out_len, dtype=np.float64)
    out_width = scale * in_len
    if mode == "align_corners":
        return (np.zeros(out_len) if out_width == 1 else y * (in_len - 1) / (out_width - 1)), None
    if mode == "asymmetric":
        return y / scale, None
    if mode == "pytorch_half_pixel":
        return (np.full(out_len, -0.5) if out_width == 1 else (y + 0.5) / scale - 0.5), None
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    if mode == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / out_width)
        return offset + (y + 0.5) / scale - 0.5, None
    if mode == "tf_half_pixel_for_nn":  # Resize-11 only
        return (y + 0.5) / scale, None
    if mode == "tf_crop_and_resize":
        if roi is None:
            raise Unsupported("tf_crop_and_resize without a roi")
        start, end = roi
        if out_width == 1:
            x = np.full(out_len, (end - start) * (in_len - 1) / 2)
        else:
            x = y * (end - start) * (in_len - 1) / (out_width - 1)
        x = x + start * (in_len - 1)
        return x, (x < 0) | (x > in_len - 1)
    raise Unsupported(f"coordinate_transformation_mode {mode!r}")


def axis_weights(
    in_len: int,
    out_len: int,
    scale: float,
    *,
    mode: str,
    coordinate_mode: str,
    nearest_mode: str,
    cubic_a: float,
    exclude_outside: bool,
    antialias: bool,
    roi=None,
):
    """(out_len, in_len) weight matrix of one axis, and the mask of extrapolated outputs (or None)."""
    x, outside = _source_coords(coordinate_mode, out_len, in_len, scale, roi)
    base = np.floor(x)
    ratios = np.where(x == base, 1.0, x - base)  # the reference prefers the left neighbour: ratio in (0, 1]
    if mode == "nearest":
        coeffs = np.array([_nearest_coeffs(r, nearest_mode) for r in ratios])
    elif mode == "linear":
        coeffs = np.array([_linear_coeffs_antialias(r, scale) if antialias else [1 - r, r] for r in ratios])
    else:
        coeffs = np.array(
            [_cubic_coeffs_antialias(r, scale, cubic_a) if antialias else _cubic_coeffs(r, cubic_a) for r in ratios]
        )
    n = coeffs.shape[1]
    # the n input positions nearest to x (ties to the smaller), in edge-padded coordinates
    pad = int(math.ceil(n / 2))
    padded = x + pad
    floor = np.floor(padded)
    frac = padded - floor
    if n % 2 == 0:
        offset = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        offset = np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    neighbours = (floor + offset).astype(np.int64)[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        coeffs = np.where((neighbours < 0) | (neighbours >= in_len), 0.0, coeffs)
        total = coeffs.sum(axis=1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    weights = np.zeros((out_len, in_len))
    clamped = np.clip(neighbours, 0, in_len - 1)  # edge padding = clamping the index
    for j in range(n):
        np.add.at(weights, (np.arange(out_len), clamped[:, j]), coeffs[:, j])
    return weights, outside


def _torch_weights(in_len: int, out_len: int, method: str, align_corners: bool) -> np.ndarray:
    """The weights PyTorch's interpolation (given the output size) uses along one axis."""
    eye = torch.eye(in_len, dtype=torch.float64)
    if method == "cubic":
        out = F.interpolate(
            eye.reshape(1, in_len, in_len, 1), size=(out_len, 1), mode="bicubic", align_corners=align_corners
        ).reshape(in_len, out_len)
    else:
        mode = {"nearest": "nearest", "nearest_exact": "nearest-exact", "linear": "linear"}[method]
        out = F.interpolate(
            eye.reshape(1, in_len, in_len),
            size=out_len,
            mode=mode,
            align_corners=align_corners if method == "linear" else None,
        ).reshape(in_len, out_len)
    return out.T.numpy()


_TORCH_METHODS = {
    "nearest": [("nearest", False), ("nearest_exact", False)],
    "linear": [("linear", False), ("linear", True)],
    "cubic": [("cubic", False), ("cubic", True)],
}


def _as_torch_resize(mode: str, plans: dict[int, tuple], rank: int):
    """(method, align_corners) when image.resize2d computes exactly these weights, else None."""
    if rank != 4 or set(plans) - {2, 3} or any(p[1] is not None for p in plans.values()):
        return None
    for method, align in _TORCH_METHODS[mode]:
        if all(
            np.allclose(_torch_weights(w.shape[1], w.shape[0], method, align), w, atol=1e-9) for w, _ in plans.values()
        ):
            return method, align
    return None


def _resize_check(*, mode, keep_aspect_ratio_policy="stretch", **_):
    """Modes nearest, linear, cubic; resized axes need static sizes."""
    if mode not in _MODES:
        return f"mode {mode!r}"
    if keep_aspect_ratio_policy not in ("stretch", "not_larger", "not_smaller"):
        return f"keep_aspect_ratio_policy {keep_aspect_ratio_policy!r}"
    return None


def _optional_floats(x: Operand | None) -> list[float] | None:
    if x is None or (x.const is not None and x.const.numel() == 0):
        return None
    if x.const is None:
        raise Unsupported("resize scales, sizes or roi computed at run time")
    return [float(v) for v in x.const.reshape(-1).tolist()]


def _output_plan(ctx, X, scales, sizes, axes, policy):
    """Per axis: (output size, scale factor), as the reference computes them."""
    rank = X.rank
    axes = [normalize_axis(a, rank) for a in axes] if axes else list(range(rank))
    scale_list, size_list = _optional_floats(scales), None
    if sizes is not None and not (sizes.const is not None and sizes.const.numel() == 0):
        size_list = list(ctx.ints(sizes, "resize sizes"))
    dims = list(X.shape)
    out, factor = list(dims), [1.0] * rank
    if size_list is not None:
        for a, s in zip(axes, size_list):
            if isinstance(dims[a], SymExpr) or isinstance(s, SymExpr):
                if s != dims[a]:
                    raise Unsupported(f"resizing symbolic axis {a} ({dims[a]}) to the size {s} (give scales)")
                continue
            out[a], factor[a] = s, s / dims[a]
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            common = pick(factor[a] for a in axes)
            for a in axes:
                factor[a], out[a] = common, int(common * dims[a] + 0.5)
    elif scale_list is not None:
        for a, s in zip(axes, scale_list):
            if s == 1.0:
                continue
            if isinstance(dims[a], SymExpr):
                if not (s >= 1 and float(s).is_integer()):
                    raise Unsupported(f"resizing symbolic axis {a} ({dims[a]}) by the scale {s}, not a whole number")
                out[a], factor[a] = dims[a] * int(s), s
                continue
            out[a], factor[a] = int(s * dims[a]), s
    else:
        raise Unsupported("Resize needs scales or sizes")
    return out, factor


@onnx_converter(
    "Resize",
    since=(11, 13, 18, 19),
    check=_resize_check,
    note="roi, scales and sizes known at import; antialias only for linear and cubic",
)
def resize(
    ctx,
    *,
    X,
    roi=None,
    scales=None,
    sizes=None,
    mode,
    coordinate_transformation_mode,
    cubic_coeff_a,
    exclude_outside,
    extrapolation_value,
    nearest_mode,
    antialias=0,
    axes=None,
    keep_aspect_ratio_policy="stretch",
):
    reason = _resize_check(mode=mode, keep_aspect_ratio_policy=keep_aspect_ratio_policy)
    if reason:
        raise Unsupported(reason)
    if antialias and mode == "nearest":
        raise Unsupported("antialias with nearest")
    out, factor = _output_plan(ctx, X, scales, sizes, axes, keep_aspect_ratio_policy)
    roi_values = _optional_floats(roi) if coordinate_transformation_mode == "tf_crop_and_resize" else None
    rank = X.rank
    weights = dict(
        mode=mode,
        coordinate_mode=coordinate_transformation_mode,
        nearest_mode=nearest_mode,
        cubic_a=cubic_coeff_a,
        exclude_outside=bool(exclude_outside),
        antialias=bool(antialias),
    )
    if any(isinstance(X.shape[a], SymExpr) for a in range(rank) if out[a] != X.shape[a]):
        return _symbolic_resize(ctx, X, out, factor, roi_values, weights)  # a symbolic axis is resized
    if roi_values is not None and axes:
        full = [0.0] * rank + [1.0] * rank
        for i, a in enumerate(normalize_axis(a, rank) for a in axes):
            full[a], full[rank + a] = roi_values[i], roi_values[len(axes) + i]
        roi_values = full
    plans = {}
    for a in range(rank):
        trivial_roi = roi_values is None or (roi_values[a] == 0.0 and roi_values[a + rank] == 1.0)
        if out[a] == X.shape[a] and math.isclose(factor[a], 1.0) and trivial_roi:
            continue
        pair = None if roi_values is None else (roi_values[a], roi_values[a + rank])
        plans[a] = axis_weights(X.shape[a], out[a], factor[a], roi=pair, **weights)
    if not plans:
        return X
    fast = _as_torch_resize(mode, plans, rank) if X.dtype in FLOAT_DTYPES else None
    if fast is not None:
        return ctx.emit("image.resize2d", X, size=(out[2], out[3]), method=fast[0], align_corners=fast[1])
    y = X
    for a, (weights, outside) in plans.items():
        y = _resize_axis(ctx, y, a, weights, mode)
        if outside is not None and outside.any():
            mask = torch.from_numpy(outside).reshape((-1,) + (1,) * (rank - a - 1))
            y = ctx.emit("where", ctx.const(mask), ctx.const(float(extrapolation_value), dtype=y.dtype), y)
    return y


def _symbolic_resize(ctx, X, out: list, factor: list[float], roi_values, weights: dict):
    """A resize over symbolic sizes (integer scales): only as `image.resize2d`, whose size is the expression, and only
    where PyTorch's interpolation computes ONNX's weights at every size (checked at two probe bindings: the weights
    of an integer scale repeat with the input, so two sizes that agree decide it)."""
    moved = [a for a in range(X.rank) if out[a] != X.shape[a]]
    if X.rank != 4 or set(moved) - {2, 3} or roi_values is not None or X.dtype not in FLOAT_DTYPES:
        raise Unsupported(
            f"resizing {X.shape} to {tuple(out)}: symbolic sizes resize only as 4-d float data along H and W "
            f"without a roi"
        )
    found = set()
    for i in range(2):
        env = ctx.probe_env(i)
        sizes_in = [bind_dim(d, env) for d in X.shape]
        sizes_out = [bind_dim(d, env) for d in out]
        plans = {a: axis_weights(sizes_in[a], sizes_out[a], factor[a], roi=None, **weights) for a in moved}
        found.add(_as_torch_resize(weights["mode"], plans, X.rank))
    (fast,) = found if len(found) == 1 else (None,)
    if fast is None:
        raise Unsupported(
            f"resizing {X.shape} to {tuple(out)} ({weights['mode']}, {weights['coordinate_mode']}): PyTorch's "
            f"interpolation computes other weights, and a weight matrix needs static sizes"
        )
    return ctx.emit("image.resize2d", X, size=(out[2], out[3]), method=fast[0], align_corners=fast[1])


def _resize_axis(ctx, x, axis: int, weights: np.ndarray, mode: str):
    if mode == "nearest":  # one weight of 1 per row: pick that input element
        return ctx.emit("take", x, ctx.const(torch.from_numpy(weights.argmax(axis=1))), axis=axis)
    if x.dtype not in FLOAT_DTYPES:
        raise Unsupported(f"{mode} resize of {x.dtype} data")
    matrix = ctx.const(torch.from_numpy(weights), dtype=x.dtype)
    last = x.rank - 1
    if axis == last:
        return ctx.emit("nn.dense", x, matrix)
    perm = tuple(i for i in range(x.rank) if i != axis) + (axis,)
    moved = ctx.emit("nn.dense", ctx.emit("transpose", x, axes=perm), matrix)
    back = tuple(perm.index(i) for i in range(x.rank))
    return ctx.emit("transpose", moved, axes=back)
