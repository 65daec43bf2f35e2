"""The zoo-wide correctness and coverage sweep: every model of scripts/zoo_catalog.py through tensorforge on the
CPU (FP32), against PyTorch eager or onnxruntime, one row per model in docs/coverage.json, and the table
docs/coverage.md generated from it.

    .venv/bin/python scripts/coverage.py                    # every model not yet in the JSON, then the table
    .venv/bin/python scripts/coverage.py --all              # sweep every model again
    .venv/bin/python scripts/coverage.py --only hf-llama,swin_t   # sweep these again (the other rows stay)
    .venv/bin/python scripts/coverage.py --family hf-decoder     # one family again
    .venv/bin/python scripts/coverage.py --render           # rewrite docs/coverage.md from the JSON only
    .venv/bin/python scripts/coverage.py --check            # exit 1 if docs/coverage.md is stale (a test runs this)
    .venv/bin/python scripts/coverage.py --list             # the catalog's names

Each model runs in its own process under a time limit (a child forked from the sweep's process, which has
imported torch, torchvision, transformers, timm and onnxruntime once; `--worker NAME` in a fresh interpreter where
fork is missing): a crash or a hang is a row, not the end of the sweep. The JSON is rewritten after every model,
so a sweep stopped part-way keeps its rows.

What a row holds: whether the model imported (torch.export + tensorforge's frontend, or the ONNX importer)
and if not why; engine regions; the share of nodes and of multiply-accumulates offloaded and the fallback
reasons, all from the partition report (`module.report`, partition/report.py: the same numbers `tensorforge
inspect` prints); the largest relative error of any output, max |tensorforge - reference| / max |reference|
(the error `tensorforge compare` reports), against eager FP32 / onnxruntime on the same inputs; and a status:

  ok     imported, built and ran, within the FP32 tolerance, and something went to the engine;
  limit  an honest, named limit: torch.export cannot capture the model, the ONNX importer refuses the file
         with its reason, nothing is offloadable, no multiply-accumulate is counted (ONNX control flow, or a
         quantized model's integer ops, left to onnxruntime), the model is over the sweep's size cap, or the
         sweep's time limit ran out on this 2-core machine;
  FAIL   a crash inside tensorforge (conversion, partitioning, build, run) or a wrong answer.

The worker is what `tensorforge compare` does, as one function (`check_model`), so tests/zoo/test_zoo.py runs
the same check in-process on the small models.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

JSON_PATH = ROOT / "docs" / "coverage.json"
MD_PATH = ROOT / "docs" / "coverage.md"
TIMEOUT_S = 420
MAX_PARAMS = 160_000_000  # larger models are a named limit here: memory and time on the 2-core sweep machine
GOOD_MAC_SHARE, GOOD_REGIONS = 0.95, 3  # the summary's "offloaded well" bar
REASON_WIDTH = 90
FP64_MARGIN = 10  # tensorforge may be this many times further from FP64 than eager FP32 is
NEAR_ZERO = 1e-6  # a reference output no larger than this makes the comparison say little
# ONNX control flow run whole by onnxruntime: the work inside is neither offloaded nor counted in the MACs
CONTROL_FLOW = ("onnx.If", "onnx.Loop", "onnx.Scan")


# -- one model --------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    """The exception's type and first line (and the line after it when the first only announces a list)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [""]
    line = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return f"{type(exc).__name__}: {line}"[:400]


