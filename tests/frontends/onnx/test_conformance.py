"""ONNX's own backend node tests, through `from_onnx`, `ir.execute` and a built CPU plan.

Every op with a converter is claimed: each of its cases must pass, or match an entry of
EXPECTED_NOT_PASSING (a reviewed table: case-name pattern -> the status and reason it must end with).
An entry that matches no case fails too, so the table cannot go stale silently. And the committed
docs/onnx_conformance.md must equal what the same run renders.

The whole suite (about 1,900 cases, of which about 1,000 are of claimed ops) runs once per session, in
about a minute on two cores; all of it is needed for the staleness check, so nothing is sampled.
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

# case-name pattern -> (status, reason pattern): why a case of a claimed op does not pass. Reviewed by hand.
EXPECTED_NOT_PASSING: dict[str, tuple[str, str]] = {
    # numeric types the IR has no dtype for
    r"_(uint16|uint32|uint64)(_expanded)?$": ("refused", r"UINT(16|32|64), which the IR cannot hold"),
    r"test_equal_string": ("refused", r"STRING, which the IR cannot hold"),
    r"test_cast(like)?_.*(FLOAT8|FLOAT4E2M1|INT4|INT2|e8m0)": ("refused", r"(FLOAT8\w*|FLOAT4E2M1|U?INT[24]), "
                                                                          r"which the IR cannot hold"),
    # models of opsets before 11 (And, Or, Xor, Not exist unchanged since opset 1/7)
    r"test_(and|or|xor|not)_?\w*$": ("refused", r"opset [17]; tensorforge imports opset 11 and newer"),
    # not tensors
    r"test_identity_(opt|sequence)$": ("refused", r"sequences, optionals or maps"),
    # Range's function body is a Loop, which ONNX's generator writes at opset 25 (beyond onnxruntime)
    r"test_range_.*_expanded$": ("refused", r"Loop"),
    # training-time behaviour is not mapped: these run through onnxruntime
    r"test_averagepool_.*dilations": ("opaque", r"dilated average pooling"),
    r"test_batchnorm_.*_training_mode$": ("opaque", r"training mode"),
    r"test_training_dropout": ("opaque", r"dropout in training mode"),
    # MaxPool's Indices output (flat indices over N, C, H, W) has no IR op
    r"test_maxpool_with_argmax": ("opaque", r"the Indices output"),
}


@pytest.fixture(scope="module")
def results():
    cases = conformance.collect_cases()
    return conformance.run_all(cases)


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


def test_every_claimed_op_has_a_passing_case(results):
    """A converter with no passing case is not checked by this suite: it must be covered, or not claimed."""
    passing = {r.op for r in results if r.status == "pass"}
    # ops of opset 1/7 only (their cases predate opset 11) are checked by the frontend tests instead
    untested = sorted(conformance.mapped_ops() - passing - {"And", "Or", "Xor", "Not"})
    assert not untested, f"claimed ops without a passing conformance case: {untested}"


def test_no_unclaimed_op_fails(results):
    """Ops without a converter run through onnxruntime; the opaque path must not break them on our side."""
    failing = [f"{r.name}: {r.reason}" for r in results if r.status == "fail"]
    assert not failing, "\n".join(failing)


def test_committed_table_is_fresh(results):
    doc = conformance.DOC.read_text()
    header = f"onnxruntime {onnxruntime.__version__}"
    if f"onnx {onnx.__version__}" not in doc or header not in doc:
        pytest.skip(f"the table was generated with other onnx/onnxruntime versions than onnx {onnx.__version__}, "
                    f"{header}; regenerate it there with scripts/onnx_conformance.py")
    fresh = conformance.render(results, conformance.case_source())
    assert doc == fresh, "docs/onnx_conformance.md is stale: run python scripts/onnx_conformance.py"
