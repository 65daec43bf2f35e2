"""A file is data: what loading a `.tforge` (or a state_dict) can and cannot do.

Each test edits a real saved module the way an attacker or a damaged disk would and checks the documented
outcome: a ModuleFormatError that names the problem, nothing run, nothing created outside the process.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import tensorforge as forge
from tensorforge.ir.digest import seal
from tensorforge.runtime import ModuleFormatError

META = "tensorforge.module"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A module with two engine regions around a fallback logcumsumexp, plans built, saved with the regions' weights
    (so a plan that is refused can be rebuilt); and its eager answer."""
    from runtime.conftest import WithFallbackOp

    torch.manual_seed(0)
    net = WithFallbackOp().eval()
    x = torch.randn(3, 16)
    module = forge.compile(net, (x,), device="cpu")
    module(x)
    path = tmp_path_factory.mktemp("saved") / "m.tforge"
    module.save(path, rebuildable=True)
    with torch.no_grad():
        return path, x, net(x)


def edit_module(path, out, edit, *, reseal: bool = True):
    """Write `out`: the module at `path` with its description changed by `edit(doc, tensors)`; with `reseal` the
    digest is recomputed as a deliberately crafted file would carry it, so the checks behind the digest are reached."""
    with safe_open(str(path), framework="pt") as f:
        doc, tensors = json.loads(f.metadata()[META]), {k: f.get_tensor(k) for k in f.keys()}
    edit(doc, tensors)
    if reseal:
        seal(doc, tensors)
    save_file(tensors, str(out), metadata={META: json.dumps(doc)})
    return out


def _region_activation_to_silu(doc, tensors):
    for region in doc["graph"]["subgraphs"].values():
        for node in region["nodes"]:
            if node["op"] == "nn.relu":
                node["op"] = "nn.silu"
                return
    raise AssertionError("the saved module has no relu to change")


def _add_output_node(op, attrs):
    """An extra top-level node whose result is an extra graph output (a plan output gets no arena slot, so the
    original finding's payload ran while the module still printed the right answer)."""

    def edit(doc, tensors):
        graph = doc["graph"]
        graph["nodes"].append(
            {
                "name": "extra",
                "op": op,
                "inputs": [graph["inputs"][0]["name"]],
                "outputs": [{"name": "extra_out", "type": graph["inputs"][0]["type"]}],
                "attrs": attrs,
            }
        )
        graph["outputs"].append("extra_out")

    return edit


def test_an_edit_that_stays_well_formed_is_caught_by_the_digest(saved, tmp_path):
    path, _, _ = saved
    edited = edit_module(path, tmp_path / "silu.tforge", _region_activation_to_silu, reseal=False)
    with pytest.raises(ModuleFormatError, match="do not match its sha256 digest"):
        forge.load(edited, device="cpu")


def test_a_flipped_weight_bit_is_caught_by_the_digest(saved, tmp_path):
    path, _, _ = saved

    def flip(doc, tensors):
        name = next(k for k, t in tensors.items() if t.dtype == torch.float32 and t.numel() > 4)
        tensors[name] = tensors[name].clone()
        tensors[name].view(torch.int32)[0] ^= 1

    edited = edit_module(path, tmp_path / "flip.tforge", flip, reseal=False)
    with pytest.raises(ModuleFormatError, match="sha256"):
        forge.load(edited, device="cpu")


def test_a_flipped_plan_bit_is_caught_by_the_digest(saved, tmp_path):
    """A file saved with each weight once holds the weights inside its plans: a bit flipped there is caught too."""
    path, x, _ = saved
    module = forge.load(path, device="cpu")
    module.save(tmp_path / "once.tforge")

    def flip(doc, tensors):
        key = doc["plans"][0]["tensor"]
        tensors[key] = tensors[key].clone()
        tensors[key][-1] ^= 1

    edited = edit_module(tmp_path / "once.tforge", tmp_path / "flip.tforge", flip, reseal=False)
    with pytest.raises(ModuleFormatError, match="sha256"):
        forge.load(edited, device="cpu")


ATTACK = {"args": [{"input": 0}], "kwargs": {}, "output_types": [["float32", [3, 16]]]}


