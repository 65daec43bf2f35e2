"""One compiled module called from many threads at once (issue 11): every output must be the one eager PyTorch
gives for that input.

A plan is shared and immutable; each calling thread runs it in its own execution context (arena, CUDA graphs,
side streams), and plan building and selection are locked, so a cold start from eight threads builds each plan
once. The threads call with different inputs at the same moment (each thread walks the input pool from its own
offset): had two threads shared an arena, one would read the other's activations and its output would be wrong,
which is what these tests look for. The model is a real ResNet-18 (at 16x16, so that the CPU tests stay quick).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import tensorforge as forge

torchvision = pytest.importorskip("torchvision")

THREADS = 8
CALLS = 25
BATCHES = (1, 2, 3, 4)
# a plan folds batch norm and fuses bias and ReLU into the convolutions, so it rounds differently from eager; a
# thread that read another thread's activations is off by O(1), far outside this
CPU_TOL = dict(rtol=1e-4, atol=1e-4)
GPU_FP16_REL_TOL = 2e-2  # an FP16 plan against FP32 eager, as in tests/engine/test_gpu_engine.py


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def partitioned(resnet):
    """The exported, partitioned graph, made once: every test builds its own modules (and plans) from it."""
    graph = forge.frontends.from_torch(resnet, (torch.randn(2, 3, 16, 16),))
    return forge.partition_for_tensorforge(graph, use_implicit_batch=False)


@pytest.fixture(scope="module")
def pool(resnet):
    """Inputs of mixed batch sizes, each with its eager output (computed once, on the calling thread)."""
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(batch, 3, 16, 16, generator=generator) for batch in BATCHES * 3]
    with torch.no_grad():
        return inputs, [resnet(x) for x in inputs]


def cpu_module(partitioned, **options):
    module = forge.build(*partitioned, device="cpu", **options)
    assert all(n.op == "subgraph" for n in module.graph.nodes), "the whole ResNet runs in the engine"
    return module


@pytest.fixture(scope="module")
def warm_module(partitioned):
    """A module whose plan is built (for the largest batch) before any thread calls it."""
    return cpu_module(partitioned).build_all(max(BATCHES))


def hammer(
    calls: Sequence[Callable],
    inputs: list,
    order: Callable[[int, int], int],
    *,
    between: Callable[[], None] | None = None,
) -> list[list]:
    """Thread t calls `calls[t]` CALLS times, on inputs[order(t, k)] at its k-th call, all threads starting at the
    same moment (a barrier). With `between`, every thread waits after its first call until all have made theirs,
    and `between` runs once then (to look at what a cold start built). Returns [thread][call] -> (index, output).
    An exception in any thread is raised here."""
    start = threading.Barrier(len(calls))
    after_first = threading.Barrier(len(calls), action=between) if between else None

    def work(t: int) -> list:
        results = []
        start.wait()
        for k in range(CALLS):
            i = order(t, k)
            results.append((i, calls[t](inputs[i])))
            if k == 0 and after_first is not None:
                after_first.wait()
        return results

    with ThreadPoolExecutor(len(calls)) as executor:
        futures = [executor.submit(work, t) for t in range(len(calls))]
        return [f.result() for f in futures]


def mixed(t: int, k: int) -> int:
    """Every thread walks the pool from its own offset, so threads run different inputs (and batches) at once."""
    return (3 * t + 5 * k) % len(BATCHES * 3)


def wrong_outputs(results, expected, check) -> list[str]:
    wrong = []
    for t, per_thread in enumerate(results):
        for k, (i, actual) in enumerate(per_thread):
            try:
                check(actual, expected[i])
            except AssertionError as exc:
                detail = " ".join(line.strip() for line in str(exc).splitlines()[:3])
                wrong.append(f"thread {t} call {k} (input {i}, batch {expected[i].shape[0]}): {detail}")
    return wrong


def assert_all_match_eager(results, expected) -> None:
    wrong = wrong_outputs(results, expected, lambda a, e: torch.testing.assert_close(a, e, **CPU_TOL))
    total = sum(len(r) for r in results)
    assert not wrong, f"{len(wrong)} of {total} outputs differ from eager:\n" + "\n".join(wrong[:5])


def only_plan(module):
    (plans,) = module.plans().values()
    return plans


def test_warm_module_from_eight_threads_matches_eager(warm_module, pool):
    inputs, expected = pool
    module = warm_module
    results = hammer([module] * THREADS, inputs, mixed)
    assert_all_match_eager(results, expected)
    (plan,) = only_plan(module)
    assert module._cache.builds == 1 and plan.max_batch == max(BATCHES)
    assert len(plan.layers) > 20 and plan.counters["fold_batch_norm"] == 20, "ResNet-18's layers ran in the plan"


@pytest.mark.parametrize("multi_engine", [0, 1])
def test_cold_start_from_eight_threads_builds_each_plan_once(partitioned, pool, multi_engine):
    """All threads make their first call at once on a module with no plan. Mode 0: the first calls all have batch 2
    (one build), later calls up to batch 4 grow the plan while other threads still run the smaller one. Mode 1:
    the first calls have batch 1 or 3, so two plans race to be built, each exactly once."""
    inputs, expected = pool
    module = cpu_module(partitioned, multi_engine=multi_engine)
    if multi_engine == 0:
        batches = [x.shape[0] for x in inputs]
        first = [batches.index(2)] * THREADS
        order = lambda t, k: first[t] if k == 0 else mixed(t, k)  # noqa: E731
        expected_plans = [max(BATCHES)]
    else:
        usable = [i for i, x in enumerate(inputs) if x.shape[0] in (1, 3)]
        order = lambda t, k: usable[(t + k) % len(usable)]  # noqa: E731 - thread t starts on batch 1 or 3
        expected_plans = [1, 3]
    after_cold_start = {}
    results = hammer(
        [module] * THREADS,
        inputs,
        order,
        between=lambda: after_cold_start.update(
            builds=module._cache.builds, plans=sorted(p.max_batch for p in only_plan(module))
        ),
    )
    assert_all_match_eager(results, expected)
    if multi_engine == 0:
        assert after_cold_start == {"builds": 1, "plans": [2]}, "eight racing first calls build one plan"
        assert 2 <= module._cache.builds <= 3, "growing to batch 4 builds once per larger batch, at most 3 then 4"
    else:
        assert after_cold_start == {"builds": 2, "plans": [1, 3]}, "each batch's plan is built once"
        assert module._cache.builds == 2
    assert sorted(p.max_batch for p in only_plan(module)) == expected_plans


def test_growing_plan_while_threads_use_their_own_contexts(partitioned, pool):
    """`module.create_context()` per worker (a pinned context): half the threads use one, half the module itself,
    while multi-engine mode 0 replaces the plan under them (first calls at batch 1, then up to 4)."""
    inputs, expected = pool
    module = cpu_module(partitioned)
    contexts = [module.create_context() if t % 2 else module for t in range(THREADS)]
    assert len({id(c) for c in contexts[1::2]}) == THREADS // 2, "each create_context() is a new context"
    batches = [x.shape[0] for x in inputs]
    order = lambda t, k: batches.index(1) if k == 0 else mixed(t, k)  # noqa: E731
    results = hammer(contexts, inputs, order)
    assert_all_match_eager(results, expected)
    assert [p.max_batch for p in only_plan(module)] == [max(BATCHES)]


def test_plan_run_from_eight_threads_matches_eager(warm_module, pool):
    """A plan run directly (no module, no context given) gives each calling thread its own context."""
    inputs, expected = pool
    (plan,) = only_plan(warm_module)
    results = hammer([lambda x: plan.run(x)[0]] * THREADS, inputs, mixed)
    assert_all_match_eager(results, expected)


def test_a_context_in_use_on_another_thread_refuses_a_second_caller(warm_module, pool):
    """One context, two callers at once, would share one arena: the second must get an error, not a wrong answer.
    Another thread holds each context as a run in flight would, while this one calls it."""
    inputs, expected = pool
    (plan,) = only_plan(warm_module)
    module_context, plan_context = warm_module.create_context(), plan.create_execution_context()
    for context, call in (
        (module_context, lambda: module_context(inputs[0])),
        (plan_context, lambda: plan.run(inputs[0], context=plan_context)),
    ):
        held, release = threading.Event(), threading.Event()

        def hold(context=context, held=held, release=release):
            with context._in_use:
                held.set()
                release.wait()

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait()
        try:
            with pytest.raises(RuntimeError, match="running on another thread"):
                call()
        finally:
            release.set()
            holder.join()
        result = call()  # free again: it runs
        torch.testing.assert_close(result[0] if isinstance(result, tuple) else result, expected[0], **CPU_TOL)


# -- on a GPU, CUDA graphs on ------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("multi_engine", [0, 1])
def test_eight_threads_on_cuda_with_cuda_graphs_match_eager(resnet, multi_engine):
    """The GPU path: each thread captures and replays its own CUDA graphs (a graph writes into static buffers, so
    two threads replaying one graph would race). FP16 plan, cold start from all threads at once."""
    model = copy.deepcopy(resnet).cuda()
    generator = torch.Generator().manual_seed(2)
    inputs = [torch.randn(batch, 3, 64, 64, generator=generator).cuda() for batch in BATCHES * 3]
    with torch.no_grad():
        expected = [model(x) for x in inputs]
    module = forge.compile(model, (inputs[0],), precision="fp16", device="cuda", multi_engine=multi_engine)
    assert module.options.cuda_graph
    captured = {}

    def call(x):
        y = module(x)
        runner = module._graph_runner  # this thread's own
        captured[threading.get_ident()] = (id(runner), runner.captured, runner.failures())
        return y

    results = hammer([call] * THREADS, inputs, mixed)
    torch.cuda.synchronize()

    def check(actual, reference):
        rel = ((actual.float() - reference).abs().max() / reference.abs().max()).item()
        assert rel < GPU_FP16_REL_TOL, f"relative error {rel:.3g}"

    wrong = wrong_outputs(results, expected, check)
    assert not wrong, f"{len(wrong)} of {THREADS * CALLS} outputs differ from eager:\n" + "\n".join(wrong[:5])
    assert len({runner for runner, _, _ in captured.values()}) == len(captured) == THREADS, "a runner per thread"
    assert all(n >= 1 and not failures for _, n, failures in captured.values()), captured
    plans = only_plan(module)
    assert sorted(p.max_batch for p in plans) == ([4] if multi_engine == 0 else list(BATCHES))
    assert all(layer.precision == "float16" for p in plans for layer in p.layers if layer.op == "engine.conv")


# -- torch.inference_mode() -------------------------------------------------------------------------------------


def _inference_mode_then_not(module, inputs, expected, check) -> None:
    """The first calls under torch.inference_mode() (they allocate the arena and, on CUDA, capture the graphs),
    then calls outside it, then inside again: serving code mixes both, and an arena or graph buffer made as an
    inference tensor could not be written in place outside inference mode."""
    for mode in (True, False, True):
        with torch.inference_mode(mode):
            for x, want in zip(inputs, expected):
                check(module(x), want)


def test_calls_inside_and_outside_inference_mode(partitioned, pool):
    inputs, expected = pool
    module = cpu_module(partitioned)
    _inference_mode_then_not(
        module, inputs, expected, lambda got, want: torch.testing.assert_close(got, want, **CPU_TOL)
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_inside_and_outside_inference_mode(resnet):
    model = copy.deepcopy(resnet).cuda()
    generator = torch.Generator().manual_seed(3)
    inputs = [torch.randn(batch, 3, 64, 64, generator=generator).cuda() for batch in BATCHES]
    with torch.no_grad():
        expected = [model(x) for x in inputs]
    module = forge.compile(model, (inputs[0],), precision="fp16", device="cuda")
    assert module.options.cuda_graph

    def check(actual, reference):
        rel = ((actual.float() - reference).abs().max() / reference.abs().max()).item()
        assert rel < GPU_FP16_REL_TOL, f"relative error {rel:.3g}"

    _inference_mode_then_not(module, inputs, expected, check)
    assert module._graph_runner.captured >= 1 and not module._graph_runner.failures()
