"""The 8-bit kernels' tile configurations swept on the benchmark models' layer shapes, beside the libraries.

For each GEMM shape (BERT-base's four projections at batch 128 and 32, sequence 128; ResNet-50's 1x1 convolutions
at batch 128 as [N*H*W, C_in] x [C_in, C_out]) it times, on the GPU, with triton.testing.do_bench (median):
  cublas_fp16        F.linear in float16 with bias (what an FP16 plan's library tactic runs),
  int_mm             torch._int_mm (cuBLASLt int8, int32 out; no epilogue),
  scaled_mm[_fast]   torch._scaled_mm in float8_e4m3fn, float16 out (fast accumulation off / on; no epilogue),
  triton/tma         qgemm_triton_kernel's fused kernel (plain, and persistent with TMA loads) for every tile
                     configuration listed below, int8 and fp8, with the layer epilogue of a quantized plan's
                     middle layer: per-channel scale and bias, then the int8 (fp8) quantize of the output;
and for ResNet-50's 3x3 convolutions (batch 128, channels-last) cuDNN float16 beside qconv_triton_kernel's implicit
GEMM per tile configuration. Prints TOP/s per row and the best of each family; writes JSON. Use it to choose the
tiles qgemm_triton.py and qconv_triton.py register; it is not a test (nothing is compared for equality here).

    python bench/qgemm_tiles.py [--families gemm,conv] [--budget-s 240] [--out bench/results/quant_speed]
"""

# ruff: noqa: B023 - every lambda here is timed (called) before its loop moves on
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

# (label, M, K, N)
GEMMS = [
    *(
        (f"bert_b128.{name}", 16384, k, n)
        for name, k, n in (("qkv", 768, 2304), ("out", 768, 768), ("fc1", 768, 3072), ("fc2", 3072, 768))
    ),
    *((f"bert_b32.{name}", 4096, k, n) for name, k, n in (("qkv", 768, 2304), ("fc1", 768, 3072), ("fc2", 3072, 768))),
    ("resnet_b128.56_64_256", 128 * 56 * 56, 64, 256),
    ("resnet_b128.56_256_64", 128 * 56 * 56, 256, 64),
    ("resnet_b128.28_128_512", 128 * 28 * 28, 128, 512),
    ("resnet_b128.28_512_128", 128 * 28 * 28, 512, 128),
    ("resnet_b128.14_256_1024", 128 * 14 * 14, 256, 1024),
    ("resnet_b128.14_1024_256", 128 * 14 * 14, 1024, 256),
    ("resnet_b128.7_512_2048", 128 * 7 * 7, 512, 2048),
    ("resnet_b128.7_2048_512", 128 * 7 * 7, 2048, 512),
]
# (label, batch, C_in, H, C_out, stride): ResNet-50's 3x3 convolutions (torchvision: the stride on the 3x3)
CONVS = [
    ("resnet_b128.3x3_64_56", 128, 64, 56, 64, 1),
    ("resnet_b128.3x3_128_56s2", 128, 128, 56, 128, 2),
    ("resnet_b128.3x3_128_28", 128, 128, 28, 128, 1),
    ("resnet_b128.3x3_256_14", 128, 256, 14, 256, 1),
    ("resnet_b128.3x3_512_7", 128, 512, 7, 512, 1),
]
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)
GEMM_TILES = {
    "triton": [
        (128, 256, 128, 8, 3),
        (128, 256, 128, 8, 4),
        (256, 128, 128, 8, 3),
        (128, 128, 128, 8, 3),
        (128, 128, 128, 8, 4),
        (128, 128, 128, 4, 4),
        (128, 256, 64, 8, 4),
        (128, 128, 64, 4, 5),
        (64, 256, 128, 4, 4),
        (128, 64, 128, 4, 4),
        (64, 128, 128, 4, 4),
    ],
    "tma": [
        (128, 256, 128, 8, 3),
        (128, 256, 128, 8, 4),
        (256, 128, 128, 8, 3),
        (128, 128, 128, 8, 4),
        (128, 128, 128, 8, 5),
        (128, 128, 128, 4, 4),
        (128, 256, 64, 8, 4),
    ],
}
CONV_TILES = [
    (128, 128, 64, 8, 3),
    (128, 128, 64, 4, 4),
    (128, 64, 64, 4, 4),
    (64, 128, 64, 4, 4),
    (128, 256, 64, 8, 3),
    (256, 128, 64, 8, 3),
    (128, 128, 128, 8, 3),
    (128, 64, 128, 4, 4),
]
FP8 = torch.float8_e4m3fn
OUT_CODE = {torch.int8: 1, FP8: 2}


