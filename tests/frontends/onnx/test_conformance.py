"""ONNX's own backend node tests, through `from_onnx`, `ir.execute` and a built CPU plan.

Every op with a converter is claimed: each of its cases must pass, or match an entry of
EXPECTED_NOT_PASSING (a reviewed table: case-name pattern -> the status and reason it must end with).
An entry that matches no case fails too, so the table cannot go stale silently. And the committed
docs/onnx_conformance.md must equal what the same run renders.

Every since-version a converter registers is checked too: each case of a claimed op that passes at its own
opset is converted down (`onnx.version_converter`, else relabelled, checked by `onnx.checker`) to each older
opset that selects another since-version of its op, and compared with onnxruntime's run of that model.

The newest-opset suite (about 1,900 cases, of which about 1,000 are of claimed ops) runs once per session, in
about a minute on two cores. At the older opsets one case per (op, opset) runs by default (about 230 runs,
10 s); the full sweep (about 1,300 runs, a minute more) and the staleness check of the committed table, which
needs it, are marked `slow`.
"""

from __future__ import annotations

import pathlib
import re
import sys

import onnx
import onnxruntime
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
import onnx_conformance as conformance  # noqa: E402
from tensorforge.frontends.onnx_ops import registered_converters  # noqa: E402

# case-name pattern -> (status, reason pattern): why a case of a claimed op does not pass. Reviewed by hand.
EXPECTED_NOT_PASSING: dict[str, tuple[str, str]] = {
    # numeric types the IR has no dtype for
    r"_(uint16|uint32|uint64)(_expanded)?$": ("refused", r"UINT(16|32|64), which the IR cannot hold"),
    r"test_equal_string": ("refused", r"STRING, which the IR cannot hold"),
    r"test_cast(like)?_.*(FLOAT8(?!E4M3FN(_expanded)?$)|FLOAT4E2M1|INT4|INT2|e8m0)": (
        "refused",
        r"(FLOAT8\w*|FLOAT4E2M1|U?INT[24]), "
        r"which the IR cannot hold",
    ),
    # float8 values come from quantize; a plain cast to float8 (its rounding and saturate modes) is not mapped, and
    # the onnxruntime that would run it cannot either
    r"test_cast(like)?_.*_to_FLOAT8E4M3FN(_expanded)?$": (
        "opaque",
        r"FLOAT8E4M3FN, which the IR cannot hold as a cast",
    ),
    # quantization the IR ops do not express: blocked scales, int16, and element types the IR has no dtype for
    r"test_(de)?quantizelinear_(blocked\w*|int16)$": ("refused", r"runs through onnxruntime, which cannot load it"),
    r"test_(de)?quantizelinear_(e5m2|float4e2m1|u?int[24])$": (
        "refused",
        r"(FLOAT8E5M2|FLOAT4E2M1|U?INT[24]), which the IR cannot hold",
    ),
    # not tensors
    r"test_(identity_(opt|sequence)|if_(opt|seq))$": ("refused", r"sequences, optionals or maps"),
    # Range's function body is a Loop, which ONNX's generator writes at opset 25 (beyond onnxruntime)
    r"test_range_.*_expanded$": ("refused", r"Loop"),
    # training-time behaviour is not mapped: these run through onnxruntime
    r"test_averagepool_.*dilations": ("opaque", r"dilated average pooling"),
    r"test_batchnorm_.*_training_mode$": ("opaque", r"training mode"),
    r"test_training_dropout": ("opaque", r"dropout in training mode"),
    # MaxPool's Indices output (flat indices over N, C, H, W) has no IR op
    r"test_maxpool_with_argmax": ("opaque", r"the Indices output"),
    # a recurrent layer is unrolled only where every sequence runs the whole length, which a sequence_lens fed at run
    # time does not tell at import (this case's peepholes are covered by tests/frontends/onnx/test_onnx_recurrent.py)
    r"test_lstm_with_peepholes$": ("opaque", r"sequence_lens computed at run time"),
}


# (op, since-version) with a converter that no conformance case reaches, and why; each has a frontend test instead
NOT_REACHED: dict[tuple[str, int], str] = {
    ("GroupNormalization", 18): "onnx.checker refuses GroupNormalization-18 (deprecated), so no case converts to it",
    **{
        ("If", v): "ONNX's one tensor If case is written at opset 11; later versions only widen the types"
        for v in (13, 16, 19, 21, 23, 24, 25)
    },
}


@pytest.fixture(scope="module")
def cases():
    return conformance.collect_cases()


