"""Run ONNX's own backend node tests through the ONNX frontend and write docs/onnx_conformance.md.

Each case is a one-op model (or, for `*_expanded` cases, the op's function body) with inputs and the
outputs ONNX's reference computed. A case is imported with `from_onnx`, executed by the IR reference
(`ir.execute`) and through a built plan (`partition_for_tensorforge(use_implicit_batch=False)` +
`build(device="cpu")`), and both results are compared with the expected outputs (TOLERANCES).

Where the cases come from: the folder `onnx/backend/test/data/node` (`<case>/model.onnx`,
`test_data_set_0/{input,output}_*.pb`) when the installed onnx ships it or `--data-dir` names one;
recent onnx wheels leave that folder out, and then the same cases are generated in memory by
`onnx.backend.test.case.node.collect_testcases()` (the code that writes that folder), with numpy's
random generator seeded so every run sees the same inputs.

Each case ends as one of
- pass: imported with no opaque node, and both executions match;
- fail: imported with no opaque node, but an execution differs or raises (the reason says which);
- opaque: some node has no mapping (the reason says why); it ran through onnxruntime instead;
- refused: `from_onnx` refused the model (opset < 11, strings, sequences, ...), with its message.

    python scripts/onnx_conformance.py                  # run everything, rewrite docs/onnx_conformance.md
    python scripts/onnx_conformance.py --ops Conv Gemm  # a few ops, printed, nothing written
    python scripts/onnx_conformance.py --check          # exit 1 when the committed table is stale
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import logging
import os
import pathlib
import re
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import numpy_helper

import tensorforge
from tensorforge import ir
from tensorforge.frontends.onnx import MIN_OPSET, OnnxImportError, from_onnx
from tensorforge.frontends.onnx_ops import lookup, mapped_versions, onnx_op_table, registered_converters

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "onnx_conformance.md"

# (rtol, atol) per dtype; integers and bool must match exactly
TOLERANCES = {
    torch.float64: (1e-6, 1e-7),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
}


@dataclass
class Case:
    name: str
    op: str  # the op under test (for an expanded case: the op whose function body it is)
    expanded: bool
    model: onnx.ModelProto
    inputs: list
    outputs: list


@dataclass
class Result:
    name: str
    op: str
    expanded: bool
    status: str  # pass | fail | opaque | refused (| unconvertible, at an older opset)
    reason: str = ""
    in_engine: bool = False  # the built plan ran every node in an engine region
    opset: int = 0  # the opset the case was converted down to; 0: the case's own


@dataclass
class OpRow:
    op: str
    results: list[Result] = field(default_factory=list)

    def count(self, status: str, expanded: bool | None = None) -> int:
        return sum(r.status == status and (expanded is None or r.expanded == expanded) for r in self.results)


# Cases whose expected values are less precise than TOLERANCES assume, with the reason (reviewed by hand)
CASE_TOLERANCES = {
    "test_averagepool_2d_ceil_last_window_starts_on_pad": ((1e-3, 1e-4), "expected values are written with 4 decimals"),
}


def to_torch(array) -> torch.Tensor:
    """numpy -> torch, bfloat16 included (numpy holds it as ml_dtypes.bfloat16, which torch cannot read)."""
    array = np.array(array)  # a copy; np.ascontiguousarray would make 0-d arrays 1-d
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
    if array.dtype.name == "float8_e4m3fn":  # ml_dtypes' float8, as bfloat16: same bits as torch's
        return torch.from_numpy(array.view(np.uint8)).view(torch.float8_e4m3fn)
    return torch.from_numpy(array)


# ---------------------------------------------------------------------------------------------
# Collecting cases
# ---------------------------------------------------------------------------------------------


def _base_name(name: str) -> str:
    return re.sub(r"_expanded(_ver\d+)?$", "", name)


def _attribute_ops(raw: list[tuple[str, onnx.ModelProto, list, list]]) -> list[Case]:
    """Name the op each case tests: a case's single node, or for `<base>_expanded` the op of `<base>`."""
    single = {name: model.graph.node[0].op_type for name, model, _, _ in raw if len(model.graph.node) == 1}
    cases = []
    for name, model, inputs, outputs in raw:
        base = _base_name(name)
        expanded = base != name
        op = single.get(base) if expanded else single.get(name)
        if op is None:  # a multi-node model that is not an expansion: name it after its last node
            op = model.graph.node[-1].op_type if model.graph.node else "?"
        cases.append(Case(name, op, expanded, model, inputs, outputs))
    return sorted(cases, key=lambda c: c.name)


