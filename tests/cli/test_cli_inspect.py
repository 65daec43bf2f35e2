"""`tensorforge inspect` of a module where a node stays in PyTorch: the regions around it, and its reason."""

from __future__ import annotations

import json

from cli.conftest import assert_ok, tforge

REASON = "no IR op: torch.aten.logcumsumexp.default runs through PyTorch"


def test_inspect_lists_every_fallback_reason_by_op(fallback_plan):
    result = tforge("inspect", fallback_plan, "--json", "--device", "cpu")
    assert_ok(result)
    doc = json.loads(result.stdout)
    assert doc["fallback"] == {"torch.aten.logcumsumexp.default": {REASON: ["logcumsumexp"]}}
    assert doc["fallback_nodes"] == 1 and doc["nodes"] == {"total": 6, "offloaded": 5}
    assert [r["name"] for r in doc["regions"]] == ["tensorforge_0", "tensorforge_1"]
    assert all(len(r["plans"]) == 1 and r["plans"][0]["layers"][0]["op"] == "engine.dense" for r in doc["regions"])
    assert doc["macs"] == sum(r["macs"] for r in doc["regions"]) == 2 * (16 * 16 + 16 * 4)  # batch 2


def test_inspect_text_shows_the_reason_under_its_op(fallback_plan):
    result = tforge("inspect", fallback_plan, "--device", "cpu")
    assert_ok(result)
    lines = result.stdout.splitlines()
    at = lines.index("stayed in PyTorch, by op and reason:")
    assert lines[at + 1 : at + 3] == ["  torch.aten.logcumsumexp.default (1):", f"    {REASON}: logcumsumexp"]
    assert "regions (2):" in lines and "1 node(s) run in PyTorch" in result.stdout
