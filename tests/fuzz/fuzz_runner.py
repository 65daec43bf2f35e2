"""The fuzzing harness: makes cases, runs them in worker subprocesses, classifies every outcome, and reports.

A run lives in one temporary root:

    <root>/seeds/     the seed files (fuzz_seeds.py)          <root>/canary/   where a payload that ran leaves a file
    <root>/canarylib/ the canary module and shared library    <root>/work/wN/  worker N's CWD, HOME and TMPDIR
    <root>/cases/wN/  the files of worker N's current case    <root>/logs/     each worker's stdout and stderr

Each worker is reused across cases; a case that outlives its timeout (a hang) or kills the worker (a crash) is a
finding, and the worker is restarted. After every case the harness checks that nothing appeared outside the
case's folder (canary, the worker's CWD/HOME/TMPDIR, the root, the seeds) and that no forbidden module was
imported. Classes (`FINDINGS` are failures, the rest are fine):

    ok                 loaded and ran; the output equals the unmutated one (ONNX: onnxruntime's on the same bytes)
    ok-warned          ran with a different output, but tensorforge warned
    accepted-crafted   a crafted file (digests recomputed) ran as a different model: fine, it is one
    ran-unchecked      ONNX: ran, but onnxruntime refuses the model, so there is nothing to compare with
    rejected           a documented error: ModuleFormatError, GraphFormatError, PlanCompatibilityError,
                       OnnxImportError (or, for state_dict bytes safetensors cannot parse, load_state_dict's error)
    rejected-at-run    loaded, then refused while running with a ValueError (or BuildError, or LayerError: a layer
                       that failed, named) raised by tensorforge
    oracle-failure     onnxruntime itself crashed or hung on the mutated model (not tensorforge's)
    -- findings --
    code-execution     a canary ran (module imported, library loaded, command or code executed)
    file-escape        a file appeared outside the case's folder, or external data was read from outside it
    silent-wrong-answer  loaded and ran, output differs, no warning, and the file was corrupted, not crafted
    wrong-answer       ONNX: tensorforge and onnxruntime disagree on the same (mutated) model, warning or not (a
                       warning such as "this node runs through onnxruntime" does not excuse another answer)
    undocumented-error   an exception class tensorforge defines, but not one its loaders document
    crash-exception    any other exception (KeyError, TypeError, RecursionError, torch's RuntimeError, ...)
    worker-died        the process died (segfault, abort, out of memory)
    hang               no answer within the case timeout
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import fuzz_files
import fuzz_mutators as mut
from fuzz_onnx_mutators import mutate_onnx

HERE = Path(__file__).resolve().parent
KINDS = ("tforge", "cache", "onnx")
DOCUMENTED_ERRORS = {"ModuleFormatError", "GraphFormatError", "PlanCompatibilityError", "OnnxImportError"}
RUN_STAGES = {"run", "plan-run", "build"}
FINDINGS = (
    "code-execution",
    "file-escape",
    "silent-wrong-answer",
    "wrong-answer",
    "undocumented-error",
    "crash-exception",
    "worker-died",
    "hang",
)
FINE = ("ok", "ok-warned", "accepted-crafted", "ran-unchecked", "rejected", "rejected-at-run", "oracle-failure")
# importing any of these during a case means a payload reached Python's machinery
FORBIDDEN_MODULES = {
    "fuzz_canary_payload",
    "antigravity",
    "this",
    "webbrowser",
    "pty",
    "code",
    "pdb",
    "telnetlib",
    "ftplib",
    "smtplib",
    "http.server",
    "xmlrpc.client",
}


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    kind: str
    index: int
    seed: str
    loader: str  # file | state_dict | cache | onnx
    data: bytes = field(repr=False)
    entry: str = ""  # the cache entry's file name (cache kind)
    mutations: list[str] = field(default_factory=list)
    crafted: bool = False
    through_module: bool = False  # cache kind: also load the module through the cache when the entry is refused


def make_case(kind: str, index: int, run_seed: int, seeds_dir: Path, manifest: dict, mutate: bool = True) -> Case:
    """Case `index` of `kind`, the same bytes for the same seed files, run seed and index."""
    rng = random.Random(f"{run_seed}/{kind}/{index}")
    count = rng.choices([1, 2, 3], weights=[6, 3, 1])[0]
    crafted = kind != "onnx" and rng.random() < 0.5
    ctx = mut.Context(rng, manifest["canaries"], crafted)
    if kind == "onnx":
        seed = rng.choice(manifest["onnx"])
        data = (seeds_dir / seed["file"]).read_bytes()
        case = Case(kind, index, seed["name"], "onnx", data)
        mutator = mutate_onnx
    else:
        seed = rng.choice(manifest["tforge"])
        if kind == "tforge":
            data = (seeds_dir / seed["file"]).read_bytes()
            case = Case(kind, index, seed["name"], "state_dict" if rng.random() < 0.25 else "file", data)
            mutator = fuzz_files.mutate_module
        else:
            entry = rng.choice(seed["cache"])
            data = (seeds_dir / seed["cache_dir"] / entry).read_bytes()
            case = Case(kind, index, seed["name"], "cache", data, entry=entry, through_module=rng.random() < 0.15)
            mutator = fuzz_files.mutate_plan
    if mutate:
        case.data = fuzz_files.apply_mutations(ctx, data, mutator, count)
        case.mutations = list(ctx.log)
        case.crafted = crafted
    return case


def warm_up_cases(seeds_dir: Path, manifest: dict) -> list[Case]:
    """Every seed once, unmutated (the worker learns each seed's own warnings; all must come out "ok")."""
    cases = []
    for seed in manifest["tforge"]:
        data = (seeds_dir / seed["file"]).read_bytes()
        cases.append(Case("tforge", -1, seed["name"], "file", data))
        cases.append(Case("tforge", -1, seed["name"], "state_dict", data))
        for entry in seed["cache"]:
            cases.append(
                Case(
                    "cache",
                    -1,
                    seed["name"],
                    "cache",
                    (seeds_dir / seed["cache_dir"] / entry).read_bytes(),
                    entry=entry,
                    through_module=True,
                )
            )
    for seed in manifest["onnx"]:
        cases.append(Case("onnx", -1, seed["name"], "onnx", (seeds_dir / seed["file"]).read_bytes()))
    return cases


# planted failure -> the class the harness must give it (the worker's _run_selftest plants them)
SELFTESTS = {
    "segfault": "worker-died",
    "hang": "hang",
    "exception": "crash-exception",
    "escape": "file-escape",
    "import": "code-execution",
    "library": "code-execution",
    "system": "code-execution",
    "wrong": "silent-wrong-answer",
    "nothing": "ok",
}


def selftest_case(action: str) -> Case:
    return Case("selftest", 0, "-", action, b"")


def _reads_outside(case: Case) -> bool:
    """An external-data location outside the model's folder survives in the case's mutations."""
    return any(re.search(r"external '(/|[^']*\.\.)", m) for m in case.mutations)


def write_case(case: Case, case_dir: Path, seeds_dir: Path, manifest: dict) -> dict:
    """Put the case's files in `case_dir` (emptied first) and return the worker's request."""
    shutil.rmtree(case_dir, ignore_errors=True)
    case_dir.mkdir(parents=True)
    request = {"kind": case.kind, "index": case.index, "seed": case.seed, "loader": case.loader}
    if case.kind in ("tforge", "selftest"):
        path = case_dir / "model.tforge"
    elif case.kind == "onnx":
        path = case_dir / "model.onnx"
        request["reads_outside"] = _reads_outside(case)
    else:
        seed = next(s for s in manifest["tforge"] if s["name"] == case.seed)
        cache_dir = case_dir / "cache"
        shutil.copytree(seeds_dir / seed["cache_dir"], cache_dir)
        path = cache_dir / case.entry
        request.update(
            cache_dir=str(cache_dir), noplans=str(seeds_dir / seed["noplans"]), through_module=case.through_module
        )
    path.write_bytes(case.data)
    request["path"] = str(path)
    return request


# ---------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------


def _limits(memory_bytes: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 30, 1 << 30))
        try:  # Linux: the worker dies with the harness (a hung case must not outlive an interrupted run)
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    return apply