def _read_pb(path: str):
    tensor = onnx.TensorProto()
    with open(path, "rb") as f:
        tensor.ParseFromString(f.read())
    return numpy_helper.to_array(tensor)


def _from_folder(folder: str) -> list[Case]:
    raw = []
    for model_path in sorted(glob.glob(os.path.join(folder, "*", "model.onnx"))):
        case_dir = os.path.dirname(model_path)
        data = os.path.join(case_dir, "test_data_set_0")
        try:
            inputs = [_read_pb(p) for p in sorted(glob.glob(os.path.join(data, "input_*.pb")), key=_pb_index)]
            outputs = [_read_pb(p) for p in sorted(glob.glob(os.path.join(data, "output_*.pb")), key=_pb_index)]
        except Exception:  # noqa: BLE001  (sequences, optionals, maps: not tensors)
            inputs, outputs = None, None
        raw.append((os.path.basename(case_dir), onnx.load(model_path), inputs, outputs))
    return _attribute_ops(raw)


def _pb_index(path: str) -> int:
    return int(re.search(r"_(\d+)\.pb$", path).group(1))


@functools.cache
def _generated() -> tuple[Case, ...]:
    from onnx.backend.test.case import node

    np.random.seed(0)  # the generators draw random inputs
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        testcases = node.collect_testcases(None)
    raw = []
    for tc in testcases:
        inputs, outputs = tc.data_sets[0]
        # a few cases hand over TensorProtos (types numpy lacks: bfloat16, float8, int4): decode them
        inputs = [numpy_helper.to_array(a) if isinstance(a, onnx.TensorProto) else a for a in inputs]
        outputs = [numpy_helper.to_array(a) if isinstance(a, onnx.TensorProto) else a for a in outputs]
        tensors = all(isinstance(a, (np.ndarray, np.generic)) for a in list(inputs) + list(outputs))
        raw.append((tc.name, tc.model, list(inputs) if tensors else None, list(outputs) if tensors else None))
    return tuple(_attribute_ops(raw))


def default_data_dir() -> str | None:
    folder = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")
    return folder if os.path.isdir(folder) else None


def collect_cases(data_dir: str | None = None, ops=None) -> list[Case]:
    folder = data_dir or default_data_dir()
    cases = _from_folder(folder) if folder else list(_generated())
    return [c for c in cases if ops is None or c.op in ops]


def case_source(data_dir: str | None = None) -> str:
    folder = data_dir or default_data_dir()
    if folder:
        return f"the node test folder of onnx {onnx.__version__}"
    return f"onnx {onnx.__version__}'s node test generators (`onnx.backend.test.case.node`, numpy seed 0)"


# ---------------------------------------------------------------------------------------------
# Running one case
# ---------------------------------------------------------------------------------------------

# Schema inputs the IR takes as attributes (shapes, axes, bounds): a test that feeds them as graph inputs
# gets them as initializers instead, as a deployed model has them (TensorRT, too, wants them at build time).
SHAPE_ARGUMENTS = {
    "shape",
    "axes",
    "pads",
    "constant_value",
    "starts",
    "ends",
    "steps",
    "repeats",
    "split",
    "sizes",
    "scales",
    "roi",
    "start",
    "limit",
    "delta",
    "K",
    "depth",
}
# If's condition too: the IR folds an If whose condition is known at import (a run-time one runs the whole If
# through onnxruntime, which the frontend tests check)
SHAPE_ARGUMENTS_BY_OP = {("ConstantOfShape", "input"), ("If", "cond"), ("CumSum", "axis")}


