"""Compile ahead (engine/compile_ahead.py): which first calls a build makes in parallel before timing (CPU: the
selection), and on the GPU that the Triton kernels the timing and the plan launch were compiled by the
worker threads, not by the timing, with the plan still matching the reference."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tensorforge import ir
from tensorforge.engine import Builder, BuilderConfig
from tensorforge.engine.compile_ahead import ByteBudget, compile_ahead, compile_threads, example_bytes, first_calls
from tensorforge.engine.tactics import BindContext, candidates
from tensorforge.engine.timing import TimingCache, select_tactic, timing_key
from tensorforge.ir import Sym, TensorType

DEVICE_NAME = "test-gpu"


def _dense_stack(widths=(64, 64, 64, 96), dtype="float16"):
    """Dense layers; the two 64->64 ones have the same timing key (the repeated blocks of a network)."""
    g = ir.Graph()
    torch_dtype = TensorType(dtype, ()).torch_dtype
    h = g.add_input("x", TensorType(dtype, (Sym("batch"), 16, widths[0])))
    for i, (k, n) in enumerate(zip(widths, widths[1:])):
        w = g.add_constant(torch.randn(n, k, dtype=torch_dtype) * 0.1, f"w{i}")
        b = g.add_constant(torch.randn(n, dtype=torch_dtype) * 0.1, f"b{i}")
        h = g.call("engine.dense", h, w, b, has_bias=True, activation="nn.relu")
    g.set_outputs([h])
    return g.verify()


def _work(graph, config):
    return [(node, candidates(node, "cuda", config)[0]) for node in graph.nodes]


def test_first_calls_are_the_triton_candidates_once_per_timing_key():
    pytest.importorskip("triton")
    graph, config = _dense_stack(), BuilderConfig(fp16=True)
    ctx = BindContext(torch.device("cuda"), config, 8)
    calls = first_calls(_work(graph, config), ctx, None, DEVICE_NAME)
    assert calls, "the Triton GEMM tiles are candidates of every dense layer"
    assert all(t.compiles for _, t in calls), "cuBLAS candidates compile nothing and are not called ahead"
    keys = [timing_key(node, t, DEVICE_NAME, ctx.env) for node, t in calls]
    assert len(keys) == len(set(keys))
    tiles = {t.name for _, t in calls}
    # three layers, two distinct shapes: each tile is called for two of them
    assert len(calls) == 2 * len(tiles)


def test_first_calls_skip_what_the_timing_cache_holds(tmp_path):
    pytest.importorskip("triton")
    graph, config = _dense_stack(), BuilderConfig(fp16=True)
    ctx = BindContext(torch.device("cuda"), config, 8)
    work = _work(graph, config)
    cache = TimingCache(str(tmp_path / "timing.json"))
    node, supported = work[-1]
    for t in supported:
        cache.put(timing_key(node, t, DEVICE_NAME, ctx.env), 1.0)
    calls = first_calls(work, ctx, cache, DEVICE_NAME)
    assert all(n is not node for n, _ in calls)
    assert calls, "the other shape's candidates are still called"


def test_nothing_is_compiled_ahead_on_the_cpu():
    graph, config = _dense_stack(dtype="float32"), BuilderConfig()
    ctx = BindContext(torch.device("cpu"), config, 8)
    assert compile_ahead(_work(graph, config), ctx, None, DEVICE_NAME) == 0
    assert 1 <= compile_threads() <= 8


@pytest.mark.gpu
def test_the_timing_finds_every_triton_candidate_compiled_and_the_plan_matches():
    pytest.importorskip("triton")
    from tensorforge.engine.tactics import gemm_triton_kernel

    kernel = gemm_triton_kernel.gemm_epilogue
    # what a launch calls on an in-memory cache miss: the method `_do_compile` in Triton 3.6 (the GPU machine) and
    # 3.8; before it, `kernel.compile`, which create_binder sets at the first launch on a device (and would
    # overwrite a wrapper set before), so that path launches once first
    hook = "_do_compile" if hasattr(kernel, "_do_compile") else "compile"
    if hook == "compile":
        # widths that are no multiple of 16: Triton specializes on divisibility by 16, so a launch at multiples of 16
        # (as below) would leave their kernels in the in-memory cache and the build below would compile nothing
        warm_graph = _dense_stack(widths=(24, 40))
        warm_ctx = BindContext(torch.device("cuda"), BuilderConfig(fp16=True), 4)
        for node, supported in _work(warm_graph, warm_ctx.config):
            select_tactic(node, supported, warm_ctx, TimingCache(), DEVICE_NAME)
    if not hasattr(kernel, hook):
        pytest.skip("this Triton's JITFunction has neither _do_compile nor compile to count compiles with")
    compiled_by: list[str] = []
    original = getattr(kernel, hook)

    def counting(*args, **kwargs):
        compiled_by.append(threading.current_thread().name)
        return original(*args, **kwargs)

    # Triton's in-memory cache may hold these specializations from another test's launches: drop it, so that every
    # kernel the build needs is compiled (from Triton's disk cache or anew) and counted
    device_caches = getattr(kernel, "device_caches", None)
    if hook == "_do_compile" and device_caches is not None:
        device_caches.clear()
        device_caches[torch.cuda.current_device()]  # its binder made here, not raced for by the compile threads
    graph = _dense_stack(widths=(80, 208, 208, 144))
    config = BuilderConfig(fp16=True)
    ctx = BindContext(torch.device("cuda"), config, 24)
    work = _work(graph, config)
    setattr(kernel, hook, counting)
    try:
        made = compile_ahead(work, ctx, None, DEVICE_NAME, threads=4)
        ahead = list(compiled_by)
        for node, supported in work:
            select_tactic(node, supported, ctx, TimingCache(), DEVICE_NAME)
    finally:
        setattr(kernel, hook, original)
    assert made >= 4
    assert ahead and all(name.startswith("tensorforge-compile") for name in ahead)
    assert compiled_by == ahead, "the timing compiled a kernel the workers had not"

    plan = Builder(config).build(graph, max_batch=24, device="cuda")
    x = torch.randn(24, 16, 80, dtype=torch.float16, device="cuda")
    (actual,) = plan.run(x)
    (expected,) = ir.execute(graph, x)
    torch.testing.assert_close(actual, expected, rtol=1e-2, atol=1e-2)
    assert all(layer.tactic != "reference" for layer in plan.layers)


def test_compile_threads_follow_the_environment(monkeypatch):
    monkeypatch.setenv("TENSORFORGE_COMPILE_THREADS", "3")
    assert compile_threads() == 3
    for wrong in ("many", "-3", "0"):  # never silently another number than the one asked for
        monkeypatch.setenv("TENSORFORGE_COMPILE_THREADS", wrong)
        with pytest.raises(ValueError, match="TENSORFORGE_COMPILE_THREADS must be a positive integer"):
            compile_threads()


def _peak_held(budget, sizes, meet=None) -> int:
    """The most bytes eight threads held at once, each holding one of `sizes` for 10 ms under `budget` (after
    meeting the others at `meet`, when given, so they surely overlap)."""
    held, peak, lock = [0], [0], threading.Lock()

    def work(nbytes):
        with budget.hold(nbytes):
            with lock:
                held[0] += nbytes
                peak[0] = max(peak[0], held[0])
            if meet is not None:
                meet.wait(timeout=10)
            time.sleep(0.01)
            with lock:
                held[0] -= nbytes

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, sizes))
    assert budget.used == 0
    return peak[0]


def test_the_byte_budget_bounds_what_workers_hold_at_once():
    assert 60 <= _peak_held(ByteBudget(100), [40, 40, 40, 30, 10, 60, 60, 20]) <= 100
    assert _peak_held(ByteBudget(100), [40, 250, 40]) == 250, "a request above the limit runs alone"
    assert _peak_held(ByteBudget(10**6), [40] * 8, threading.Barrier(8)) == 320, "under the limit, all at once"


def test_example_bytes_count_inputs_constants_and_outputs():
    graph = _dense_stack(widths=(64, 96))
    (node,) = graph.nodes
    # x [8, 16, 64], w [96, 64], b [96], out [8, 16, 96], float16
    assert example_bytes(node, {"batch": 8}) == 2 * (8 * 16 * 64 + 96 * 64 + 96 + 8 * 16 * 96)
