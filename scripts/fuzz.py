"""Fuzz tensorforge's loaders: mutated .tforge files / state_dicts, plan-cache entries and ONNX models.

    python scripts/fuzz.py --kind tforge --cases 10000 --seed 1 --out tests/fuzz/results/tforge.json
    python scripts/fuzz.py --kind tforge,cache,onnx --cases 200 --findings /tmp/findings
    python scripts/fuzz.py --replay /tmp/findings/crash-exception/tforge-convnet-file-12.tforge --kind tforge \\
        --seed-model convnet --loader file

Every case runs in a worker subprocess (fresh CWD and HOME, a memory limit, a timeout) and is classified as
described in tests/fuzz/fuzz_runner.py; the summary (counts per class, findings grouped by root cause with their
simplest examples) is printed as a table and written as JSON with --out. The exit status is 1 when there are
findings. --replay runs one saved file the same way and prints its outcome in full.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fuzz"))

import fuzz_runner


def _replay(args) -> int:
    root, manifest = fuzz_runner.build_root(Path(args.root) if args.root else None)
    seed = args.seed_model
    data = Path(args.replay).read_bytes()
    entry = ""
    if args.kind == "cache":  # the entry whose key the plan carries (else the seed's first)
        entries = next(s for s in manifest["tforge"] if s["name"] == seed)["cache"]
        entry = next((e for e in entries if Path(e).stem.encode() in data), entries[0])
    loader = args.loader or {"tforge": "file", "cache": "cache", "onnx": "onnx"}[args.kind]
    case = fuzz_runner.Case(
        args.kind, 0, seed, loader, data, entry=entry, mutations=["replayed " + args.replay], through_module=True
    )
    worker = fuzz_runner.WorkerProcess("replay", root, int(args.memory_gib * (1 << 30)))
    run = fuzz_runner.FuzzRun(fuzz_runner.RunConfig(root=str(root)))
    run._start(worker)
    watch = fuzz_runner.Watch(root)
    try:
        outcome = worker.request(fuzz_runner.write_case(case, worker.case_dir, root / "seeds", manifest), args.timeout)
        if "died" in outcome or "hang" in outcome:
            outcome["log_tail"] = worker.log_tail(40)
        escapes = watch.changes()
        if escapes:
            outcome["escapes"] = escapes
    finally:
        worker.stop()
    cls = fuzz_runner.classify(case, outcome)
    print(json.dumps({"class": cls, "signature": fuzz_runner.signature(case, cls, outcome), **outcome}, indent=1))
    return 1 if cls in fuzz_runner.FINDINGS else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="tforge,cache,onnx", help="comma-separated: tforge, cache, onnx")
    parser.add_argument("--cases", type=int, default=200, help="cases per kind")
    parser.add_argument("--seed", type=int, default=0, help="run seed: the same seed gives the same cases")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--memory-gib", type=float, default=6.0, help="address-space limit of each worker")
    parser.add_argument("--out", help="write the JSON summary here")
    parser.add_argument("--markdown", help="write the tables here")
    parser.add_argument("--findings", help="copy the mutated files of findings into this folder")
    parser.add_argument("--root", help="run folder (reuses the seeds already built there)")
    parser.add_argument("--replay", help="run one saved file (with --kind, --seed-model, --loader), print everything")
    parser.add_argument("--seed-model", default="convnet", help="with --replay: the seed the file came from")
    parser.add_argument("--loader", choices=["file", "state_dict"], help="with --replay --kind tforge")
    args = parser.parse_args(argv)
    if args.replay:
        return _replay(args)
    kinds = tuple(k.strip() for k in args.kind.split(",") if k.strip())
    unknown = set(kinds) - set(fuzz_runner.KINDS)
    if unknown:
        parser.error(f"unknown kind(s) {sorted(unknown)}; choose from {fuzz_runner.KINDS}")
    config = fuzz_runner.RunConfig(
        kinds=kinds,
        cases={k: args.cases for k in kinds},
        seed=args.seed,
        workers=args.workers,
        timeout=args.timeout,
        memory_gib=args.memory_gib,
        findings_dir=args.findings,
        root=args.root,
        progress=True,
    )
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    summary = fuzz_runner.FuzzRun(config).run()
    summary["started"] = started
    report = fuzz_runner.format_report(summary)
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1, default=str))
    if args.markdown:
        Path(args.markdown).write_text(report + "\n")
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
