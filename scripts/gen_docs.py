"""Regenerate the generated sections of README.md from the registries and the example scripts.

    .venv/bin/python scripts/gen_docs.py          # rewrite README.md
    .venv/bin/python scripts/gen_docs.py --check  # exit 1 if README.md is stale (a test runs this)

A generated section sits between `<!-- BEGIN GENERATED: KEY -->` and `<!-- END GENERATED: KEY -->`, where KEY
is `ir-ops` (the IR op table), `engine-support` (what the engine takes: since-version, dtypes,
restrictions) or `example:PATH` (a runnable example script, shown verbatim; tests run each of them).
"""

from __future__ import annotations

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tensorforge.ir import REQUIRED, registered_ops  # noqa: E402
from tensorforge.partition import rule_table  # noqa: E402

SECTION = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<key>[^ ]+) -->\n)(?P<body>.*?)(<!-- END GENERATED: (?P=key) -->)", re.S
)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _ir_ops() -> dict:
    """The IR's public op set (engine-internal fused layers and test/plugin ops are not part of it)."""
    return {n: d for n, d in registered_ops().items() if d.compute.__module__.startswith("tensorforge.ir.")}


def ir_op_table() -> str:
    def attrs(opdef) -> str:
        return ", ".join(k if v is REQUIRED else f"{k}={v!r}" for k, v in opdef.attrs.items()) or "—"

    def arity(opdef) -> str:
        lo, hi = opdef.num_inputs
        return str(lo) if lo == hi else f"{lo}+" if hi is None else f"{lo}–{hi}"

    rows = ["| op | family | inputs | attributes | what it computes |", "|---|---|---|---|---|"]
    for name, opdef in _ir_ops().items():
        doc = opdef.doc.split(":", 1)[-1].strip()
        rows.append(f"| `{name}` | {opdef.family} | {arity(opdef)} | {_cell(attrs(opdef))} | {_cell(doc)} |")
    return "\n".join(rows)


def engine_support_table() -> str:
    rules = {r["op"]: r for r in rule_table()}
    rows = ["| op | engine since | dtypes | needs capability | restrictions |", "|---|---|---|---|---|"]
    for name in _ir_ops():
        r = rules.get(name)
        if r is None:
            rows.append(f"| `{name}` | — | — | — | not offloaded (runs through PyTorch) |")
            continue
        rows.append(
            f"| `{name}` | {r['since']} | {r['dtypes']} | {r['capability'] or '—'} | {_cell(r['restriction']) or '—'} |"
        )
    return "\n".join(rows)


def generate(key: str) -> str:
    if key == "ir-ops":
        return ir_op_table()
    if key == "engine-support":
        return engine_support_table()
    if key.startswith("example:"):
        return "```python\n" + (ROOT / key.split(":", 1)[1]).read_text().rstrip("\n") + "\n```"
    raise SystemExit(f"README.md has an unknown generated section {key!r}")


def render(readme: str) -> str:
    return SECTION.sub(lambda m: f"{m.group(1)}{generate(m.group('key'))}\n{m.group(4)}", readme)


def main(argv: list[str]) -> int:
    path = ROOT / "README.md"
    current = path.read_text()
    fresh = render(current)
    if "--check" in argv:
        if fresh != current:
            print("README.md is stale: run .venv/bin/python scripts/gen_docs.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
