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
        m = forge.load({str(tmp_path / 'm.tforge')!r}, device="cpu")
        x = torch.load({str(tmp_path / 'x.pt')!r})
        expected = torch.load({str(tmp_path / 'expected.pt')!r})
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
        m.load_state_dict(torch.load({str(tmp_path / 'm.pth')!r}))   # weights_only: no pickled code
        x = torch.load({str(tmp_path / 'x.pt')!r})
        print("close", torch.allclose(m(x), torch.load({str(tmp_path / 'expected.pt')!r}), rtol=1e-4, atol=1e-5))
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


def test_a_saved_plan_for_another_machine_is_rebuilt_with_a_warning(small_net, tmp_path, monkeypatch):
    x = torch.randn(2, 3, 16, 16)
    module = forge.compile(small_net, (x,), device="cpu")
    expected = module(x)
    module.save(tmp_path / "m.tforge")
    import tensorforge.engine.plan as plan_module
    real = plan_module.fingerprint
    monkeypatch.setattr(plan_module, "fingerprint", lambda device: {**real(device), "torch": "1.0.0"})
    with pytest.warns(RuntimeWarning, match="cannot run here.*built with torch 2.1[0-9], this is 1.0.*rebuilt"):
        loaded = forge.load(tmp_path / "m.tforge", device="cpu")
    assert loaded.plans()["tensorforge_0"] == []
    assert torch.equal(loaded(x), expected)  # rebuilt from the saved region
    assert len(loaded.plans()["tensorforge_0"]) == 1
