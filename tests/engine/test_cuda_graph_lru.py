"""The CUDA-graph cache of `GraphRunner`: at most `max_graphs` graphs, least recently used out, a seen shape never
captured again while it is held, failed captures remembered (bounded) and run eagerly, stats that count it all.

The bookkeeping runs on CPU with a fake capture (the runner takes any `capture` callback); the tests marked `gpu`
drive real CUDA graphs over 20 shapes and check outputs against eager and that GPU memory stays bounded."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pytest
import torch

from tensorforge.engine import cuda_graphs
from tensorforge.engine.cuda_graphs import LRU, GraphRunner, GraphStats


class FakeGraph:
    """A 'capture' that replays by calling the function on the inputs, remembering how often it replayed."""

    def __init__(self, fn, inputs: Sequence[torch.Tensor]) -> None:
        self.fn = fn
        self.shapes = [tuple(t.shape) for t in inputs]
        self.replays = 0

    def replay(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        assert [tuple(t.shape) for t in inputs] == self.shapes, "a graph replays only its own signature"
        self.replays += 1
        return tuple(self.fn(*inputs))


class FakeCapture:
    """Records every capture; raises for the shapes in `fail_rows` (as a capture of a host-syncing op would)."""

    def __init__(self, fail_rows: Collection[int] = ()) -> None:
        self.captured: list[FakeGraph] = []
        self.fail_rows = fail_rows

    def __call__(self, fn, inputs: Sequence[torch.Tensor]) -> FakeGraph:
        if inputs[0].shape[0] in self.fail_rows:
            raise RuntimeError("operation not permitted when stream is capturing")
        graph = FakeGraph(fn, inputs)
        self.captured.append(graph)
        return graph


def double(x: torch.Tensor) -> tuple[torch.Tensor]:
    return (x * 2,)


def call(runner: GraphRunner, rows: int) -> torch.Tensor:
    x = torch.randn(rows, 3)
    (y,) = runner(x)
    torch.testing.assert_close(y, x * 2)
    return y


def test_lru_evicts_the_least_recently_used_and_get_refreshes():
    cache: LRU[str, int] = LRU(2)
    assert cache.put("a", 1) == [] and cache.put("b", 2) == []
    assert cache.get("a") == 1  # a is now the most recent: b goes first
    assert cache.put("c", 3) == [("b", 2)]
    assert list(cache) == ["a", "c"] and len(cache) == 2
    assert "b" not in cache and cache.get("b") is None
    assert "a" in cache and list(cache) == ["a", "c"], "a membership test is not a use"
    assert cache.put("a", 10) == [] and cache.items() == [("c", 3), ("a", 10)]


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True, "8"])
def test_lru_refuses_a_capacity_that_is_not_a_positive_int(capacity):
    with pytest.raises(ValueError, match="at least 1 entry"):
        LRU(capacity)


@pytest.mark.parametrize("max_graphs", [0, -3, 2.0, None])
def test_runner_refuses_a_bad_max_graphs(max_graphs):
    with pytest.raises(ValueError, match="max_graphs must be a positive int"):
        GraphRunner(double, max_graphs=max_graphs, capture=FakeCapture())


def test_steady_traffic_over_few_shapes_replays_without_recapture():
    capture = FakeCapture()
    runner = GraphRunner(double, max_graphs=4, capture=capture)
    for _ in range(5):
        for rows in (1, 2, 3, 4):
            call(runner, rows)
    assert runner.stats == GraphStats(captures=4, replays=20, evictions=0)
    assert [g.replays for g in capture.captured] == [5, 5, 5, 5]
    assert runner.captured == 4


def test_twenty_shapes_keep_at_most_max_graphs_and_evict_the_oldest():
    capture = FakeCapture()
    runner = GraphRunner(double, max_graphs=4, capture=capture)
    for rows in range(1, 21):
        call(runner, rows)
        assert runner.captured <= 4
    assert runner.stats == GraphStats(captures=20, replays=20, evictions=16)
    assert [s[0][0][0] for s in runner.signatures()] == [17, 18, 19, 20]
    x = torch.randn(1, 3)
    assert not runner.knows([x]), "an evicted shape is forgotten"
    call(runner, 1)  # captured again, evicting 17
    assert runner.stats.captures == 21 and runner.stats.evictions == 17
    assert [s[0][0][0] for s in runner.signatures()] == [18, 19, 20, 1]


def test_a_replay_refreshes_its_graph_so_hot_shapes_stay():
    runner = GraphRunner(double, max_graphs=2, capture=FakeCapture())
    call(runner, 8)
    for rare in range(1, 6):  # the hot shape 8 between rare ones is never evicted
        call(runner, rare)
        call(runner, 8)
    assert runner.stats.captures == 6, "shape 8 was captured once"
    assert (8, 3) in [s[0][0] for s in runner.signatures()]


def test_signature_includes_dtype():
    runner = GraphRunner(lambda x: (x + 1,), max_graphs=4, capture=FakeCapture())
    runner(torch.ones(2, 3))
    runner(torch.ones(2, 3, dtype=torch.float64))
    assert runner.stats.captures == 2


def test_failed_capture_runs_eagerly_once_warned_and_is_remembered(caplog):
    capture = FakeCapture(fail_rows={5})
    runner = GraphRunner(double, name="toy", max_graphs=2, capture=capture)
    with caplog.at_level("WARNING", logger="tensorforge"):
        for _ in range(3):
            call(runner, 5)
    assert runner.stats == GraphStats(captures=0, replays=0, failed_captures=1, eager_runs=3)
    assert [r.message for r in caplog.records if "capture failed" in r.message] == [
        "toy: CUDA-graph capture failed (RuntimeError: operation not permitted when stream is capturing); "
        "running without a graph"
    ]
    assert runner.knows([torch.randn(5, 3)]) and runner.captured == 0
    assert list(runner.failures().values()) == ["RuntimeError: operation not permitted when stream is capturing"]


def test_failed_capture_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(cuda_graphs, "MAX_FAILED_CAPTURES", 3)
    runner = GraphRunner(double, max_graphs=2, capture=FakeCapture(fail_rows=set(range(1, 11))))
    for rows in range(1, 11):
        call(runner, rows)
    assert len(runner.failures()) == 3
    assert sorted(s[0][0][0] for s in runner.failures()) == [8, 9, 10]
    call(runner, 1)  # forgotten: tried (and refused) again
    assert runner.stats.failed_captures == 11 and runner.stats.eager_runs == 11


def test_evicted_graph_is_freed():
    """Eviction drops the runner's only reference: the graph (and on CUDA its buffers) is freed."""
    import weakref

    capture = FakeCapture()
    runner = GraphRunner(double, max_graphs=1, capture=capture)
    call(runner, 1)
    first = weakref.ref(capture.captured[0])
    capture.captured.clear()
    call(runner, 2)
    assert first() is None and runner.captured == 1