def _where(exc: BaseException) -> str:
    """The innermost tensorforge frame of the traceback (file:line function), where the error surfaced."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/tensorforge/" in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.filename.split('/src/')[-1]}:{f.lineno} {f.name}"


def _fallback_summary(report) -> dict:
    """op -> reason -> number of nodes (the report's fallback list, counted)."""
    return {
        op: {reason: len(nodes) for reason, nodes in by_reason.items()} for op, by_reason in report.reasons().items()
    }


def _compare(actual, expected) -> dict:
    """Error statistics over every output (compare's `_error_stats` per floating output, exact for the rest)."""
    import torch

    from tensorforge.cli.compare import _error_stats

    if len(actual) != len(expected):
        return {"mismatch": f"{len(actual)} outputs, the reference has {len(expected)}"}
    worst_rel, worst_abs, exact_mismatch, smallest = 0.0, 0.0, [], math.inf
    for i, (a, e) in enumerate(zip(actual, expected)):
        if tuple(a.shape) != tuple(e.shape):
            return {"mismatch": f"output {i}: shape {tuple(a.shape)}, the reference {tuple(e.shape)}"}
        if e.is_floating_point():
            stats = _error_stats(a.float(), e.float())
            if math.isnan(stats["max_abs"]) and not torch.isnan(e).any():
                stats["max_rel"] = stats["max_abs"] = math.inf
            worst_rel, worst_abs = max(worst_rel, stats["max_rel"]), max(worst_abs, stats["max_abs"])
            if e.numel():
                smallest = min(smallest, e.abs().max().item())
        elif not torch.equal(a.to(e.dtype), e):
            exact_mismatch.append(i)
    out = {"max_rel_err": worst_rel, "max_abs_err": worst_abs}
    if smallest < NEAR_ZERO:  # a relative error against ~0 says nothing: the row says so
        out["near_zero_reference"] = smallest
    if exact_mismatch:
        out["mismatch"] = f"integer/bool output(s) {exact_mismatch} differ"
    return out


def _fp64_errors(model, inputs, actual, expected) -> tuple[float, float] | None:
    """(eager FP32's own max rel error against eager FP64, tensorforge's against FP64), or None where the model
    does not run in float64. With random weights some deep models amplify rounding: FP32 eager itself is then
    as far from the exact answer as the tolerance, and only the FP64 reference can tell a wrong answer."""
    import copy

    import torch

    from tensorforge.cli.sources import _flatten

    try:
        model64 = copy.deepcopy(model).double()
        inputs64 = [t.double() if t.is_floating_point() else t for t in inputs]
        with torch.no_grad():
            exact = [t.detach() for t in _flatten(model64(*inputs64))]
    except Exception:  # noqa: BLE001 - a model that does not run in float64 has no FP64 reference
        return None
    eager = _compare(expected, exact)
    ours = _compare(actual, exact)
    if "mismatch" in eager or "mismatch" in ours:
        return None
    return eager["max_rel_err"], ours["max_rel_err"]


def _import(spec, model, inputs, row: dict):
    """The ir.Graph of the model, with a symbolic batch where it can be (the torch frontend first tries the
    dynamic batch forge.compile uses, then a static one); raises what the frontend raises."""
    from tensorforge.frontends import from_onnx, from_torch

    if spec.is_onnx:
        return from_onnx(model, dynamic_batch=spec.dynamic_batch, input_shapes=spec.onnx_shapes or None)
    if spec.dynamic_batch:
        try:
            return from_torch(model, inputs)
        except Exception as exc:
            if "torch.export could not capture" not in str(exc):
                raise
            row["notes"].append(f"static batch only (dynamic batch: {_first_line(exc)[:160]})")
    row["batch_mode"] = "static"
    return from_torch(model, inputs, dynamic_batch=False)


def check_model(spec, *, max_params: int = MAX_PARAMS, batch: int | None = None) -> dict:
    """One row: make the model, run the reference, import, partition, build and run through tensorforge exactly
    as `forge.compile(model, inputs, precision="fp32", device="cpu")` does (explicit batch, min_block_size=1),
    and compare. Never raises: every failure is a row with its stage and first line."""
    import torch

    import tensorforge as forge
    import zoo_catalog
    from tensorforge.cli.common import TOLERANCES

    row: dict = {
        "name": spec.name,
        "family": spec.family,
        "input": spec.input_desc,
        "notes": [],
        "batch_mode": "dynamic" if spec.dynamic_batch else "static",
        "times_s": {},
    }
    stage = "model"
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        row["times_s"][name] = round(now - clock, 2)
        clock = now

    try:
        missing = spec.available()
        if missing:
            return {**row, "status": "limit", "stage": "model", "error": missing}
        model, inputs = spec.make(batch)
        row["batch"] = int(inputs[0].shape[0]) if inputs and inputs[0].dim() else 1
        if not spec.is_onnx:
            row["params"] = sum(p.numel() for p in model.parameters())
            if row["params"] > max_params:
                return {
                    **row,
                    "status": "limit",
                    "stage": "model",
                    "error": f"{row['params'] / 1e6:.0f} M parameters: over the sweep's cap of "
                    f"{max_params / 1e6:.0f} M on the 2-core machine (--max-params)",
                }
        lap("model")
        stage = "reference"
        expected = zoo_catalog.reference_outputs(spec, model, inputs)
        lap("reference")
        stage = "import"
        graph = _import(spec, model, inputs, row)
        row["imported"] = True
        lap("import")
        stage = "partition"
        graph, config = forge.partition_for_tensorforge(graph, min_block_size=1, use_implicit_batch=False)
        module = forge.build(graph, config, device="cpu")
        report = module.report
        row.update(
            regions=len(module.regions),
            nodes=report.total_nodes,
            nodes_offloaded=report.offloaded_nodes,
            node_share=report.node_share,
            macs=report.total_macs,
            macs_offloaded=report.offloaded_macs,
            mac_share=report.mac_share,
            fallback=_fallback_summary(report),
            folded=sum(len(f.nodes) for f in report.folded),
        )
        lap("partition")
        stage = "build"
        module.build_all(row["batch"])
        lap("build")
        stage = "run"
        with torch.no_grad():
            out = module(*inputs)
        actual = [out] if isinstance(out, torch.Tensor) else list(out)
        lap("run")
        row.update(_compare(actual, expected))
        if not spec.is_onnx and "mismatch" not in row and not row["max_rel_err"] <= TOLERANCES["fp32"]:
            errors = _fp64_errors(model, inputs, actual, expected)
            if errors is not None:
                row["eager_fp32_err_vs_fp64"], row["max_rel_err_vs_fp64"] = errors
    except Exception as exc:  # noqa: BLE001 - a row, whatever happened
        row.update(stage=stage, error=_first_line(exc), where=_where(exc))
        exported = "torch.export could not capture" in str(exc)
        # the ONNX importer's refusals are limits, except its own bugs (their messages ask to report them) and a
        # validity check that onnxruntime, which just ran the same file for the reference, contradicts
        onnx_refused = (
            stage == "import"
            and type(exc).__name__ == "OnnxImportError"
            and "please report it" not in str(exc)
            and "not valid ONNX" not in str(exc)
        )
        if stage in ("model", "reference"):
            row["status"] = "limit"
            row["error"] = f"the model itself fails here ({stage}): {row['error']}"
        elif exported or onnx_refused:
            row["status"], row["imported"] = "limit", False
        else:
            row["status"] = "FAIL"
            if stage == "import":
                row["imported"] = False
        return row

    tolerance = TOLERANCES["fp32"]
    if "near_zero_reference" in row:
        row["notes"].append(
            f"an output of the reference is ~0 (max {row['near_zero_reference']:.1e}): the comparison says little"
        )
    control_flow = sorted(op for op in row["fallback"] if op in CONTROL_FLOW)
    if "mismatch" in row:
        row.update(status="FAIL", stage="compare", error=f"wrong answer: {row['mismatch']}")
    elif (
        not row["max_rel_err"] <= tolerance
        and "eager_fp32_err_vs_fp64" in row
        and (row["max_rel_err_vs_fp64"] <= max(tolerance, FP64_MARGIN * row["eager_fp32_err_vs_fp64"]))
    ):
        row["status"] = "ok"
        row["notes"].append(
            f"{row['max_rel_err']:.1e} from eager FP32, but eager FP32 is itself "
            f"{row['eager_fp32_err_vs_fp64']:.1e} from FP64 and tensorforge "
            f"{row['max_rel_err_vs_fp64']:.1e}: rounding amplified by the random weights"
        )
    elif not row["max_rel_err"] <= tolerance:
        row.update(
            status="FAIL",
            stage="compare",
            error=f"wrong answer: max rel error {row['max_rel_err']:.3g} > {tolerance:g} (fp32)",
        )
    elif row["regions"] == 0:
        row.update(status="limit", stage="partition", error="nothing offloaded: no engine region")
    elif control_flow:
        row.update(
            status="limit",
            stage="partition",
            error=f"{', '.join(control_flow)} runs whole in onnxruntime: the work inside it is neither "
            f"offloaded nor counted in the MAC share",
        )
    elif row["macs"] == 0 and row["fallback"]:  # a dynamically quantized model: ConvInteger, MatMulInteger, ...
        row.update(
            status="limit",
            stage="partition",
            error="no multiply-accumulate counted: the work is in the nodes left to onnxruntime (the "
            "fallback), which the MAC share does not see",
        )
    else:
        row["status"] = "ok"
    return row


# -- the sweep ---------------------------------------------------------------------------------------


def _worker(name: str, out_path: str, max_params: int) -> int:
    import torch

    torch.set_num_threads(1)  # the sweep machine has 2 shared cores
    import logging

    import zoo_catalog

    logging.getLogger("tensorforge").setLevel(logging.ERROR)
    spec = zoo_catalog.all_specs()[name]
    row = check_model(spec, max_params=max_params)
    Path(out_path).write_text(json.dumps(row, default=float))
    return 0


def _preload() -> None:
    """What every worker imports, imported once in the sweep's process, so that each forked worker starts warm
    (a fresh interpreter spends 5-10 s of the 2 shared cores on imports alone). Nothing runs a tensor op here:
    a forked child must not inherit a started thread pool."""
    import importlib
    import logging

    import torch

    torch.set_num_threads(1)  # the sweep machine has 2 shared cores
    # imported for the import alone: each forked worker inherits them loaded
    import tensorforge
    import tensorforge.cli.compare
    import tensorforge.cli.sources
    import tensorforge.engine.precision  # noqa: F401
    import zoo_catalog

    logging.getLogger("tensorforge").setLevel(logging.ERROR)
    for package in ("torchvision", "onnx", "onnxruntime", "transformers", "timm"):
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        if package == "transformers":  # its model classes load lazily, one module each
            for entry in zoo_catalog.HF_MODELS.values():
                getattr(module, entry[1], None)
                getattr(module, entry[2], None)


def _timeout_row(name: str, family: str, input_desc: str, timeout_s: int, wall: float) -> dict:
    return {
        "name": name,
        "family": family,
        "input": input_desc,
        "status": "limit",
        "stage": "timeout",
        "error": f"did not finish within {timeout_s} s on the 2-core sweep machine",
        "wall_s": round(wall, 1),
    }


def fork_one(spec, timeout_s: int, max_params: int) -> dict:
    """The row of `spec` from a forked child of this (preloaded) process; a crash or a timeout is a row too."""
    fd, out_path = tempfile.mkstemp(prefix="coverage-row-", suffix=".json")
    os.close(fd)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: one row, then out without running the parent's exit handlers
        code = 1
        try:
            Path(out_path).write_text(json.dumps(check_model(spec, max_params=max_params), default=float))
            code = 0
        finally:
            os._exit(code)
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.perf_counter() - start > timeout_s:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return _timeout_row(spec.name, spec.family, spec.input_desc, timeout_s, time.perf_counter() - start)
            time.sleep(0.2)
        wall = round(time.perf_counter() - start, 1)
        text = Path(out_path).read_text()
        if text:
            return {**json.loads(text), "wall_s": wall}
        code = os.waitstatus_to_exitcode(status)
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
        return {
            "name": spec.name,
            "family": spec.family,
            "input": spec.input_desc,
            "status": "FAIL",
            "stage": "crash",
            "error": f"worker died ({how}; its traceback is in the sweep's log)",
            "wall_s": wall,
        }
    finally:
        os.unlink(out_path)


def run_one(name: str, family: str, input_desc: str, timeout_s: int, max_params: int) -> dict:
    """The row of `name`, from its own subprocess (where fork is not available); a crash (no row written) or a
    timeout is a row too."""
    with tempfile.TemporaryDirectory(prefix="coverage-") as tmp:
        out_path = os.path.join(tmp, "row.json")
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            name,
            "--worker-out",
            out_path,
            "--max-params",
            str(max_params),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return _timeout_row(name, family, input_desc, timeout_s, time.perf_counter() - start)
        wall = round(time.perf_counter() - start, 1)
        if os.path.exists(out_path):
            row = json.loads(Path(out_path).read_text())
            row["wall_s"] = wall
            return row
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:] or [f"exit {proc.returncode}"]
        return {
            "name": name,
            "family": family,
            "input": input_desc,
            "status": "FAIL",
            "stage": "crash",
            "error": f"worker died (exit {proc.returncode}): {tail[0][:300]}",
            "wall_s": wall,
        }


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for package in ("torch", "torchvision", "transformers", "timm", "onnx", "onnxruntime"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    try:  # colleagues may have uncommitted edits in the tree the sweep ran on: say so
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "src"], capture_output=True, text=True, cwd=ROOT
        )
        out["tensorforge"] = head.stdout.strip() + (" + uncommitted changes in src/" if dirty.stdout.strip() else "")
    except OSError:
        pass
    return out