def freeze_shape_inputs(model: onnx.ModelProto, inputs: list) -> tuple[onnx.ModelProto, list, list[str]]:
    """Move graph inputs that only feed shape arguments into initializers (test values unchanged)."""
    opsets = {o.domain or "": o.version for o in model.opset_import}
    feeds_shape: dict[str, bool] = {}
    for node in model.graph.node:
        try:
            schema = onnx.defs.get_schema(node.op_type, opsets.get(node.domain or "", 1), node.domain or "")
        except onnx.defs.SchemaError:
            continue
        formal = [p.name for p in schema.inputs]
        for i, name in enumerate(node.input):
            if not name:
                continue
            param = formal[min(i, len(formal) - 1)] if formal else ""
            shape_like = param in SHAPE_ARGUMENTS or (node.op_type, param) in SHAPE_ARGUMENTS_BY_OP
            feeds_shape[name] = feeds_shape.get(name, True) and shape_like
    frozen = [v.name for v in model.graph.input if feeds_shape.get(v.name)]
    if not frozen:
        return model, inputs, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep_inputs, keep_values = [], []
    for v, value in zip(model.graph.input, inputs):
        if v.name in frozen:
            out.graph.initializer.append(numpy_helper.from_array(np.array(value), v.name))
        else:
            keep_inputs.append(v)
            keep_values.append(value)
    del out.graph.input[:]
    out.graph.input.extend(keep_inputs)
    return out, keep_values, frozen


def _short(text: str, limit: int = 150) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    text = "".join(
        line if i == 0 else (" " if lines[i - 1].endswith(":") else "; ") + line for i, line in enumerate(lines)
    )
    text = re.sub(r"0x[0-9a-f]+", "0x…", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compare(actual: torch.Tensor, expected: np.ndarray, tolerance: tuple[float, float] | None = None) -> str | None:
    """None when actual matches expected (dtype, shape, values within TOLERANCES), else what differs."""
    want = to_torch(expected)
    if actual.dtype != want.dtype:
        return f"dtype {str(actual.dtype).removeprefix('torch.')}, expected {str(want.dtype).removeprefix('torch.')}"
    if tuple(actual.shape) != tuple(want.shape):
        return f"shape {tuple(actual.shape)}, expected {tuple(want.shape)}"
    actual = actual.detach().cpu()
    if actual.dtype not in TOLERANCES:
        return None if torch.equal(actual, want) else "values differ (exact match required)"
    rtol, atol = tolerance or TOLERANCES[actual.dtype]
    if torch.allclose(actual, want, rtol=rtol, atol=atol, equal_nan=True):
        return None
    diff = (actual.double() - want.double()).abs().nan_to_num(float("inf")).max().item()
    return f"values differ (max abs error {diff:.1g}; rtol {rtol:g}, atol {atol:g})"


def _compare_all(actual, expected, where: str, tolerance=None) -> str | None:
    if len(actual) != len(expected):
        return f"{where}: {len(actual)} outputs, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        problem = compare(a, e, tolerance)
        if problem:
            return f"{where}: output {i} {problem}"
    return None


def _run_plan(graph: ir.Graph, inputs):
    """The outputs of a built CPU plan, and whether every node ran in an engine region."""
    graph, config = tensorforge.partition_for_tensorforge(graph, use_implicit_batch=False)
    module = tensorforge.build(graph, config, device="cpu")
    out = module(*inputs)
    report = config.report
    return tuple(out) if isinstance(out, (tuple, list)) else (out,), report.offloaded_nodes == report.total_nodes


def run_case(case: Case, plan: bool = True) -> Result:
    result = functools.partial(Result, case.name, case.op, case.expanded)
    if case.inputs is None:
        return result("refused", "inputs or outputs are sequences, optionals or maps, not tensors")
    model, case_inputs, _ = freeze_shape_inputs(case.model, case.inputs)
    try:
        graph = from_onnx(model)
    except OnnxImportError as exc:
        return result("refused", _short(exc))
    except Exception as exc:  # noqa: BLE001  (an import bug: report it as a failure)
        return result("fail", _short(f"import raised {type(exc).__name__}: {exc}"))
    inputs = [to_torch(a) for a in case_inputs]
    tolerance = CASE_TOLERANCES.get(case.name, (None,))[0]
    opaque = graph.opaque_nodes()
    in_engine = False
    try:
        problem = _compare_all(ir.execute(graph, *inputs), case.outputs, "reference", tolerance)
        if problem is None and plan and not opaque:
            outputs, in_engine = _run_plan(graph, inputs)
            problem = _compare_all(outputs, case.outputs, "plan", tolerance)
    except Exception as exc:  # noqa: BLE001
        problem = _short(f"{type(exc).__name__}: {exc}")
    if opaque:  # not a mapping of ours; what onnxruntime made of it is noted, not counted
        reasons = sorted({f"{n.op.removeprefix('onnx.')}: {n.attrs.get('reason', '')}" for n in opaque})
        # no numbers here: random ops (training-mode Dropout) would make the table differ from run to run
        note = (
            ""
            if not problem
            else (
                " (onnxruntime's result differs from the expected outputs)"
                if "values differ" in problem
                else f" (onnxruntime: {problem})"
            )
        )
        return result("opaque", _short("; ".join(reasons) + note))
    return result("fail", _short(problem)) if problem else result("pass", in_engine=in_engine)


def run_all(cases: list[Case], plan: bool = True, progress: bool = False) -> list[Result]:
    logging.getLogger("tensorforge").setLevel(logging.ERROR)  # every opaque case would warn
    results = []
    for i, case in enumerate(cases):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            torch.manual_seed(0)
            results.append(run_case(case, plan=plan))
        if progress and (i + 1) % 200 == 0:
            print(f"  {i + 1}/{len(cases)} cases", file=sys.stderr)
    return results


# ---------------------------------------------------------------------------------------------
# Older opsets: every since-version a converter registers, reached by converting the cases down
# ---------------------------------------------------------------------------------------------


def default_opset(model: onnx.ModelProto) -> int:
    return max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [0])