# -- on a GPU: real CUDA graphs --------------------------------------------------------------------------------------


def _live_memory() -> int:
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated()


@pytest.mark.gpu
def test_gpu_twenty_shapes_with_four_graphs_match_eager_and_memory_stays_bounded():
    weight = torch.randn(512, 512, device="cuda")

    def mlp(x: torch.Tensor) -> tuple[torch.Tensor]:
        return (torch.relu(x @ weight) @ weight.T,)

    # cuBLAS keeps a workspace per stream: let eager and a throwaway capture create theirs before measuring
    GraphRunner(mlp, max_graphs=1)(torch.randn(64, 512, device="cuda"))
    mlp(torch.randn(64, 512, device="cuda"))
    base = _live_memory()
    runner = GraphRunner(mlp, max_graphs=4)
    runner(torch.randn(64, 512, device="cuda"))
    one_graph = _live_memory() - base
    assert one_graph > 0
    shapes = list(range(64, 84))  # 20 shapes of about one size: unbounded, memory would reach ~20 graphs' worth
    held = []
    for _ in range(3):
        for rows in shapes:
            x = torch.randn(rows, 512, device="cuda")
            (y,) = runner(x)
            torch.testing.assert_close(y, mlp(x)[0], rtol=1e-2, atol=1e-2)  # TF32 products on either side
            del x, y
            assert runner.captured <= 4
        held.append(_live_memory() - base)
    assert runner.stats.captures == 60 and runner.stats.evictions == 56 and runner.stats.replays == 61
    assert held[0] <= 6 * one_graph, f"{held[0] / one_graph:.1f} graphs' worth held by 4 graphs"
    assert held[2] <= held[0] + (1 << 20), f"memory grew across rounds: {[h / 2**20 for h in held]} MiB"


@pytest.mark.gpu
def test_gpu_plan_over_twenty_batch_sizes_replays_held_shapes_without_recapture():
    from engine_helpers import graph_with_input
    from tensorforge.engine import Builder, BuilderConfig

    w1, w2 = torch.randn(128, 64) * 0.1, torch.randn(32, 128) * 0.1
    g, x = graph_with_input((64,), name="mlp")
    h = g.call("nn.relu", g.call("nn.dense", x, g.add_constant(w1.clone(), "w1")))
    g.set_outputs([g.call("nn.dense", h, g.add_constant(w2.clone(), "w2"))])
    plan = Builder(BuilderConfig()).build(g.verify(), max_batch=20, device="cuda")
    context = plan.create_execution_context()
    runner = GraphRunner(lambda *xs: plan.run(*xs, context=context, cuda_graph=False), max_graphs=4)
    w1, w2 = w1.cuda(), w2.cuda()
    for batch in list(range(1, 21)) + [17, 18, 19, 20] * 3:
        xb = torch.randn(batch, 64, device="cuda")
        (y,) = runner(xb)
        torch.testing.assert_close(
            y, torch.relu(xb @ w1.T) @ w2.T, rtol=1e-2, atol=1e-2
        )  # TF32 products on either side
        assert runner.captured <= 4
    assert runner.stats.captures == 20, "the last four batch sizes replayed their held graphs"
    assert runner.stats.replays == 32 and not runner.failures()
    base = _live_memory()
    for batch in list(range(1, 21)) * 2:
        runner(torch.randn(batch, 64, device="cuda"))
    assert runner.stats.captures == 60 and runner.captured == 4
    assert _live_memory() - base <= 1 << 20, "sweeping the shapes again holds no more memory"
