"""The fuzzing suite's CI subset: a few hundred mutated files of every kind, and the harness checked against
failures planted on purpose (so a run that finds nothing means nothing was there, not that nothing was looked at).

The long run is `scripts/fuzz.py` (see tests/fuzz/results/README.md); `-m "not fuzz"` skips these.
"""

from __future__ import annotations

import random

import pytest

import fuzz_files
import fuzz_mutators as mut
import fuzz_runner as fr

pytestmark = pytest.mark.fuzz

# cases per kind in the CI subset: ~35 s of cases on two workers of a 2-core machine
CI_CASES = {"tforge": 150, "cache": 60, "onnx": 90}


@pytest.fixture(scope="session")
def fuzz_root(tmp_path_factory):
    """Seeds, canaries and folders for every test here (built once: ~20 s)."""
    root, manifest = fr.build_root(tmp_path_factory.mktemp("fuzz"))
    return root, manifest


def test_cases_are_reproducible_and_mutated(fuzz_root):
    root, manifest = fuzz_root
    for kind in fr.KINDS:
        for index in range(12):
            a = fr.make_case(kind, index, 7, root / "seeds", manifest)
            b = fr.make_case(kind, index, 7, root / "seeds", manifest)
            seed = fr.make_case(kind, index, 7, root / "seeds", manifest, mutate=False)
            assert a.data == b.data and a.mutations == b.mutations, f"{kind} case {index} is not reproducible"
            assert a.data != seed.data and a.mutations, f"{kind} case {index} left its seed unchanged"


@pytest.mark.parametrize("name", ["convnet", "opaque", "bert"])
def test_crafted_edits_pass_the_digest(fuzz_root, tmp_path, name):
    """A crafted case must get past the digest, or the fuzzer would only ever test the digest: a well-formed edit
    (a value renamed everywhere it is used) with the digest recomputed loads, runs, and still computes the same."""
    from safetensors.torch import load_file

    import tensorforge as forge

    def rename_in_main_graph(ctx, meta):
        graph = meta["graph"]
        regions = graph.pop("subgraphs")  # a region's boundary must stay its plan's
        try:
            return mut.m_rename_value(ctx, graph)
        finally:
            graph["subgraphs"] = regions

    root, manifest = fuzz_root
    data = (root / "seeds" / f"{name}.tforge").read_bytes()
    ctx = mut.Context(random.Random(0), manifest["canaries"], crafted=True)
    edited = fuzz_files._mutate_doc_in_container(ctx, data, fuzz_files.MODULE_KEY, [(1, rename_in_main_graph)])
    (tmp_path / "m.tforge").write_bytes(edited)
    io = load_file(str(root / "seeds" / f"{name}.io.safetensors"))
    out = forge.load(tmp_path / "m.tforge")(io["input_0"])
    assert ctx.log and "renamed" in ctx.log[0]
    assert (out - io["output_0"]).abs().max() <= 1e-5


def test_graph_documents_fail_only_as_format_errors(fuzz_root):
    """In process, fast: mutated graph documents of every seed (module graphs and plan graphs) through
    ir.graph_from_json and verify give a graph or GraphFormatError / VerificationError, nothing else."""
    import json

    from safetensors import safe_open

    from tensorforge.ir import GraphFormatError, VerificationError, graph_from_json

    root, manifest = fuzz_root
    docs = []
    for seed in manifest["tforge"]:
        with safe_open(str(root / "seeds" / seed["file"]), "pt") as f:
            meta = json.loads(f.metadata()[fuzz_files.MODULE_KEY])
            docs.append((meta["graph"], {k: f.get_tensor(k) for k in f.keys() if not k.startswith("__plans__/")}))
    escaped = {}
    for index in range(600):
        ctx = mut.Context(random.Random(index), manifest["canaries"], crafted=False)
        doc, tensors = ctx.rng.choice(docs)
        doc = json.loads(json.dumps(doc))
        try:
            desc = mut.weighted_choice(ctx, mut.GRAPH_MUTATIONS)(ctx, doc)
            doc = json.loads(ctx.dumps(doc))
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
            continue  # the mutation did not apply, or made JSON that does not parse (the loaders refuse that first)
        try:
            graph_from_json(doc, tensors).verify()
        except (GraphFormatError, VerificationError):
            pass
        except Exception as exc:  # noqa: BLE001 - any other class is the finding
            escaped.setdefault(f"{type(exc).__name__}: {exc}"[:200], (index, desc))
    assert not escaped, escaped


def test_harness_sees_every_planted_failure(fuzz_root):
    """Crash, hang, exception, file escape, each code-execution canary and a wrong answer are each classified as
    the finding they are; a clean case is not."""
    root, manifest = fuzz_root
    worker = fr.WorkerProcess("selftest", root, 6 << 30)
    worker.start([], timeout=300)
    watch = fr.Watch(root)
    wrong = {}
    try:
        for action, expected in fr.SELFTESTS.items():
            if action == "library" and not manifest["canaries"]["shared_library"]:
                continue  # no C compiler here to build the library canary
            case = fr.selftest_case(action)
            outcome = worker.request(fr.write_case(case, worker.case_dir, root / "seeds", manifest), timeout=5)
            escapes = watch.changes()
            if escapes:
                outcome["escapes"] = escapes
                watch.clean_canaries()
            got = fr.classify(case, outcome)
            if got != expected:
                wrong[action] = (got, expected)
            if "died" in outcome or "hang" in outcome:
                worker.start([], timeout=300)
                watch.state = watch._snapshot()
    finally:
        worker.stop()
    assert not wrong, f"planted failure -> (class given, class expected): {wrong}"


def test_fuzz_subset_has_no_findings(fuzz_root):
    """Mutated .tforge files and state_dicts, plan-cache entries and ONNX models: no code execution, no file
    written outside the case, no crash, hang, undocumented exception or silent wrong answer."""
    root, _ = fuzz_root
    config = fr.RunConfig(kinds=fr.KINDS, cases=CI_CASES, seed=0, workers=2, timeout=60, root=str(root))
    summary = fr.FuzzRun(config).run()
    assert summary["cases"] == sum(CI_CASES.values())
    assert summary["findings"] == 0, "\n" + fr.format_report(summary)


@pytest.mark.slow
def test_larger_fuzz_run_has_no_findings(fuzz_root):
    """Ten times the CI subset with another run seed (a few minutes on two cores)."""
    root, _ = fuzz_root
    cases = {"tforge": 1500, "cache": 600, "onnx": 900}
    config = fr.RunConfig(kinds=fr.KINDS, cases=cases, seed=1, workers=2, timeout=60, root=str(root))
    summary = fr.FuzzRun(config).run()
    assert summary["findings"] == 0, "\n" + fr.format_report(summary)