class WorkerProcess:
    """One worker subprocess and its channel; `request` returns the outcome of one case."""

    def __init__(self, name: str, root: Path, memory_bytes: int):
        self.name, self.root, self.memory_bytes = name, root, memory_bytes
        self.home = root / "work" / name
        self.case_dir = root / "cases" / name
        self.log_path = root / "logs" / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.buffer = b""
        self.fd = -1
        self.restarts = -1

    def start(self, warm_up: list[dict], timeout: float) -> list[dict]:
        self.stop()
        self.restarts += 1
        for d in (self.home, self.home / "tmp", self.root / "logs"):
            d.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TENSORFORGE_", "FUZZ_", "PYTHON"))}
        canaries = json.loads((self.root / "seeds" / "manifest.json").read_text())["canaries"]
        env.update(
            HOME=str(self.home),
            TMPDIR=str(self.home / "tmp"),
            FUZZ_SEEDS=str(self.root / "seeds"),
            FUZZ_CHANNEL_FD=str(write_fd),
            PYTHONPATH=os.pathsep.join([str(HERE), canaries["pythonpath"]]),
            PYTHONDONTWRITEBYTECODE="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            CUDA_VISIBLE_DEVICES="",
        )
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "fuzz_worker.py")],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            cwd=self.home,
            env=env,
            pass_fds=(write_fd,),
            preexec_fn=_limits(self.memory_bytes),
            start_new_session=True,
        )
        log.close()
        os.close(write_fd)
        self.fd, self.buffer = read_fd, b""
        self._send({"warm_up": warm_up})
        message = self._receive("ready", timeout)
        if "ready" not in message:
            raise RuntimeError(f"worker {self.name} did not start: {message} (log: {self.log_path})")
        return message["ready"]

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait()
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _send(self, message: dict) -> None:
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def _receive(self, key: str, timeout: float) -> dict:
        """The next message carrying `key`; stage messages on the way are remembered. {"died"} or {"hang"} else."""
        deadline = time.monotonic() + timeout
        stage = None
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                message = json.loads(line)
                if key in message:
                    return message
                stage = message.get("stage", stage)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {"hang": True, "stage": stage}
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    code = self.proc.wait()
                    return {"died": code, "stage": stage}
                self.buffer += chunk

    def request(self, request: dict, timeout: float) -> dict:
        try:
            self._send(request)
        except (BrokenPipeError, OSError):
            return {"died": self.proc.poll(), "stage": None}
        return self._receive("result", timeout)

    def log_tail(self, lines: int = 12) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []


# ---------------------------------------------------------------------------------------------
# the file system watch
# ---------------------------------------------------------------------------------------------


def _listing(path: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(path):
        rel = os.path.relpath(dirpath, path)
        out.update(os.path.normpath(os.path.join(rel, n)) for n in dirnames + filenames)
    return out


class Watch:
    """What exists outside the case folders; `changes()` names whatever appeared or vanished since the last call."""

    def __init__(self, root: Path):
        self.root = root
        self.state = self._snapshot()

    def _snapshot(self) -> set[str]:
        state = {f"root/{n}" for n in os.listdir(self.root)}
        for sub in ("canary", "canarylib", "seeds", "work"):
            if (self.root / sub).exists():
                state |= {f"{sub}/{p}" for p in _listing(self.root / sub)}
        return state

    def changes(self) -> list[str]:
        now = self._snapshot()
        changed = sorted(f"+{p}" for p in now - self.state) + sorted(f"-{p}" for p in self.state - now)
        self.state = now
        return changed

    def clean_canaries(self) -> None:
        """Remove what payloads left, so each artifact is reported once."""
        for p in (self.root / "canary").iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        for p in self.root.iterdir():
            if p.name not in {"seeds", "canary", "canarylib", "work", "cases", "logs"}:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
        self.state = self._snapshot()


# ---------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------


def classify(case: Case, outcome: dict) -> str:
    if outcome.get("escapes"):
        return (
            "code-execution"
            if any(re.search(r"canary/(module-imported|library-loaded|system|exec)", e) for e in outcome["escapes"])
            else "file-escape"
        )
    if set(outcome.get("result", {}).get("new_modules", [])) & FORBIDDEN_MODULES:
        return "code-execution"
    if "died" in outcome or "hang" in outcome:
        if outcome.get("stage") == "oracle":
            return "oracle-failure"
        return "worker-died" if "died" in outcome else "hang"
    r = outcome["result"]
    if r["status"] == "escape":
        return "file-escape"
    if r["status"] == "error":
        if r["type"] in DOCUMENTED_ERRORS:
            return "rejected"
        if (
            r["stage"] in RUN_STAGES
            and r["raised_in_tensorforge"]
            and ("ValueError" in r["mro"] or r["type"] in ("BuildError", "LayerError"))
        ):
            return "rejected-at-run"
        if (
            case.loader == "state_dict"
            and r["type"] == "RuntimeError"
            and r["message"].startswith("Error(s) in loading state_dict")
        ):
            return "rejected"  # the bytes are not safetensors: torch's documented load_state_dict error
        if r["module"].startswith("tensorforge"):
            return "undocumented-error"
        return "crash-exception"
    if not r.get("oracle"):
        return "ran-unchecked"
    if r["equal"]:
        return "ok"
    if case.kind == "onnx":  # the oracle ran the same model: nothing excuses another answer
        return "wrong-answer"
    if r["warnings"]:
        return "ok-warned"
    return "accepted-crafted" if case.crafted else "silent-wrong-answer"


def _normalize(text: str) -> str:
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"/\S+", "/…", text)
    return re.sub(r"\d+", "N", text)[:140]


