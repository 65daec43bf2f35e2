"""The plan cache: in memory, on disk under a content hash, shared by models and processes."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import warnings

import torch

import tensorforge as forge

SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    from runtime.conftest import SmallNet
    import tensorforge as forge
    torch.manual_seed(0)
    net = SmallNet().eval()
    g, c = forge.partition_for_tensorforge(forge.frontends.from_torch(net, (torch.randn(2, 3, 16, 16),)))
    m = forge.build(g, c, device="cpu", cache_dir={cache!r})
    m.build_all(2)
    print("builds", m._cache.builds, "hits", m._cache.hits)
""")


def compiled(model, cache_dir, **options):
    graph, config = forge.partition_for_tensorforge(forge.frontends.from_torch(model, (torch.randn(2, 3, 16, 16),)))
    return forge.build(graph, config, device="cpu", cache_dir=str(cache_dir), **options)


def built_recording_warnings(model, cache_dir):
    """(the module built for batch 2 with `cache_dir`, every warning the build gave)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = compiled(model, cache_dir).build_all(2)
    return module, caught


def test_second_build_is_a_cache_hit(small_net, tmp_path):
    first = compiled(small_net, tmp_path).build_all(2)
    assert (first._cache.builds, first._cache.hits) == (1, 0)
    second = compiled(small_net, tmp_path).build_all(2)
    assert (second._cache.builds, second._cache.hits) == (0, 1)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(first(x), second(x))


def test_cache_key_changes_with_weights_and_options(small_net, tmp_path):
    compiled(small_net, tmp_path).build_all(2)
    with torch.no_grad():
        small_net.conv.weight.add_(1.0)
    changed = compiled(small_net, tmp_path).build_all(2)
    assert changed._cache.builds == 1, "new weights must not reuse the old plan"
    other_batch = compiled(small_net, tmp_path).build_all(4)
    assert other_batch._cache.builds == 1
    assert len(list(tmp_path.glob("*.plan"))) == 3


def test_corrupt_cache_file_is_rebuilt_with_a_warning(small_net, tmp_path):
    compiled(small_net, tmp_path).build_all(2)
    (path,) = tmp_path.glob("*.plan")
    path.write_bytes(b"not a plan")
    module, caught = built_recording_warnings(small_net, tmp_path)
    assert module._cache.builds == 1
    assert any("ignoring cached plan" in str(w.message) for w in caught)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(module(x), small_net(x), rtol=1e-4, atol=1e-5)


def test_a_warning_points_at_the_users_call(small_net, tmp_path):
    """However deep in tensorforge, and in torch's nn.Module machinery, a warning is raised, it names the user's line
    that led to it: here a forward call that finds a damaged cache entry."""
    compiled(small_net, tmp_path).build_all(2)
    (path,) = tmp_path.glob("*.plan")
    path.write_bytes(b"not a plan")
    module = compiled(small_net, tmp_path)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        module(torch.randn(2, 3, 16, 16))
    (warning,) = [w for w in caught if "ignoring cached plan" in str(w.message)]
    assert (warning.filename, warning.lineno) == (__file__, line)


def _run(cache_dir, tests_dir):
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(tests=str(tests_dir), cache=str(cache_dir))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cache_is_shared_across_processes(tmp_path, request):
    tests_dir = request.path.parent.parent
    first = _run(tmp_path, tests_dir)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert "builds 1 hits 0" in out
    second = _run(tmp_path, tests_dir)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert "builds 0 hits 1" in out


def test_two_processes_building_the_same_plan_both_succeed(tmp_path, request):
    tests_dir = request.path.parent.parent
    procs = [_run(tmp_path, tests_dir) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert len(list(tmp_path.glob("*.plan"))) == 1
    assert not list(tmp_path.glob("*.tmp")), "no temporary files may be left behind"


def test_an_entry_copied_under_another_key_is_refused_and_rebuilt(small_net, tmp_path):
    """Another model's valid plan placed under this model's key would give that model's answers."""
    torch.manual_seed(1)
    other = type(small_net)().eval()  # the same architecture, other weights: a valid plan, the wrong answers
    compiled(other, tmp_path / "other").build_all(2)
    compiled(small_net, tmp_path / "mine").build_all(2)
    (foreign,) = (tmp_path / "other").glob("*.plan")
    (mine,) = (tmp_path / "mine").glob("*.plan")
    mine.write_bytes(foreign.read_bytes())
    module, caught = built_recording_warnings(small_net, tmp_path / "mine")
    assert module._cache.builds == 1 and module._cache.hits == 0
    assert any("but it was built for key" in str(w.message) for w in caught)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(module(x), small_net(x), rtol=1e-4, atol=1e-4)


def test_an_unwritable_entry_warns_and_inference_goes_on(small_net, tmp_path):
    module = compiled(small_net, tmp_path)
    key_paths_before = set(tmp_path.iterdir())
    module.build_all(2)
    (entry,) = set(tmp_path.iterdir()) - key_paths_before
    entry.unlink()
    entry.mkdir()  # a directory where the entry should be: reading and writing it both fail
    again, caught = built_recording_warnings(small_net, tmp_path)
    assert again._cache.builds == 1
    assert any("could not write plan cache entry" in str(w.message) for w in caught)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(x), small_net(x), rtol=1e-4, atol=1e-4)


def test_an_unusable_cache_directory_warns_and_inference_goes_on(small_net, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    module, caught = built_recording_warnings(small_net, blocked / "cache")
    assert module._cache.directory is None and module._cache.builds == 1
    assert any("cannot be used" in str(w.message) for w in caught)