@pytest.fixture(scope="module")
def results(cases):
    return conformance.run_all(cases)


def _passing(results) -> set[str]:
    return {r.name for r in results if r.status == "pass"}


@pytest.fixture(scope="module")
def older_sample(cases, results):
    return conformance.run_older(cases, _passing(results), per_op_opset=1)


@pytest.fixture(scope="module")
def older_all(cases, results):
    return conformance.run_older(cases, _passing(results))


def _expected(name: str):
    matches = [(pattern, entry) for pattern, entry in EXPECTED_NOT_PASSING.items() if re.search(pattern, name)]
    assert len(matches) <= 1, f"{name} matches several expected-failure patterns: {[m[0] for m in matches]}"
    return matches[0] if matches else (None, None)


def test_every_claimed_op_passes_or_is_explained(results):
    claimed = conformance.mapped_ops()
    problems, used = [], set()
    for r in results:
        if r.op not in claimed or r.status == "pass":
            continue
        pattern, entry = _expected(r.name)
        if entry is None:
            problems.append(f"{r.name} ({r.op}): {r.status}: {r.reason}")
            continue
        used.add(pattern)
        status, reason = entry
        if r.status != status or not re.search(reason, r.reason):
            problems.append(f"{r.name} ({r.op}): {r.status}: {r.reason} — expected {status}: /{reason}/")
    assert not problems, "claimed ops with unexplained cases:\n" + "\n".join(problems)
    stale = sorted(set(EXPECTED_NOT_PASSING) - used)
    assert not stale, f"expected-failure entries that no longer match a non-passing case: {stale}"


def test_every_claimed_op_has_a_passing_case(results, older_sample):
    """A converter with no passing case is not checked by this suite: it must be covered, or not claimed."""
    passing = {r.op for r in results + older_sample if r.status == "pass"}  # And, Or, Xor, Not: converted to 11
    untested = sorted(conformance.mapped_ops() - passing)
    assert not untested, f"claimed ops without a passing conformance case: {untested}"


def _older_problems(older) -> list[str]:
    return [
        f"{r.name} @{r.opset} ({r.op}): {r.status}: {r.reason}"
        for r in older
        if r.status not in ("pass", "unconvertible")
    ]


def test_older_opsets_pass_sampled(older_sample):
    """One case per (op, older opset): converted down, it passes there as it does at its own opset."""
    problems = _older_problems(older_sample)
    assert not problems, "cases that pass at their own opset but not converted down:\n" + "\n".join(problems)


@pytest.mark.slow
def test_older_opsets_pass(older_all):
    problems = _older_problems(older_all)
    assert not problems, "cases that pass at their own opset but not converted down:\n" + "\n".join(problems)


def test_every_registered_since_version_is_checked(cases, results, older_sample):
    """Each (op, since-version) a converter registers has a passing case at an opset that selects it."""
    by_name = {c.name: c for c in cases}
    reached = set()
    for r in results:
        if r.status == "pass":  # an expanded case checks every op of its function body
            model = by_name[r.name].model
            reached |= {
                (n.op_type, conformance._since(n.op_type, conformance.default_opset(model)))
                for n in model.graph.node
                if n.domain in ("", "ai.onnx")
            }
    reached |= {(r.op, conformance._since(r.op, r.opset)) for r in older_sample if r.status == "pass"}
    registered = {(op, v) for (domain, op, v) in registered_converters() if domain == ""}
    missing = sorted(registered - reached - set(NOT_REACHED))
    assert not missing, f"registered since-versions no conformance case checks: {missing}"
    stale = sorted(set(NOT_REACHED) & reached)
    assert not stale, f"NOT_REACHED entries that are reached now: {stale}"


def test_no_unclaimed_op_fails(results):
    """Ops without a converter run through onnxruntime; the opaque path must not break them on our side."""
    failing = [f"{r.name}: {r.reason}" for r in results if r.status == "fail"]
    assert not failing, "\n".join(failing)


@pytest.mark.slow
def test_committed_table_is_fresh(results, older_all):
    doc = conformance.DOC.read_text()
    header = f"onnxruntime {onnxruntime.__version__}"
    if f"onnx {onnx.__version__}" not in doc or header not in doc:
        pytest.skip(
            f"the table was generated with other onnx/onnxruntime versions than onnx {onnx.__version__}, "
            f"{header}; regenerate it there with scripts/onnx_conformance.py"
        )
    fresh = conformance.render(results, conformance.case_source(), older_all)
    assert doc == fresh, "docs/onnx_conformance.md is stale: run python scripts/onnx_conformance.py"
