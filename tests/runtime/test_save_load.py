"""Saving and loading: one .tforge file, and the torch2trt-style state_dict, each restored in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

import tensorforge as forge
from tensorforge.runtime import ModuleFormatError


def _fresh_process(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_save_and_load_in_a_fresh_process(fallback_net, tmp_path):
    x = torch.randn(3, 16)
    module = forge.compile(fallback_net, (x,), device="cpu")
    module(x)  # builds the plans, which are saved too
    module.save(tmp_path / "m.tforge")
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(fallback_net(x), tmp_path / "expected.pt")
    out = _fresh_process(f"""
        import torch, tensorforge as forge
        m = forge.load({str(tmp_path / "m.tforge")!r}, device="cpu")
        x = torch.load({str(tmp_path / "x.pt")!r})
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        print("plans", sum(len(p) for p in m.plans().values()))
        print("close", torch.allclose(m(x), expected, rtol=1e-4, atol=1e-5))
    """)
    assert "plans 2" in out and "close True" in out


def test_state_dict_round_trip_in_a_fresh_process(small_net, tmp_path):
    x = torch.randn(2, 3, 16, 16)
    trt_model = forge.convert(small_net, [x], max_batch_size=2, device="cpu")
    state = trt_model.state_dict()
    assert list(state) == ["tforge"] and state["tforge"].dtype == torch.uint8
    torch.save(state, tmp_path / "m.pth")
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(small_net(x), tmp_path / "expected.pt")
    out = _fresh_process(f"""
        import torch, tensorforge as forge
        m = forge.EngineModule()
        m.load_state_dict(torch.load({str(tmp_path / "m.pth")!r}))   # weights_only: no pickled code
        x = torch.load({str(tmp_path / "x.pt")!r})
        print("close", torch.allclose(m(x), torch.load({str(tmp_path / "expected.pt")!r}), rtol=1e-4, atol=1e-5))
        print("plans", [p.max_batch for p in m.plans()["tensorforge_0"]])
    """)
    assert "close True" in out and "plans [2]" in out


def test_loading_garbage_is_a_clear_error(tmp_path):
    (tmp_path / "junk.tforge").write_bytes(b"\x00" * 64)
    with pytest.raises(ModuleFormatError, match="not a readable tensorforge module"):
        forge.load(tmp_path / "junk.tforge")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.tforge"))
    with pytest.raises(ModuleFormatError, match="not a tensorforge module"):
        forge.load(tmp_path / "foreign.tforge")


def test_a_newer_module_format_is_refused(small_net, tmp_path):
    module = forge.compile(small_net, (torch.randn(2, 3, 16, 16),), device="cpu")
    module.save(tmp_path / "m.tforge")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.tforge"), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    doc = json.loads(meta["tensorforge.module"])
    doc["version"] = 99
    save_file(tensors, str(tmp_path / "future.tforge"), metadata={"tensorforge.module": json.dumps(doc)})
    with pytest.raises(ModuleFormatError, match="v99 is not readable"):
        forge.load(tmp_path / "future.tforge")


def test_load_state_dict_without_the_key_reports_it():
    with pytest.raises(RuntimeError, match="Missing key"):
        forge.EngineModule().load_state_dict({})


def on_another_machine(monkeypatch):
    """From here on, every saved plan was built for another torch version than this process has."""
    import tensorforge.engine.plan as plan_module

    real = plan_module.fingerprint
    monkeypatch.setattr(plan_module, "fingerprint", lambda device: {**real(device), "torch": "1.0.0"})


def test_a_saved_plan_for_another_machine_is_rebuilt_with_a_warning(small_net, tmp_path, monkeypatch):
    x = torch.randn(2, 3, 16, 16)
    module = forge.compile(small_net, (x,), device="cpu")
    expected = module(x)
    module.save(tmp_path / "m.tforge", rebuildable=True)
    on_another_machine(monkeypatch)
    with pytest.warns(RuntimeWarning, match="cannot run here.*built with torch 2.1[0-9], this is 1.0.*rebuilt"):
        loaded = forge.load(tmp_path / "m.tforge", device="cpu")
    assert loaded.plans()["tensorforge_0"] == []
    assert torch.equal(loaded(x), expected)  # rebuilt from the saved region
    assert len(loaded.plans()["tensorforge_0"]) == 1


# -- each weight once, and the explicit choice to keep the regions' weights -----------------------------------


class Wide(torch.nn.Module):
    """Weights that dwarf everything else a file holds (3 MiB in three dense layers), with no folding or casting to
    change their size inside the plan: file sizes then count weights."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(512, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 512),
        )

    def forward(self, x):
        return self.layers(x)


@pytest.fixture
def wide():
    torch.manual_seed(0)
    model = Wide().eval()
    x = torch.randn(4, 512)
    module = forge.compile(model, (x,), device="cpu")
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(module(x), expected, rtol=1e-4, atol=1e-5)  # the plan for batch 4 is built
    return model, module, x, expected