def _since(op: str, opset: int) -> int | None:
    try:
        return onnx.defs.get_schema(op, opset, "").since_version
    except onnx.defs.SchemaError:
        return None


def older_opsets(case: Case) -> list[int]:
    """The opsets below the case's own that select another since-version of its op with a converter: the
    lowest opset (at least MIN_OPSET) that selects each registered since-version. A case written at an opset
    below MIN_OPSET (And, Or, Xor, Not: opset 7) is converted up to MIN_OPSET instead."""
    own = default_opset(case.model)
    if own < MIN_OPSET:
        return [MIN_OPSET] if lookup(case.op, "", _since(case.op, MIN_OPSET) or 0) is not None else []
    own_since = _since(case.op, own)
    targets = {max(v, MIN_OPSET) for v in mapped_versions(case.op)}
    by_since = {}
    for opset in sorted(targets):
        since = _since(case.op, opset)
        if opset < own and since is not None and since != own_since:
            by_since.setdefault(since, opset)
    return sorted(by_since.values())


class NotConvertible(Exception):
    pass


def at_opset(model: onnx.ModelProto, opset: int) -> tuple[onnx.ModelProto, str]:
    """The model at `opset`: converted down by `onnx.version_converter` as far as it goes (it lacks many adapters,
    mostly for versions that only widened the types), the rest of the way relabelled (up: converted); either way
    the result must pass `onnx.checker.check_model(full_check=True)` at `opset`. Returns (model, how)."""
    own = default_opset(model)
    for reached in range(opset, own + 1) if opset <= own else [opset]:  # up (from opset 7): converted only
        try:
            out = onnx.version_converter.convert_version(model, reached) if reached != own else _copy(model)
            break
        except Exception:  # noqa: BLE001  (a missing adapter: try from one opset higher)
            continue
    else:
        raise NotConvertible(f"onnx.version_converter cannot convert opset {own} to {opset}")
    how = "converted" if reached == opset else f"converted to {reached}, relabelled" if reached < own else "relabelled"
    if reached != opset:
        for o in out.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = opset
        _fill_required_inputs(out, opset)
    out.ir_version = max(onnx.helper.find_min_ir_version_for(list(out.opset_import), ignore_unknown=True), 7)
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as exc:  # noqa: BLE001  (the checker's message says what is newer than `opset`)
        checker = re.sub(r"\s*==> Context:.*", "", str(exc), flags=re.S).removeprefix("[ShapeInferenceError] ")
        raise NotConvertible(_short(f"{how}: {checker}", 140)) from None
    return out, how


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _fill_required_inputs(model: onnx.ModelProto, opset: int) -> None:
    """Resize-11 requires `roi` and `scales` (optional from 13 on); exporters of opset 11 feed empty tensors."""
    if opset >= 13:
        return
    for node in model.graph.node:
        if node.op_type == "Resize":
            for i in (1, 2):
                if i < len(node.input) and not node.input[i]:
                    node.input[i] = f"{node.output[0]}_empty_{i}"
                    model.graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), node.input[i]))