@pytest.mark.parametrize(
    "op, message",
    [
        ("torch.__class__.__init__.__getattribute__", "dunders"),
        ("torch.aten.save.default", "reads or writes files"),
        ("torch.os.system.default", "no operator"),
        ("onnx.__builtins__.exec", "look like"),
    ],
    ids=["attribute-walk", "aten-save", "os-system", "onnx-dunder"],
)
def test_a_crafted_op_name_is_refused_at_load_and_nothing_runs(saved, tmp_path, op, message):
    path, _, _ = saved
    canary = tmp_path / "payload-ran"
    attrs = {**ATTACK, "args": [{"input": 0}, str(canary)]}
    crafted = edit_module(path, tmp_path / "crafted.tforge", _add_output_node(op, attrs))
    with pytest.raises(ModuleFormatError, match=message):
        forge.load(crafted, device="cpu")
    assert not canary.exists()


def test_the_file_does_not_decide_where_plans_are_cached(saved, tmp_path, monkeypatch):
    path, x, expected = saved
    monkeypatch.delenv("TENSORFORGE_CACHE_DIR", raising=False)
    target = tmp_path / "chosen-by-the-file"
    crafted = edit_module(
        path,
        tmp_path / "cache.tforge",
        lambda doc, tensors: doc["options"].update(
            cache_dir=str(target), max_workspace_size=1 << 45, timing_cache=str(target / "timing.json")
        ),
    )
    module = forge.load(crafted, device="cpu")
    assert module.options.cache_dir is None and module.builder_config.max_workspace_size == 1 << 30
    assert module.builder_config.timing_cache is None
    torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-5)
    assert not target.exists()
    chosen = forge.load(crafted, device="cpu", cache_dir=str(tmp_path / "mine"), max_workspace_size=1 << 20)
    assert chosen.options.cache_dir == str(tmp_path / "mine") and chosen.builder_config.max_workspace_size == 1 << 20


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda doc, t: doc["options"].update(fp16="yes"), "options.fp16 must be bool"),
        (lambda doc, t: doc["options"].update(max_streams=True), "options.max_streams must be int"),
        (lambda doc, t: doc["plans"][0].update(region="nowhere"), "names region 'nowhere'"),
        (lambda doc, t: doc["plans"][0].update(profile={"batch": [4, 1, 2]}), "malformed profile.*min <= opt <= max"),
        (lambda doc, t: doc["plans"][0].update(profile=[1, 2]), "malformed profile.*JSON object"),
        (lambda doc, t: doc["plans"][0].pop("profile") and doc["plans"][0].update(max_batch=0), "max_batch 0"),
        (lambda doc, t: doc["plans"][0].update(tensor="../../etc/passwd"), "not a plan blob"),
        (lambda doc, t: doc["plans"].append("x"), "TypeError"),
        (lambda doc, t: doc.update(version=1), "v1 is not readable"),
    ],
    ids=[
        "option-type",
        "option-bool-as-int",
        "plan-region",
        "plan-profile",
        "plan-profile-type",
        "plan-v3-batch",
        "plan-tensor",
        "plan-entry",
        "version-1",
    ],
)
def test_every_malformed_field_is_a_module_format_error(saved, tmp_path, edit, message):
    path, _, _ = saved
    crafted = edit_module(path, tmp_path / "bad.tforge", edit)
    with pytest.raises(ModuleFormatError, match=message):
        forge.load(crafted, device="cpu")


def test_a_plan_of_another_region_is_refused(saved, tmp_path):
    path, _, _ = saved

    def swap(doc, tensors):
        first, second = doc["plans"][0], doc["plans"][1]
        first["tensor"], second["tensor"] = second["tensor"], first["tensor"]

    crafted = edit_module(path, tmp_path / "swapped.tforge", swap)
    with pytest.raises(ModuleFormatError, match="is not a plan of that region"):
        forge.load(crafted, device="cpu")


def test_a_crafted_state_dict_is_refused_by_load_state_dict(saved, tmp_path):
    path, _, _ = saved
    crafted = edit_module(
        path, tmp_path / "crafted.tforge", _add_output_node("torch.__class__.__init__.__getattribute__", ATTACK)
    )
    state = {"tforge": torch.frombuffer(bytearray(crafted.read_bytes()), dtype=torch.uint8)}
    with pytest.raises(RuntimeError, match="dunders"):
        forge.EngineModule().load_state_dict(state)