def weight_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def test_a_saved_module_holds_each_weight_once(wide, tmp_path):
    model, module, x, expected = wide
    module.save(tmp_path / "once.tforge")
    module.save(tmp_path / "rebuildable.tforge", rebuildable=True)
    weights = weight_bytes(model)
    once, rebuildable = (tmp_path / "once.tforge").stat().st_size, (tmp_path / "rebuildable.tforge").stat().st_size
    assert weights <= once < 1.1 * weights, f"{once} bytes for {weights} bytes of weights"
    assert 2 * weights <= rebuildable < 2.1 * weights, f"{rebuildable} bytes for twice {weights} bytes of weights"
    loaded = forge.load(tmp_path / "once.tforge", device="cpu")
    assert torch.allclose(loaded(x), expected, rtol=1e-4, atol=1e-5)
    assert loaded(x[:1]).shape == (1, 512), "a smaller batch runs on the saved plan"
    loaded.save(tmp_path / "again.tforge")  # a module loaded without region weights saves as it was loaded
    assert (tmp_path / "again.tforge").stat().st_size == once
    assert torch.equal(forge.load(tmp_path / "again.tforge", device="cpu")(x), loaded(x))
    with pytest.raises(
        ValueError, match="loaded without the weights of regions tensorforge_0.*cannot be saved rebuildable"
    ):
        loaded.save(tmp_path / "never.tforge", rebuildable=True)


def test_a_rebuildable_module_round_trips_and_rebuilds(wide, tmp_path, monkeypatch):
    model, module, x, expected = wide
    module.save(tmp_path / "m.tforge", rebuildable=True)
    loaded = forge.load(tmp_path / "m.tforge", device="cpu")
    assert torch.equal(loaded(x), module(x)), "the saved plan runs"
    (weights,) = [v.data for v in loaded.regions["tensorforge_0"].constants.values() if v.data.dim() == 2][:1]
    assert weights.device.type == "cpu" and torch.equal(weights, model.layers[0].weight.detach())
    x8 = torch.randn(8, 512)
    with torch.no_grad():
        assert torch.allclose(loaded(x8), model(x8), rtol=1e-4, atol=1e-5), "a larger batch builds a larger plan"
    assert [p.max_batch for p in loaded.plans()["tensorforge_0"]] == [8]
    on_another_machine(monkeypatch)
    with pytest.warns(RuntimeWarning, match="rebuilt from the saved region"):
        moved = forge.load(tmp_path / "m.tforge", device="cpu")
    assert torch.equal(moved(x), module(x))


def test_a_plan_that_cannot_run_here_and_no_region_weights_is_a_clear_error(wide, tmp_path, monkeypatch):
    _, module, _, _ = wide
    module.save(tmp_path / "m.tforge")
    on_another_machine(monkeypatch)
    with pytest.raises(
        forge.engine.PlanCompatibilityError,
        match=r"region 'tensorforge_0' cannot run here \(.*built with torch.*\), and the file holds no "
        r"weights to rebuild it from.*module.save\(path, rebuildable=True\) \(tensorforge build "
        r"--rebuildable\)",
    ):
        forge.load(tmp_path / "m.tforge", device="cpu")


def test_a_batch_above_the_saved_plans_without_region_weights_is_a_clear_error(wide, tmp_path):
    _, module, x, _ = wide
    module.save(tmp_path / "m.tforge")
    loaded = forge.load(tmp_path / "m.tforge", device="cpu")
    with pytest.raises(
        ValueError,
        match=r"needs a plan for batch 8, but this module was saved without the region's "
        r"weights \(its saved plans are for max_batch 4\).*rebuildable=True",
    ):
        loaded(torch.randn(8, 512))
    with pytest.raises(ValueError, match="a batch of 0 .* rebuildable=True"):
        loaded(torch.randn(0, 512))


def test_multi_engine_1_without_region_weights_runs_a_batch_on_the_smallest_plan_that_covers_it(tmp_path):
    torch.manual_seed(0)
    model = Wide().eval()
    module = forge.compile(model, (torch.randn(2, 512),), device="cpu", multi_engine=1).build_all(2).build_all(6)
    module.save(tmp_path / "m.tforge")
    loaded = forge.load(tmp_path / "m.tforge", device="cpu")
    for batch in (1, 2, 3, 6):
        x = torch.randn(batch, 512)
        with torch.no_grad():
            assert torch.allclose(loaded(x), model(x), rtol=1e-4, atol=1e-5)
    assert sorted(p.max_batch for p in loaded.plans()["tensorforge_0"]) == [2, 6], "no plan was built"
    with pytest.raises(ValueError, match="needs a plan for batch 7"):
        loaded(torch.randn(7, 512))