def signature(case: Case, cls: str, outcome: dict) -> str:
    """What findings of one root cause share: the exception and where it was raised, or what the mutation did."""
    r = outcome.get("result", {})
    if cls in ("worker-died", "hang", "oracle-failure"):
        return f"{cls} in stage {outcome.get('stage')}" + (f" (exit {outcome['died']})" if "died" in outcome else "")
    if cls in ("code-execution", "file-escape"):
        what = outcome.get("escapes") or sorted(set(r.get("new_modules", [])) & FORBIDDEN_MODULES) or [r.get("detail")]
        what = re.sub(r"\d+", "N", " ".join(map(str, what)))[:140]
        return f"{cls}: {what} after {_normalize(case.mutations[0]) if case.mutations else '?'}"
    if r.get("status") == "error":
        where = f"{r['type']} at {r['origin']} ({r['stage']})"
        return where if cls in FINE else f"{where}: {_normalize(r['message'])}"  # refusals: one line per raise site
    return f"{cls}: {_normalize(case.mutations[0]) if case.mutations else '?'}"


# ---------------------------------------------------------------------------------------------
# a run
# ---------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    kinds: tuple[str, ...] = KINDS
    cases: dict = field(default_factory=lambda: {"tforge": 100, "cache": 50, "onnx": 50})
    seed: int = 0
    workers: int = 2
    timeout: float = 30.0
    memory_gib: float = 6.0
    findings_dir: str | None = None  # mutated files of findings, and of a few fine cases, are copied here
    keep_examples: int = 3
    root: str | None = None  # a folder for the run (seeds are built there unless it already has them)
    progress: bool = False