def test_json_nested_deep_is_a_module_format_error(saved, tmp_path):
    path, _, _ = saved
    with safe_open(str(path), framework="pt") as f:
        text, tensors = f.metadata()[META], {k: f.get_tensor(k) for k in f.keys()}
    deep = text.replace('"plans": [', '"plans": [' + "[" * 100_000 + "]" * 100_000 + ", ", 1)
    save_file(tensors, str(tmp_path / "deep.tforge"), metadata={META: deep})
    with pytest.raises(ModuleFormatError, match="not valid JSON"):
        forge.load(tmp_path / "deep.tforge", device="cpu")


# -- what the fuzzing suite's long run found (tests/fuzz/results/README.md), one regression test each ------------


def _plan_entry_edit(edit):
    """Edit the JSON of the module's first saved plan (and reseal the plan's digest), as a crafted file would."""
    from safetensors.torch import load as load_tensors
    from safetensors.torch import save as save_tensors

    def change(doc, tensors):
        key = doc["plans"][0]["tensor"]
        data = tensors[key].numpy().tobytes()
        n = int.from_bytes(data[:8], "little")
        plan = json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["tensorforge.plan"])
        inner = load_tensors(data)
        edit(plan, inner)
        seal(plan, inner)
        text = json.dumps(plan).replace('"__LONG_INT__"', "9" * 5000)  # json.dumps itself refuses such an int
        tensors[key] = torch.frombuffer(
            bytearray(save_tensors(inner, metadata={"tensorforge.plan": text})), dtype=torch.uint8
        )

    return change


def test_a_plan_with_a_negative_arena_is_rebuilt_not_run(saved, tmp_path):
    path, x, expected = saved
    crafted = edit_module(
        path, tmp_path / "neg.tforge", _plan_entry_edit(lambda plan, t: plan["memory"].update(arena_bytes=-1))
    )
    with pytest.warns(RuntimeWarning, match="negative size or offset.*rebuilt"):
        module = forge.load(crafted, device="cpu")
    torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-5)


def test_a_plan_with_an_integer_too_long_to_read_is_rebuilt(saved, tmp_path):
    path, x, expected = saved
    crafted = edit_module(
        path, tmp_path / "long.tforge", _plan_entry_edit(lambda plan, t: plan.update(max_batch="__LONG_INT__"))
    )
    with pytest.warns(RuntimeWarning, match="not valid JSON.*rebuilt"):
        module = forge.load(crafted, device="cpu")
    torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-5)


def _opaque_node(doc):
    return next(n for n in doc["graph"]["nodes"] if n["op"].startswith("torch."))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda n: n["attrs"].update(kwargs=[1]), "kwargs must be an object"),
        (lambda n: n["attrs"].update(callee="tensorforge_0"), r"unknown attribute\(s\) \['callee'\]"),
        (lambda n: n["attrs"].update(args=[{"input": 0}] * 9), "positional arguments, the operator takes at most"),
        (lambda n: n["attrs"]["kwargs"].update(evil=1), r"keyword argument\(s\) \['evil'\]"),
        (lambda n: n["attrs"].update(args=[{"input": 7}, 1]), r"refer to input\(s\) \[7\]"),
    ],
    ids=["kwargs-list", "extra-attribute", "too-many-args", "unknown-kwarg", "input-out-of-range"],
)
def test_opaque_node_attributes_are_checked_when_the_file_is_read(saved, tmp_path, edit, message):
    path, _, _ = saved
    crafted = edit_module(path, tmp_path / "attrs.tforge", lambda doc, t: edit(_opaque_node(doc)))
    with pytest.raises(ModuleFormatError, match=message):
        forge.load(crafted, device="cpu")


def test_a_failing_fallback_op_is_a_layer_error_naming_the_node(saved, tmp_path):
    from tensorforge.engine import LayerError

    path, x, _ = saved
    crafted = edit_module(
        path, tmp_path / "arg.tforge", lambda doc, t: _opaque_node(doc)["attrs"].update(args=[1, 1])
    )  # an int where a tensor goes
    module = forge.load(crafted, device="cpu")
    with pytest.raises(LayerError, match="fallback node '.*' .*failed"):
        module(x)
