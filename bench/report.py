"""Merge benchmark and accuracy JSON files into bench/results/RESULTS.md and a speedup chart.

python bench/report.py bench/results/run-*.json --accuracy bench/results/accuracy*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _seconds(value) -> str:
    """A duration column: '—' where it was not measured (cached builds are timed once per model and precision)."""
    return "—" if value is None else f"{value:.1f}"


def _ms(row, method):
    m = row.get(method)
    return f"{m['median_ms']:.3f}" if m else "—"


def _mib(row, method):
    m = row.get(method)
    return f"{m['peak_mem_bytes'] / 2**20:.0f}" if m and "peak_mem_bytes" in m else "—"


def _serving_mib(row):
    """tensorforge's serving peak (fresh .tforge load, no PyTorch model on the GPU): through the first call /
    over the steady-state runs."""
    s = row.get("forge", {}).get("serving", {})
    if "peak_bytes" not in s:
        return "—"
    return f"{s['first_call_peak_bytes'] / 2**20:.0f} / {s['steady_peak_bytes'] / 2**20:.0f}"


COLUMNS = (
    "model",
    "precision",
    "batch",
    "eager ms",
    "torch.compile ms",
    "tensorforge ms",
    "vs eager",
    "vs compile",
    "tensorforge img/s",
    "build s",
    "cached build s",
    "plan load s",
    "eager peak MiB",
    "tensorforge serving peak MiB (first call / steady)",
    "model-resident peak MiB compile / forge",
    "max rel err",
)


def table(rows) -> str:
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if "error" in r or "skipped" in r:
            why = f"error: {r['error'][:80]}" if "error" in r else f"skipped: {r['skipped']}"
            out.append(f"| {r['model']} | {r['precision']} | {r['batch']} | {why} |" + " |" * (len(COLUMNS) - 4))
            continue
        f = r.get("forge", {})
        out.append(
            f"| {r['model']} | {r['precision']} | {r['batch']} | {_ms(r, 'eager')} | {_ms(r, 'compile')} | "
            f"{_ms(r, 'forge')} | {r.get('speedup_vs_eager', 0):.2f}× | {r.get('speedup_vs_compile', 0):.2f}× | "
            f"{f.get('throughput_per_s', 0):.0f} | {f.get('build_s', 0):.1f} | {_seconds(f.get('cached_build_s'))} | "
            f"{f.get('plan_load_s', 0):.2f} | {_mib(r, 'eager')} | {_serving_mib(r)} | "
            f"{_mib(r, 'compile')} / {_mib(r, 'forge')} | {f.get('rel_err', 0):.1e} |"
        )
    return "\n".join(out)


def chart(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "speedup_vs_compile" in r]
    labels = [f"{r['model']}\n{r['precision']} b{r['batch']}" for r in ok]
    fig, ax = plt.subplots(figsize=(max(8, len(ok) * 0.8), 4.5))
    xs = range(len(ok))
    ax.bar(
        [x - 0.2 for x in xs],
        [r["speedup_vs_compile"] for r in ok],
        width=0.4,
        label="vs torch.compile (reduce-overhead)",
    )
    ax.bar([x + 0.2 for x in xs], [r["speedup_vs_eager"] for r in ok], width=0.4, label="vs PyTorch eager")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.25, color="gray", linewidth=0.8, linestyle="--", label="target 1.25×")
    ax.set_yscale("log")
    ax.set_ylabel("tensorforge speedup (×, log scale)")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.legend(fontsize=8)
    ax.set_title("tensorforge speedup, same run, same inputs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _merged(rows):
    """Every measured row once; a row one run skipped (its time budget) stays only if no other run measured it."""
    key = lambda r: (r["model"], r["precision"], r["batch"])  # noqa: E731
    measured = {key(r) for r in rows if "skipped" not in r and "error" not in r}
    return [r for r in rows if ("skipped" not in r and "error" not in r) or key(r) not in measured]


# results measured by other scripts, each with its own README (what was measured, on what)
OTHER_RESULTS = [
    "## Other GPU results",
    "",
    "- [Zoo sample](zoo/README.md): eight architectures outside the tuned set (ConvNeXt, EfficientNet, RegNet, Swin, "
    "GPT-2, Llama, T5 and Whisper encoders), FP16, against eager and torch.compile (`bench/zoo_gpu.py`).",
    "- [Threads](threads/README.md): one module from 1-8 threads, contexts per thread against one behind a lock, and "
    "the 8-thread soak on the GPU and the CPU (`bench/threads.py`, `scripts/thread_soak.py`).",
    "- [Dynamic shapes](dynamic/README.md): BERT-base over sequence 16..512 in one plan against exact-shape plans and "
    "torch.compile(dynamic=True), 200 random lengths under the CUDA-graph LRU, PaddleOCR and silero-vad ONNX models "
    "with their dynamic dimensions against onnxruntime (`bench/dynamic.py`).",
    "",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--accuracy", nargs="*", default=[])
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    docs = [json.loads(Path(p).read_text()) for p in args.runs]
    rows = _merged([r for d in docs for r in d["results"]])
    env = docs[0]["environment"]
    lines = [
        "# tensorforge benchmark results",
        "",
        f"Measured {docs[0]['date']} on {env.get('gpu')} (sm{''.join(map(str, env.get('capability', [])))}), "
        f"Python {env['python']}, torch {env['torch']}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, "
        f"Triton {env.get('triton')}. Medians of CUDA-event timings after warm-up; eager, "
        f'`torch.compile(mode="reduce-overhead")` and tensorforge in the same process on the same inputs.',
        "",
        "Peak GPU memory (`torch.cuda.max_memory_allocated`, the inputs included everywhere): eager's peak "
        "is its weights and activations. tensorforge's serving peak is what a deployment pays: the saved "
        ".tforge loaded afresh with the PyTorch model off the GPU, through its first call (CUDA-graph capture) "
        "and over the steady-state runs after it. The model-resident peaks count the "
        "PyTorch model's weights on top of each method's own (for tensorforge also its build).",
        "",
        f"Rows from {', '.join(Path(p).name for p in args.runs)}.",
        "",
        table(rows),
        "",
        "![speedups](speedup.png)",
        "",
    ]
    for p in args.accuracy:
        acc = json.loads(Path(p).read_text())
        lines += [f"## Accuracy ({Path(p).name})", "", "```json", json.dumps(acc, indent=2)[:12000], "```", ""]
    lines += OTHER_RESULTS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "RESULTS.md").write_text("\n".join(lines))
    chart(rows, out / "speedup.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