def bench_ms(fn) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median"))


def tops(flops: float, ms: float) -> float:
    return flops / (ms * 1e-3) / 1e12


def recorder(rows: list[dict], label: str, flops: float, deadline: float):
    """record(method, dtype, tile, fn): `fn` timed (or its error) as one row of `rows`, until the deadline."""

    def record(method, dtype, tile, fn) -> None:
        if time.monotonic() > deadline:
            return
        row = {"shape": label, "method": method, "dtype": dtype, "tile": tile}
        try:
            ms = bench_ms(fn)
            rows.append(row | {"ms": ms, "tops": tops(flops, ms)})
        except Exception as exc:  # noqa: BLE001 - a tile that does not fit is a result too
            rows.append(row | {"error": f"{type(exc).__name__}: {exc}"[:300]})

    return record


def random8(shape, dtype, device):
    if dtype == torch.int8:
        return torch.randint(-100, 100, shape, dtype=torch.int8, device=device)
    return (torch.randn(shape, device=device) * 8).clamp(-448, 448).to(FP8)


def gemm_rows(label, m, k, n, device, deadline) -> list[dict]:
    from triton.tools.tensor_descriptor import TensorDescriptor

    from tensorforge.engine.tactics import qgemm_triton_kernel as qk

    flops = 2.0 * m * k * n
    rows: list[dict] = []
    record = recorder(rows, label, flops, deadline)

    x16 = torch.randn(m, k, device=device, dtype=torch.float16)
    w16 = torch.randn(n, k, device=device, dtype=torch.float16) / k**0.5
    b16 = torch.randn(n, device=device, dtype=torch.float16)
    record("cublas_fp16", "float16", None, lambda: F.linear(x16, w16, b16))
    scale = torch.rand(n, device=device) * 1e-3
    bias = torch.randn(n, device=device)
    for dtype in (torch.int8, FP8):
        a = random8((m, k), dtype, device)
        w = random8((n, k), dtype, device)
        c = torch.empty(m, n, dtype=dtype, device=device)
        short = "int8" if dtype == torch.int8 else "fp8"
        if dtype == torch.int8:
            wt = w.t()
            record("int_mm", short, None, lambda: torch._int_mm(a, wt))
        else:
            one = torch.ones((), device=device)
            for fast in (False, True):
                record(
                    "scaled_mm_fast" if fast else "scaled_mm",
                    short,
                    None,
                    lambda fast=fast: torch._scaled_mm(
                        a, w.t(), one, one, out_dtype=torch.float16, use_fast_accum=fast
                    ),
                )
        epilogue = dict(HAS_BIAS=True, HAS_RESIDUAL=False, RESIDUAL_PRE=False, ACT=0, OUT=OUT_CODE[dtype], GROUP=8)
        scalars = (1.0, 0.0, 0.0, 0.0, 0.05)  # r_scale, lo, hi, slope, out_scale
        for bm, bn, bk, warps, stages in GEMM_TILES["triton"]:
            flags = dict(epilogue, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
            grid = (-(-m // bm) * -(-n // bn),)
            record(
                "triton",
                short,
                f"{bm}x{bn}x{bk}/w{warps}s{stages}",
                lambda grid=grid, flags=flags, bk=bk: qk.qgemm_epilogue[grid](
                    a, w, c, scale, bias, c, m, n, k, k, k, n, 0, *scalars, EVEN_K=k % bk == 0, **flags
                ),
            )
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        if k % 16 == 0:
            for bm, bn, bk, warps, stages in GEMM_TILES["tma"]:
                flags = dict(epilogue, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
                programs = min(sms, -(-m // bm) * -(-n // bn))
                a_desc = TensorDescriptor.from_tensor(a, [bm, bk])
                b_desc = TensorDescriptor.from_tensor(w, [bn, bk])
                record(
                    "tma",
                    short,
                    f"{bm}x{bn}x{bk}/w{warps}s{stages}",
                    lambda programs=programs, flags=flags, a_desc=a_desc, b_desc=b_desc: qk.qgemm_epilogue_tma[
                        (programs,)
                    ](a_desc, b_desc, c, scale, bias, c, m, n, k, n, 0, *scalars, programs, **flags),
                )
    return rows


def conv_rows(label, batch, c_in, h, c_out, stride, device, deadline) -> list[dict]:
    from tensorforge.engine.tactics.qconv_triton import pack_weights
    from tensorforge.engine.tactics.qconv_triton_kernel import qconv2d_implicit_gemm_nhwc

    oh = (h + 2 - 3) // stride + 1
    m = batch * oh * oh
    flops = 2.0 * m * c_out * c_in * 9
    rows: list[dict] = []
    record = recorder(rows, label, flops, deadline)

    x16 = torch.randn(batch, c_in, h, h, device=device, dtype=torch.float16).contiguous(
        memory_format=torch.channels_last
    )
    w16 = torch.randn(c_out, c_in, 3, 3, device=device, dtype=torch.float16).contiguous(
        memory_format=torch.channels_last
    )
    b16 = torch.randn(c_out, device=device, dtype=torch.float16)
    record("cudnn_fp16", "float16", None, lambda: F.relu(F.conv2d(x16, w16, b16, stride, 1)))
    scale = torch.rand(c_out, device=device) * 1e-3
    bias = torch.randn(c_out, device=device)
    for dtype in (torch.int8, FP8):
        short = "int8" if dtype == torch.int8 else "fp8"
        x = random8((batch, c_in, h, h), dtype, device).contiguous(memory_format=torch.channels_last)
        weight = random8((c_out, c_in, 3, 3), dtype, device)
        y = torch.empty((batch, c_out, oh, oh), dtype=dtype, device=device, memory_format=torch.channels_last)
        for bm, bn, bk, warps, stages in CONV_TILES:
            if bk > c_in:
                continue
            packed = pack_weights(weight, bk, False)
            flags = dict(
                C_IN=c_in, KH=3, KW=3, SH=stride, SW=stride, PH=1, PW=1, DH=1, DW=1, INT8=dtype == torch.int8,
                GATHER=False, HAS_BIAS=True, HAS_RESIDUAL=False, RESIDUAL_PRE=False, ACT=1, OUT=OUT_CODE[dtype],
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP=8, num_warps=warps, num_stages=stages,
            )  # fmt: skip
            grid = (-(-m // bm) * -(-c_out // bn),)
            record(
                "triton",
                short,
                f"{bm}x{bn}x{bk}/w{warps}s{stages}",
                lambda grid=grid, flags=flags, packed=packed: qconv2d_implicit_gemm_nhwc[grid](
                    x,
                    packed,
                    y,
                    scale,
                    bias,
                    y,
                    m,
                    h,
                    h,
                    oh,
                    oh,
                    c_out,
                    packed.shape[1],
                    1.0,
                    0.0,
                    0.0,
                    0.0,
                    0.05,
                    **flags,
                ),
            )
    return rows


def summary(rows: list[dict]) -> list[str]:
    """Per shape: the float16 library row, then the best of each (method family, dtype)."""
    lines = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        ok = [r for r in rows if r["shape"] == shape and "ms" in r]
        base = next((r for r in ok if r["dtype"] == "float16"), None)
        if base is None:
            continue
        lines.append(f"{shape}: {base['method']} {base['ms'] * 1e3:.1f} us ({base['tops']:.0f} TFLOP/s)")
        for method in dict.fromkeys(r["method"] for r in ok if r["dtype"] != "float16"):
            for dtype in ("int8", "fp8"):
                group = [r for r in ok if r["method"] == method and r["dtype"] == dtype]
                if group:
                    best = min(group, key=lambda r: r["ms"])
                    lines.append(
                        f"    {method:15s} {dtype:4s} {best['ms'] * 1e3:8.1f} us {best['tops']:5.0f} TOP/s "
                        f"{base['ms'] / best['ms']:5.2f}x  {best['tile'] or ''}"
                    )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="gemm,conv")
    parser.add_argument("--budget-s", type=float, default=240.0, help="stop timing after this long (default 240)")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 2
    device = torch.device("cuda")
    deadline = time.monotonic() + args.budget_s
    families = args.families.split(",")
    rows: list[dict] = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = [("gemm", g) for g in GEMMS] + [("conv", c) for c in CONVS]
    for family, shape in work:
        if family not in families or time.monotonic() > deadline:
            continue
        start = time.monotonic()
        new = gemm_rows(*shape, device, deadline) if family == "gemm" else conv_rows(*shape, device, deadline)
        rows += new
        print(f"{shape[0]}: {len(new)} rows in {time.monotonic() - start:.1f} s", flush=True)
        (out / "qgemm_tiles.json").write_text(
            json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1)
        )
        torch.cuda.empty_cache()
    text = "\n".join(summary(rows))
    print(text)
    (out / "qgemm_tiles.md").write_text(text + "\n")
    errors = [r for r in rows if "error" in r]
    for r in errors[:10]:
        print("error:", r["shape"], r["method"], r["dtype"], r["tile"], r["error"][:200])
    return 0


if __name__ == "__main__":
    sys.exit(main())