def load_doc() -> dict:
    if JSON_PATH.exists():
        return json.loads(JSON_PATH.read_text())
    return {"rows": {}}


def save_doc(doc: dict) -> None:
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    tmp = JSON_PATH.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, default=float) + "\n")
    os.replace(tmp, JSON_PATH)


def save_row(doc: dict, row: dict) -> dict:
    """Add one row to the JSON as it is on disk now (another sweep may have written rows since this one
    started) and return that document."""
    current = load_doc()
    current["rows"][row["name"]] = row
    current["versions"], current["date"] = doc["versions"], doc["date"]
    save_doc(current)
    return current


# -- the table -----------------------------------------------------------------------------------------


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _err(row: dict) -> str:
    x = row.get("max_rel_err")
    if x is None:
        return "—"
    return "inf" if math.isinf(x) else f"{x:.1e}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _short(text: str, width: int = REASON_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _fallback_text(row: dict) -> str:
    """Fallback reasons, grouped: `op ×n: reason`, most nodes first."""
    items = [
        (n, op, reason) for op, by_reason in (row.get("fallback") or {}).items() for reason, n in by_reason.items()
    ]
    items.sort(key=lambda x: (-x[0], x[1], x[2]))
    return "; ".join(f"`{op}` ×{n}: {_short(reason, 70)}" for n, op, reason in items)


