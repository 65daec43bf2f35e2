"""Regenerate the generated sections of README.md from the registries.

    .venv/bin/python scripts/gen_docs.py          # rewrite README.md
    .venv/bin/python scripts/gen_docs.py --check  # exit 1 if README.md is stale (a test runs this)
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tensorforge.ir import REQUIRED, registered_ops  # noqa: E402

BEGIN, END = "<!-- BEGIN GENERATED: ir-ops -->", "<!-- END GENERATED: ir-ops -->"


def _attrs(opdef) -> str:
    parts = [k if v is REQUIRED else f"{k}={v!r}" for k, v in opdef.attrs.items()]
    return ", ".join(parts).replace("|", "\\|") or "—"


def _inputs(opdef) -> str:
    lo, hi = opdef.num_inputs
    return str(lo) if lo == hi else f"{lo}+" if hi is None else f"{lo}–{hi}"


def ir_op_table() -> str:
    rows = ["| op | family | inputs | attributes | what it computes |", "|---|---|---|---|---|"]
    for name, opdef in registered_ops().items():
        if not opdef.compute.__module__.startswith("tensorforge.ir."):
            continue  # engine-internal fused layers are not part of the IR's public op set
        doc = opdef.doc.split(":", 1)[-1].strip().replace("|", "\\|")
        rows.append(f"| `{name}` | {opdef.family} | {_inputs(opdef)} | {_attrs(opdef)} | {doc} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{ir_op_table()}\n{END}{tail}"


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
