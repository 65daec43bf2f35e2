"""The builder's choice of tactics: what it asks the tactic registry, for which device."""

from __future__ import annotations

import torch

from engine_helpers import BATCH
from tensorforge import ir
from tensorforge.engine import Builder, BuilderConfig
from tensorforge.engine import builder as builder_module
from tensorforge.ir import TensorType


def test_candidates_are_asked_for_the_build_device(monkeypatch):
    """The registry gets the device itself, not its type, so compute-capability requirements are judged on the
    device the plan is built for (with several GPUs, a build for cuda:1 is not judged by the current one)."""
    asked: list[object] = []
    candidates = builder_module.candidates

    def recording(node, device, config):
        asked.append(device)
        return candidates(node, device, config)

    monkeypatch.setattr(builder_module, "candidates", recording)
    g = ir.Graph("tiny")
    x = g.add_input("x", TensorType("float32", (BATCH, 4)))
    g.set_outputs([g.call("nn.relu", x)])
    plan = Builder(BuilderConfig(optimization_level=0)).build(g.verify(), max_batch=2, device="cpu")
    assert asked == [torch.device("cpu")] and plan.device == torch.device("cpu")