def _detail(row: dict) -> str:
    parts = []
    if row.get("error"):
        where = f" (at {row['where']})" if row.get("where") else ""
        parts.append(f"**{row.get('stage', '?')}**: {_short(row['error'], 200)}{where}")
    parts += row.get("notes", [])
    fallback = _fallback_text(row)
    if fallback:
        parts.append(f"fallback: {fallback}")
    return _cell("; ".join(parts)) or "—"


def _well_offloaded(row: dict) -> bool:
    return (
        row.get("status") == "ok"
        and row.get("mac_share", 0) >= GOOD_MAC_SHARE
        and 0 < row.get("regions", 0) <= GOOD_REGIONS
    )


def render(doc: dict) -> str:
    import zoo_catalog

    rows = doc["rows"]
    families = list(zoo_catalog.FAMILIES)
    by_family = collections.defaultdict(list)
    for row in rows.values():
        by_family[row["family"]].append(row)
    lines = [
        "# Model coverage",
        "",
        "<!-- generated by scripts/coverage.py from docs/coverage.json; do not edit (tests/test_docs.py checks it) -->",
        "",
        "Every model of `scripts/zoo_catalog.py` — torchvision classification, segmentation and detection, "
        "Hugging Face `transformers` architectures from small configs, timm architectures at small sizes, and ONNX "
        "files that packages ship — "
        "through tensorforge on the CPU in FP32 (`partition_for_tensorforge(min_block_size=1, "
        "use_implicit_batch=False)` then `build`, as `forge.compile` does), random weights, "
        "compared with PyTorch eager FP32 / onnxruntime on the same inputs.",
        "",
        "- **status**: `ok` (imported, ran, max relative error within the FP32 tolerance "
        "1e-4, something went to the engine); `limit` (a named limit: torch.export cannot capture it, the "
        "ONNX importer refuses the file, nothing offloadable, no multiply-accumulate counted (the heavy "
        "nodes left to onnxruntime), over the sweep's size cap, or out of time on "
        "the 2-core sweep machine); `FAIL` (a crash in tensorforge, or a wrong answer).",
        "- **regions**: engine regions; **nodes** / **MACs**: the share offloaded, from the partition report "
        "(`module.report`, the numbers `tensorforge inspect` prints; symbolic dimensions count as 1).",
        "- **max rel err**: max |tensorforge − reference| / max |reference| over every output "
        "(`tensorforge compare`'s measure).",
        f"- **offloaded well**: status ok, at least {GOOD_MAC_SHARE:.0%} of MACs offloaded, "
        f"at most {GOOD_REGIONS} regions.",
        "",
        "Regenerate: `.venv/bin/python scripts/coverage.py [--only NAME,...]`.",
        "",
    ]
    versions = doc.get("versions", {})
    if versions:
        lines += [
            "Swept with "
            + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if v)
            + (f" ({doc['date']})" if doc.get("date") else "")
            + ".",
            "",
        ]
    lines += ["## Summary", "", "| family | models | ok | limit | FAIL | offloaded well |", "|---|---|---|---|---|---|"]
    totals = collections.Counter()
    for family in families + sorted(set(by_family) - set(families)):
        group = by_family.get(family, [])
        if not group:
            continue
        c = collections.Counter(r["status"] for r in group)
        well = sum(_well_offloaded(r) for r in group)
        totals.update(c)
        totals["models"] += len(group)
        totals["well"] += well
        lines.append(
            f"| {zoo_catalog.FAMILIES.get(family, family)} | {len(group)} | {c['ok']} | {c['limit']} | "
            f"{c['FAIL']} | {well} ({_pct(well / len(group))}) |"
        )
    n = totals["models"]
    if n:
        lines.append(
            f"| **all** | **{n}** | **{totals['ok']}** | **{totals['limit']}** | **{totals['FAIL']}** | "
            f"**{totals['well']} ({_pct(totals['well'] / n)})** |"
        )
    for family in families + sorted(set(by_family) - set(families)):
        group = sorted(by_family.get(family, []), key=lambda r: r["name"])
        if not group:
            continue
        lines += [
            "",
            f"## {zoo_catalog.FAMILIES.get(family, family)}",
            "",
            "| model | input | status | regions | nodes | MACs | max rel err | stage, reason, fallback |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in group:
            regions = r.get("regions", "—")
            nodes = f"{_pct(r['node_share'])} of {r['nodes']}" if r.get("nodes") is not None else "—"
            lines.append(
                f"| `{r['name']}` | {_cell(r.get('input', ''))} | {r['status']} | {regions} | {nodes} | "
                f"{_pct(r.get('mac_share'))} | {_err(r)} | {_detail(r)} |"
            )
    return "\n".join(lines) + "\n"


# -- command line --------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated names to sweep again")
    parser.add_argument("--family", help="comma-separated families to sweep again")
    parser.add_argument("--all", action="store_true", help="sweep every model again")
    parser.add_argument("--render", action="store_true", help="only rewrite docs/coverage.md from the JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/coverage.md is stale")
    parser.add_argument("--list", action="store_true", help="print the catalog's names by family")
    parser.add_argument("--timeout", type=int, default=TIMEOUT_S, help="seconds per model")
    parser.add_argument("--max-params", type=int, default=MAX_PARAMS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        return _worker(args.worker, args.worker_out, args.max_params)
    if args.check:
        if not JSON_PATH.exists():
            print(f"{JSON_PATH} is missing", file=sys.stderr)
            return 1
        fresh = render(load_doc())
        if not MD_PATH.exists() or MD_PATH.read_text() != fresh:
            print(
                f"{MD_PATH.relative_to(ROOT)} is stale: run .venv/bin/python scripts/coverage.py --render",
                file=sys.stderr,
            )
            return 1
        return 0
    import zoo_catalog

    if args.list:
        for name, spec in zoo_catalog.all_specs().items():
            print(f"{spec.family:<20} {name}")
        return 0
    doc = load_doc()
    if not args.render:
        specs = zoo_catalog.all_specs()
        if args.only:
            names = args.only.split(",")
            unknown = [n for n in names if n not in specs]
            if unknown:
                parser.error(f"unknown model(s) {unknown}; --list shows the names")
        elif args.family:
            names = [n for n, s in specs.items() if s.family in args.family.split(",")]
        else:
            names = [n for n in specs if args.all or n not in doc["rows"]]
        doc["versions"] = _versions()
        doc["date"] = time.strftime("%Y-%m-%d")
        started = time.perf_counter()
        forking = hasattr(os, "fork")
        if forking:
            _preload()
        for i, name in enumerate(names, 1):
            spec = specs[name]
            row = (
                fork_one(spec, args.timeout, args.max_params)
                if forking
                else run_one(name, spec.family, spec.input_desc, args.timeout, args.max_params)
            )
            doc = save_row(doc, row)
            MD_PATH.write_text(render(doc))
            print(
                f"[{i}/{len(names)}] {name}: {row['status']} {row.get('wall_s', 0):.0f}s "
                f"{row.get('error', '')[:150]} (total {time.perf_counter() - started:.0f}s)",
                flush=True,
            )
        for name in [n for n in doc["rows"] if n not in specs]:
            print(f"note: {name} is in the JSON but no longer in the catalog", file=sys.stderr)
    MD_PATH.write_text(render(load_doc()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