def build_root(root: Path | None = None) -> tuple[Path, dict]:
    import fuzz_seeds

    root = Path(root) if root else Path(tempfile.mkdtemp(prefix="tforge-fuzz-"))
    seeds_dir = root / "seeds"
    if (seeds_dir / "manifest.json").exists():
        return root, json.loads((seeds_dir / "manifest.json").read_text())
    for sub in ("work", "cases", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    manifest = fuzz_seeds.build_seeds(seeds_dir)
    return root, manifest


class FuzzRun:
    def __init__(self, config: RunConfig):
        self.config = config
        self.root, self.manifest = build_root(Path(config.root) if config.root else None)
        self.seeds_dir = self.root / "seeds"
        self.lock = threading.Lock()
        self.records: list[dict] = []
        self.examples: dict[str, list[dict]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.restarts = 0
        self.new_modules: dict[str, int] = {}

    def _warm_requests(self, worker: WorkerProcess) -> list[dict]:
        requests = []
        for i, case in enumerate(warm_up_cases(self.seeds_dir, self.manifest)):
            requests.append(
                write_case(case, worker.root / "cases" / f"{worker.name}-warm" / str(i), self.seeds_dir, self.manifest)
            )
        return requests

    def _start(self, worker: WorkerProcess) -> None:
        results = worker.start(self._warm_requests(worker), timeout=max(600.0, self.config.timeout))
        bad = [r for r in results if not (r["status"] == "ran" and r.get("equal"))]
        if bad:
            raise RuntimeError(f"an unmutated seed does not load and run cleanly in {worker.name}: {bad[0]}")

    def run(self) -> dict:
        started = time.time()
        queue = [(kind, i) for kind in self.config.kinds for i in range(self.config.cases.get(kind, 0))]
        random.Random(self.config.seed).shuffle(queue)  # kinds interleaved, so a partial run covers all of them
        position = iter(queue)
        total = len(queue)
        memory = int(self.config.memory_gib * (1 << 30))
        workers = [WorkerProcess(f"w{i}", self.root, memory) for i in range(self.config.workers)]
        watch = Watch(self.root)
        threads = [threading.Thread(target=self._loop, args=(w, position, watch, total), daemon=True) for w in workers]
        self._errors: list[BaseException] = []
        try:
            for w in workers:
                self._start(w)
            watch.state = watch._snapshot()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for w in workers:
                w.stop()
        if self._errors:
            raise self._errors[0]
        return self.summary(time.time() - started)

    def _loop(self, worker: WorkerProcess, position, watch: Watch, total: int) -> None:
        try:
            while True:
                with self.lock:
                    item = next(position, None)
                if item is None:
                    return
                self._one(worker, *item, watch=watch, total=total)
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self._errors.append(exc)

    def _one(self, worker: WorkerProcess, kind: str, index: int, watch: Watch, total: int) -> None:
        case = make_case(kind, index, self.config.seed, self.seeds_dir, self.manifest)
        request = write_case(case, worker.case_dir, self.seeds_dir, self.manifest)
        started = time.monotonic()
        outcome = worker.request(request, self.config.timeout)
        elapsed = time.monotonic() - started
        if "died" in outcome or "hang" in outcome:
            outcome["log_tail"] = worker.log_tail()
        with self.lock:
            escapes = watch.changes()
            if escapes:
                watch.clean_canaries()
                outcome["escapes"] = escapes
        cls = classify(case, outcome)
        sig = signature(case, cls, outcome)
        if "died" in outcome or "hang" in outcome:
            self._start(worker)
            with self.lock:
                self.restarts += 1
                watch.state = watch._snapshot()  # what the new worker's warm-up wrote is its own
        self._record(case, cls, sig, outcome, elapsed, total)

    def _record(self, case: Case, cls: str, sig: str, outcome: dict, elapsed: float, total: int) -> None:
        r = outcome.get("result", {})
        record = {
            "kind": case.kind,
            "index": case.index,
            "seed": case.seed,
            "loader": case.loader,
            "class": cls,
            "signature": sig,
            "crafted": case.crafted,
            "mutations": [m[:200] for m in case.mutations],
            "seconds": round(elapsed, 3),
        }
        with self.lock:
            self.records.append(record)
            self.counts.setdefault(case.kind, {}).setdefault(cls, 0)
            self.counts[case.kind][cls] += 1
            for m in r.get("new_modules", []):
                self.new_modules[m] = self.new_modules.get(m, 0) + 1
            examples = self.examples.setdefault(sig, [])
            keep = len(examples) < self.config.keep_examples
            # the simplest example of a root cause is the one to reproduce with: fewest mutations, smallest file
            if not keep and cls in FINDINGS:
                worst = max(examples, key=lambda e: (len(e["mutations"]), e["bytes"]))
                if (len(case.mutations), len(case.data)) < (len(worst["mutations"]), worst["bytes"]):
                    examples.remove(worst)
                    keep = True
            if keep:
                example = dict(
                    record,
                    bytes=len(case.data),
                    result={k: v for k, v in r.items() if k != "new_modules"},
                    log_tail=outcome.get("log_tail"),
                    escapes=outcome.get("escapes"),
                )
                if self.config.findings_dir and cls in FINDINGS:
                    example["file"] = self._save(case, cls)
                examples.append(example)
            done = len(self.records)
        if self.config.progress and (done % 50 == 0 or done == total):
            findings = sum(n for per in self.counts.values() for c, n in per.items() if c in FINDINGS)
            print(f"[fuzz] {done}/{total} cases, {findings} findings, {self.restarts} worker restarts", flush=True)

    def _save(self, case: Case, cls: str) -> str:
        folder = Path(self.config.findings_dir) / cls
        folder.mkdir(parents=True, exist_ok=True)
        ext = {"tforge": "tforge", "cache": "plan", "onnx": "onnx"}[case.kind]
        path = folder / f"{case.kind}-{case.seed}-{case.loader}-{case.index}.{ext}"
        path.write_bytes(case.data)
        return str(path)

    def _prune_saved(self) -> None:
        """Keep one saved file per root cause: the simplest example's (the others stay described, without a file)."""
        if not self.config.findings_dir:
            return
        named = set()
        for examples in self.examples.values():
            for i, e in enumerate(examples):
                if i == 0 and e.get("file"):
                    named.add(e["file"])
                else:
                    e.pop("file", None)
        for path in Path(self.config.findings_dir).glob("*/*"):
            if str(path) not in named:
                path.unlink()

    def summary(self, seconds: float) -> dict:
        for examples in self.examples.values():
            examples.sort(key=lambda e: (len(e["mutations"]), e["bytes"]))  # the simplest reproduction first
        self._prune_saved()
        by_signature = []
        counts = {}
        for r in self.records:
            counts[r["signature"]] = counts.get(r["signature"], 0) + 1
        for sig, examples in self.examples.items():
            count = counts[sig]
            if examples[0]["class"] not in FINDINGS:  # fine outcomes: one example each, its result in brief
                examples[1:] = []
                examples[0]["result"] = {
                    k: examples[0]["result"].get(k) for k in ("type", "stage", "message", "detail", "warnings")
                }
            by_signature.append({"class": examples[0]["class"], "signature": sig, "count": count, "examples": examples})
        by_signature.sort(
            key=lambda s: (
                s["class"] not in FINDINGS,
                FINDINGS.index(s["class"]) if s["class"] in FINDINGS else 0,
                -s["count"],
            )
        )
        totals: dict[str, int] = {}
        for per in self.counts.values():
            for c, n in per.items():
                totals[c] = totals.get(c, 0) + n
        timing = {}
        for kind in self.counts:
            spent = sorted(r["seconds"] for r in self.records if r["kind"] == kind)
            timing[kind] = {
                "mean": round(sum(spent) / len(spent), 3),
                "p50": spent[len(spent) // 2],
                "p99": spent[int(len(spent) * 0.99)],
                "max": spent[-1],
            }
        return {
            "config": {k: v for k, v in asdict(self.config).items() if k not in ("root", "progress")},
            "environment": _environment(),
            "seconds": round(seconds, 1),
            "cases": len(self.records),
            "findings": sum(totals.get(c, 0) for c in FINDINGS),
            "worker_restarts": self.restarts,
            "totals": totals,
            "counts": self.counts,
            "seconds_per_case": timing,
            "new_modules": self.new_modules,
            "by_signature": by_signature,
        }


def _environment() -> dict:
    import platform

    import torch

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty_files": len(git("status", "--porcelain").splitlines()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
    }


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------


def format_report(summary: dict) -> str:
    lines = [
        f"{summary['cases']} cases in {summary['seconds']} s: {summary['findings']} findings, "
        f"{summary['worker_restarts']} worker restarts",
        "",
        "| kind | " + " | ".join(FINDINGS + FINE) + " |",
        "|---" * (len(FINDINGS + FINE) + 1) + "|",
    ]
    for kind, per in sorted(summary["counts"].items()):
        lines.append(f"| {kind} | " + " | ".join(str(per.get(c, 0)) for c in FINDINGS + FINE) + " |")
    findings = [s for s in summary["by_signature"] if s["class"] in FINDINGS]
    if findings:
        lines += [
            "",
            "| class | count | signature (exception at origin, or what the mutation did) | example |",
            "|---|---|---|---|",
        ]
        for s in findings:
            e = s["examples"][0]
            where = e.get("file") or f"{e['kind']} #{e['index']} ({e['seed']}, {e['loader']})"
            lines.append(
                f"| {s['class']} | {s['count']} | {s['signature'].replace('|', '/')} | "
                f"{where}: {'; '.join(e['mutations'])[:200].replace('|', '/')} |"
            )
    return "\n".join(lines)