def _onnxruntime_outputs(model: onnx.ModelProto, inputs: list) -> list | None:
    """onnxruntime's outputs for the downgraded model, or None when it has no kernel for it."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    try:
        session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feeds = {v.name: np.asarray(a) for v, a in zip(session.get_inputs(), inputs)}
        return session.run(None, feeds)
    except Exception:  # noqa: BLE001
        return None


def run_case_at(case: Case, opset: int) -> Result:
    """One case converted down to `opset`, imported, run by the IR reference and compared with onnxruntime's run
    of the same downgraded model (with ONNX's expected outputs where onnxruntime has no kernel for it)."""
    result = functools.partial(Result, case.name, case.op, case.expanded, opset=opset)
    if case.inputs is None:
        return result("refused", "inputs or outputs are sequences, optionals or maps, not tensors")
    model, case_inputs, _ = freeze_shape_inputs(case.model, case.inputs)
    try:
        model, _how = at_opset(model, opset)
    except NotConvertible as exc:
        return result("unconvertible", str(exc))
    expected = _onnxruntime_outputs(model, case_inputs)
    if expected is None:
        expected = case.outputs
    try:
        graph = from_onnx(model)
    except OnnxImportError as exc:
        return result("refused", _short(exc))
    except Exception as exc:  # noqa: BLE001
        return result("fail", _short(f"import raised {type(exc).__name__}: {exc}"))
    opaque = graph.opaque_nodes()
    if opaque:
        return result(
            "opaque",
            _short("; ".join(sorted({f"{n.op.removeprefix('onnx.')}: {n.attrs.get('reason', '')}" for n in opaque}))),
        )
    tolerance = CASE_TOLERANCES.get(case.name, (None,))[0]
    try:
        actual = ir.execute(graph, *[to_torch(a) for a in case_inputs])
    except Exception as exc:  # noqa: BLE001
        return result("fail", _short(f"{type(exc).__name__}: {exc}"))
    problem = _compare_all(actual, expected, "reference", tolerance)
    if problem and expected is not case.outputs and _compare_all(actual, case.outputs, "", tolerance) is None:
        # onnxruntime departs from ONNX's reference here (it does at every opset): the spec's values pass
        return result("pass", "matches ONNX's expected outputs, from which onnxruntime's differ")
    return result("fail", _short(problem)) if problem else result("pass")


def run_older(
    cases: list[Case], passing: set[str], per_op_opset: int | None = None, progress: bool = False
) -> list[Result]:
    """Every non-expanded case of a mapped op that passes at its own opset (`passing`: their names; or that is
    written below MIN_OPSET), at each of its older opsets. With `per_op_opset`, a sample: per (op, opset), the
    first that many cases (by name) that convert (unconvertible ones are recorded but not counted)."""
    logging.getLogger("tensorforge").setLevel(logging.ERROR)
    mapped = mapped_ops()
    results, taken = [], collections.Counter()
    for case in cases:
        if (
            case.expanded
            or case.op not in mapped
            or (case.name not in passing and default_opset(case.model) >= MIN_OPSET)
        ):
            continue
        for opset in older_opsets(case):
            if per_op_opset is not None and taken[(case.op, opset)] >= per_op_opset:
                continue
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                torch.manual_seed(0)
                results.append(run_case_at(case, opset))
            taken[(case.op, opset)] += results[-1].status != "unconvertible"
            if progress and len(results) % 200 == 0:
                print(f"  {len(results)} older-opset runs", file=sys.stderr)
    return results


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def mapped_ops() -> set[str]:
    return {op for (domain, op, _v) in registered_converters() if domain == ""}


def _notes(row: OpRow) -> str:
    notes = []
    for r in row.results:
        if r.status == "fail":
            notes.append(f"FAIL `{r.name}`: {r.reason}")
    for status in ("opaque", "refused"):
        reasons = collections.Counter(r.reason for r in row.results if r.status == status)
        for reason, count in sorted(reasons.items()):
            notes.append(f"{status} ×{count}: {reason}")
    return "<br>".join(n.replace("|", "\\|") for n in notes)


def _older_section(older: list[Result], newest: list[Result]) -> list[str]:
    """Per op, per older opset: passing / converted cases; what did not pass, in the notes."""
    opsets = sorted({r.opset for r in older})
    by_op: dict[str, list[Result]] = collections.defaultdict(list)
    for r in older:
        by_op[r.op].append(r)
    statuses = ("pass", "fail", "opaque", "refused", "unconvertible")
    lines = [
        "## Older opsets",
        "",
        "Each non-expanded case of a mapped op that passes above is also run at every older opset that selects "
        f"another since-version of its op with a converter (the lowest opset selecting it, at least {MIN_OPSET}). "
        "The case is converted down by `onnx.version_converter` as far as it has adapters (it lacks most of those "
        "for versions that only widened the types) and relabelled the rest of the way (Resize below opset 13 gets "
        "the empty `roi`/`scales` tensors its exporters write); the result must pass "
        "`onnx.checker.check_model(full_check=True)` at that opset, else it is *unconvertible* there: what it "
        "tests is newer than the opset (an attribute, an input, a type). A converted case is imported, run by the "
        "IR reference and compared, with the tolerances above, with onnxruntime's run of the downgraded model "
        "(where onnxruntime has no kernel for it, or departs from ONNX's reference, with ONNX's expected outputs: "
        "the notes say so).",
        "",
        "| opset | runs | " + " | ".join(statuses) + " |",
        "|---|---|" + "---|" * len(statuses),
    ]
    for opset in opsets:
        at = [r for r in older if r.opset == opset]
        counts = collections.Counter(r.status for r in at)
        lines.append(f"| {opset} | {len(at)} | " + " | ".join(str(counts[st]) for st in statuses) + " |")
    lines += [
        "",
        "Cells: passing / converted cases (unconvertible ones left out); *newest*: the same non-expanded "
        "cases at their own opsets, from the table above.",
        "",
        "| op | newest | " + " | ".join(map(str, opsets)) + " | notes |",
        "|---|---|" + "---|" * (len(opsets) + 1),
    ]
    for op in sorted(by_op, key=str.lower):
        own = [r for r in newest if r.op == op and not r.expanded]
        cells = [f"{sum(r.status == 'pass' for r in own)}/{len(own)}"]
        for opset in opsets:
            at = [r for r in by_op[op] if r.opset == opset]
            converted = [r for r in at if r.status != "unconvertible"]
            cells.append(f"{sum(r.status == 'pass' for r in converted)}/{len(converted)}" if at else "")
        notes = [
            f"{r.status.upper() if r.status == 'fail' else r.status} `{r.name}` @{r.opset}: {r.reason}"
            for r in by_op[op]
            if r.status in ("fail", "opaque", "refused")
        ]
        grouped = collections.defaultdict(list)  # the same note at several opsets: one line
        for r in by_op[op]:
            if r.status == "unconvertible":
                grouped[f"unconvertible: {r.reason}"].append(r.opset)
            elif r.status == "pass" and r.reason:
                grouped[f"`{r.name}` {r.reason}"].append(r.opset)
        for note, at in sorted(grouped.items()):
            where = ", ".join(f"{o}" + (f" ×{c}" if c > 1 else "") for o, c in sorted(collections.Counter(at).items()))
            notes.append(f"{note} (@{where})")
        lines.append(
            f"| {op} | " + " | ".join(cells) + " | " + "<br>".join(n.replace("|", "\\|") for n in notes) + " |"
        )
    return lines


def render(results: list[Result], source: str, older: list[Result] | None = None) -> str:
    rows: dict[str, OpRow] = {}
    for r in results:
        rows.setdefault(r.op, OpRow(r.op)).results.append(r)
    totals = collections.Counter(r.status for r in results)
    mapped = mapped_ops()
    restrictions = {r["op"]: r["restriction"] for r in onnx_op_table() if r["domain"] == "ai.onnx"}
    covered = [op for op in rows if op in mapped]
    clean = [op for op in covered if rows[op].count("fail") == 0 and rows[op].count("pass") > 0]
    lines = [
        "# ONNX conformance: ONNX's backend node tests through `from_onnx`",
        "",
        "Generated by `scripts/onnx_conformance.py` — do not edit; `tests/frontends/onnx/test_conformance.py` "
        "fails when this file is stale.",
        "",
        f"Cases: {source}; onnxruntime {onnxruntime.__version__} runs the opaque nodes. "
        "Each case is imported, run by the IR reference (`ir.execute`) and through a built CPU plan "
        "(`partition_for_tensorforge(use_implicit_batch=False)` + `build`), and compared with ONNX's expected "
        "outputs: float32 rtol 1e-4 / atol 1e-5, float16 1e-3 / 1e-3, float64 1e-6 / 1e-7, integers and "
        "bool exactly; "
        + "; ".join(f"`{name}` {tol[0]:g} / {tol[1]:g} ({why})" for name, (tol, why) in sorted(CASE_TOLERANCES.items()))
        + ".",
        "",
        "Graph inputs that only feed shape arguments (Reshape's `shape`, `axes`, `pads`, Slice's bounds, Resize's "
        "`scales`/`sizes`, Range's bounds, ...) are given as initializers with the test's values: the IR takes "
        "these as attributes, known when the model is imported, as in exported models (TensorRT too wants "
        "them at build time). Fed at run time, such a node would run through onnxruntime. So is If's `cond`: "
        "an If whose condition is known at import becomes its taken branch; one decided at run time runs "
        "through onnxruntime as one node.",
        "",
        "- **pass**: no opaque node, both executions match (*engine*: of these, the cases whose plan ran every "
        "node in an engine region rather than falling back to PyTorch; the engine takes only constant weights, "
        "so Conv, ConvTranspose and BatchNormalization cases, whose weights are graph inputs here, run in "
        "PyTorch, as do graphs that fold to a constant);",
        "- **fail**: no opaque node, but an execution differs or raises (the reason says which);",
        "- **opaque**: a node has no mapping (reason given); it ran through onnxruntime instead and matched;",
        "- **refused**: `from_onnx` refused the model (opset < 11, string or sequence types, ...).",
        "",
        "`*_expanded` cases (the op's ONNX function body, built from other ops) count under their op, in "
        "the *expanded* columns.",
        "",
        "## Totals",
        "",
        f"- cases: {len(results)} — pass {totals['pass']}, fail {totals['fail']}, opaque {totals['opaque']}, "
        f"refused {totals['refused']}",
        f"- ops with a converter: {len(mapped)}; with test cases here: {len(covered)}; all their mapped cases "
        f"passing: {len(clean)}",
        f"- ops in the test data: {len(rows)}",
        "",
        "## Per op",
        "",
        "| op | mapped versions | restrictions | pass | engine | fail | opaque | refused "
        "| expanded pass / fail / opaque | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for op in sorted(rows, key=str.lower):
        row = rows[op]
        versions = ", ".join(map(str, mapped_versions(op))) or "—"
        restriction = restrictions.get(op, "").replace("|", "\\|")
        lines.append(
            f"| {op} | {versions} | {restriction} | {row.count('pass', False)} | "
            f"{sum(r.in_engine for r in row.results if not r.expanded)} | {row.count('fail', False)} | "
            f"{row.count('opaque', False)} | {row.count('refused')} | {row.count('pass', True)} / "
            f"{row.count('fail', True)} / {row.count('opaque', True)} | {_notes(row)} |"
        )
    if older:
        lines += [""] + _older_section(older, results)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="a folder of node tests (<case>/model.onnx + test_data_set_0)")
    parser.add_argument("--ops", nargs="*", help="only these ops (prints the table, writes nothing)")
    parser.add_argument("--output", default=str(DOC), help="where to write the table")
    parser.add_argument("--check", action="store_true", help="exit 1 when the table at --output is stale")
    parser.add_argument("--no-plan", action="store_true", help="skip the built-plan execution")
    parser.add_argument("--no-older", action="store_true", help="skip the older opsets")
    args = parser.parse_args(argv)
    cases = collect_cases(args.data_dir, set(args.ops) if args.ops else None)
    results = run_all(cases, plan=not args.no_plan, progress=True)
    older = None if args.no_older else run_older(cases, {r.name for r in results if r.status == "pass"}, progress=True)
    text = render(results, case_source(args.data_dir), older)
    if args.ops:
        print(text)
        return 0
    if args.check:
        current = pathlib.Path(args.output).read_text() if os.path.exists(args.output) else ""
        if current != text:
            print(f"{args.output} is stale: run python scripts/onnx_conformance.py", file=sys.stderr)
            return 1
        return 0
    pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.output).write_text(text)
    totals = collections.Counter(r.status for r in results)
    print(f"wrote {args.output}: {len(results)} cases, " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
