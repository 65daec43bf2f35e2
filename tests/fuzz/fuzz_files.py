"""Mutations of whole files: the safetensors container, its header and tensor bytes, raw bytes, and the
file-level drivers (`mutate_module` for .tforge files and state_dicts, `mutate_plan` for plan blobs and
plan-cache entries, `apply_mutations`). The JSON documents inside are mutated by fuzz_mutators.py.

Every file here is a safetensors container: an 8-byte little-endian header length, a JSON header (tensor
entries and `__metadata__`), then the tensor bytes. A module's plans are themselves containers, stored as
uint8 tensors.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable

from fuzz_mutators import (
    MODULE_MUTATIONS,
    PLAN_MUTATIONS,
    ST_DTYPES,
    ContainerError,
    Context,
    m_hostile,
    weighted_choice,
)

# ---------------------------------------------------------------------------------------------
# the safetensors container, parsed without validation
# ---------------------------------------------------------------------------------------------


def split_container(data: bytes) -> tuple[dict, bytes]:
    if len(data) < 8:
        raise ContainerError("short")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ContainerError("header cut")
    try:
        header = json.loads(data[8 : 8 + n])
    except (ValueError, RecursionError) as exc:
        raise ContainerError(str(exc)) from None
    if not isinstance(header, dict):
        raise ContainerError("header not an object")
    return header, data[8 + n :]


def join_container(header: dict, body: bytes, header_text: str | None = None) -> bytes:
    text = (header_text if header_text is not None else json.dumps(header, separators=(",", ":"))).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes
    return struct.pack("<Q", len(text)) + text + body


def tensor_bytes(header: dict, body: bytes, name: str) -> bytes:
    start, end = header[name]["data_offsets"]
    return body[start:end]


def replace_tensor(header: dict, body: bytes, name: str, data: bytes) -> tuple[dict, bytes]:
    """The container with tensor `name` (a uint8 blob) holding `data`; every offset recomputed in order."""
    entries = sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]
    )
    parts, offset, header = [], 0, dict(header)
    for key, entry in entries:
        chunk = data if key == name else body[entry["data_offsets"][0] : entry["data_offsets"][1]]
        entry = dict(entry, data_offsets=[offset, offset + len(chunk)])
        if key == name:
            entry["shape"] = [len(chunk)]
        header[key] = entry
        parts.append(chunk)
        offset += len(chunk)
    return header, b"".join(parts)


# ---------------------------------------------------------------------------------------------
# container-level and byte-level mutations
# ---------------------------------------------------------------------------------------------


def mutate_header(ctx: Context, header: dict, body: bytes) -> tuple[dict, bytes, str | None]:
    """A tensor entry's dtype, shape, offsets or name, or a tensor's bytes (weights: bit flips, NaN)."""
    names = sorted(k for k in header if k != "__metadata__" and isinstance(header[k], dict))
    if not names:
        return header, body, None
    name = ctx.rng.choice(names)
    entry = header[name]
    action = ctx.rng.choice(
        ["dtype", "shape", "offsets", "rename", "drop", "flip", "flip", "nan", "metadata", "swap", "swap"]
    )
    if action == "swap":  # two tensors trade names (weights of one shape and dtype first: a well-formed file)
        alike = [
            n
            for n in names
            if n != name
            and isinstance(header[n], dict)
            and (header[n].get("shape"), header[n].get("dtype")) == (entry.get("shape"), entry.get("dtype"))
        ]
        other = ctx.rng.choice(alike or [n for n in names if n != name] or [name])
        header[name], header[other] = header[other], header[name]
        return header, body, f"tensors {name!r} and {other!r}: swapped"
    if action == "dtype":
        entry["dtype"] = ctx.rng.choice(ST_DTYPES)
    elif action == "shape":
        entry["shape"] = ctx.rng.choice(
            [
                [],
                [0],
                [-1],
                [2**40],
                [2**62, 2**62],
                list(reversed(entry.get("shape", []))),
                entry.get("shape", []) + [1],
                "x",
            ]
        )
    elif action == "offsets":
        start, end = entry.get("data_offsets", [0, 0])
        entry["data_offsets"] = ctx.rng.choice(
            [
                [0, 0],
                [start, end + 1],
                [end, start],
                [0, end - start],
                [start, len(body) + 64],
                [0, 2**63],
                [-1, end],
                [start],
            ]
        )
    elif action == "rename":
        header[ctx.rng.choice(["../../x", "", name + "\u0000", "__metadata__x"])] = header.pop(name)
    elif action == "drop":
        del header[name]
    elif action == "metadata":
        meta = header.get("__metadata__")
        header["__metadata__"] = ctx.rng.choice([None, [], "x", {"k": 1}, {}]) if meta is not None else {"x": "y"}
    elif action in ("flip", "nan"):
        start, end = entry.get("data_offsets", [0, 0])
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(body)):
            return header, body, None
        data = bytearray(body)
        if action == "flip":
            for _ in range(ctx.rng.choice([1, 1, 2, 8])):
                pos = ctx.rng.randrange(start, end)
                data[pos] ^= 1 << ctx.rng.randrange(8)
        elif entry.get("dtype") == "F32" and end - start >= 4:
            pos = start + 4 * ctx.rng.randrange((end - start) // 4)
            data[pos : pos + 4] = struct.pack("<f", ctx.rng.choice([math.nan, math.inf, 1e30]))
        else:
            return header, body, None
        body = bytes(data)
    return header, body, f"tensor {name!r}: {action}"


def mutate_bytes(ctx: Context, data: bytes) -> tuple[bytes, str]:
    rng = ctx.rng
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    header_end = min(8 + n, len(data))
    action = rng.choice(
        [
            "flip",
            "flip",
            "flip-header",
            "flip-header",
            "truncate",
            "length",
            "length",
            "insert",
            "set",
            "append",
            "delete",
        ]
    )
    buf = bytearray(data)
    if action in ("flip", "flip-header") and buf:
        hi = header_end if action == "flip-header" and header_end > 8 else len(buf)
        for _ in range(rng.choice([1, 1, 2, 4, 16])):
            pos = rng.randrange(0, hi)
            buf[pos] ^= 1 << rng.randrange(8)
    elif action == "truncate":
        buf = buf[
            : rng.choice([0, 4, 7, 8, 9, header_end - 1, header_end, header_end + 1, rng.randrange(len(buf) + 1)])
        ]
    elif action == "length":
        value = rng.choice([0, 1, n - 1, n + 1, n + 8, len(data), 2**64 - 1, 2**63, 2**32, 100_000_000])
        buf[:8] = struct.pack("<Q", value % 2**64)
    elif action == "insert":
        pos = rng.randrange(len(buf) + 1)
        buf[pos:pos] = rng.choice(
            [b"\x00", b"{", b"}", b"\xff" * 8, b'"', b"[" * 64, bytes(rng.randrange(256) for _ in range(16))]
        )
    elif action == "set" and buf:
        pos = rng.randrange(len(buf))
        buf[pos] = rng.choice([0, 0xFF, ord("{"), ord('"'), ord("\\"), 0x80])
    elif action == "append":
        buf += rng.choice([b"\x00" * 7, b"junk", bytes(64), b"\xff" * 1024])
    elif action == "delete" and len(buf) > 16:
        pos = rng.randrange(len(buf) - 8)
        del buf[pos : pos + rng.choice([1, 4, 8, 100])]
    return bytes(buf), f"bytes: {action}"


# ---------------------------------------------------------------------------------------------
# whole files
# ---------------------------------------------------------------------------------------------

MODULE_KEY = "tensorforge.module"
PLAN_KEY = "tensorforge.plan"


DIGEST_KEY = "sha256"  # modules and plans: of the description without this key, and every tensor (ir/digest.py)


def resigned(data: bytes, key: str) -> bytes:
    """The container with the digest of its `key` document recomputed exactly as the loader recomputes it (a
    crafted file). Unchanged where the loader could not get that far (the tensors or the JSON do not parse)."""
    from safetensors.torch import load as load_tensors

    from tensorforge.ir.digest import content_digest

    try:
        header, body = split_container(data)
        text = header["__metadata__"][key]
        doc = json.loads(text)
        tensors = load_tensors(data)
    except Exception:  # noqa: BLE001 - whatever the loader refuses before the digest needs no digest
        return data
    if not isinstance(doc, dict):
        return data
    doc.pop(DIGEST_KEY, None)
    digest = json.dumps(content_digest(doc, tensors))
    text = text.rstrip()
    # appended: where the old key is still in the text, JSON's last duplicate wins
    field = f'"{DIGEST_KEY}": {digest}}}'
    header["__metadata__"][key] = text[:-1] + (", " + field if doc else field)
    return join_container(header, body)


def _mutate_doc_in_container(ctx: Context, data: bytes, key: str, table) -> bytes:
    header, body = split_container(data)
    meta_map = header.get("__metadata__")
    if not isinstance(meta_map, dict) or not isinstance(meta_map.get(key), str):
        raise ContainerError("no metadata document")
    doc = json.loads(meta_map[key])
    ctx.raw.clear()
    try:
        desc = weighted_choice(ctx, table)(ctx, doc)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:  # an earlier edit changed the shape
        raise ContainerError(f"mutation not applicable ({exc})") from None
    if desc is None:
        raise ContainerError("mutation not applicable")
    ctx.log.append(desc)
    meta_map[key] = ctx.dumps(doc)
    data = join_container(header, body)
    return resigned(data, key) if ctx.crafted else data


def mutate_plan(ctx: Context, data: bytes) -> bytes:
    """One mutation of a plan blob (a cache entry, or a plan inside a module)."""
    level = ctx.rng.choices(["json", "header", "bytes"], weights=[6, 2, 2])[0]
    if level == "json":
        return _mutate_doc_in_container(ctx, data, PLAN_KEY, PLAN_MUTATIONS)
    if level == "header":
        header, body = split_container(data)
        header, body, desc = mutate_header(ctx, header, body)
        if desc is None:
            raise ContainerError("mutation not applicable")
        ctx.log.append(f"plan {desc}")
        data = join_container(header, body)
        return resigned(data, PLAN_KEY) if ctx.crafted else data
    data, desc = mutate_bytes(ctx, data)
    ctx.log.append(f"plan {desc}")
    return data


def mutate_module(ctx: Context, data: bytes) -> bytes:
    """One mutation of a `.tforge` file (or state_dict bytes): its document, its plans, its tensors or bytes."""
    level = ctx.rng.choices(["json", "hostile", "plan", "header", "bytes"], weights=[10, 2, 5, 2, 3])[0]
    if level in ("json", "hostile"):
        header, _ = split_container(data)
        ctx.tensor_names = sorted(k for k in header if k != "__metadata__")
        table = MODULE_MUTATIONS if level == "json" else [(1, m_hostile)]
        return _mutate_doc_in_container(ctx, data, MODULE_KEY, table)
    header, body = split_container(data)
    if level == "plan":
        plans = sorted(k for k in header if k.startswith("__plans__/"))
        if not plans:
            raise ContainerError("no plans")
        name = ctx.rng.choice(plans)
        blob = mutate_plan(ctx, tensor_bytes(header, body, name))
        ctx.log[-1] = f"{name}: {ctx.log[-1]}"
        header, body = replace_tensor(header, body, name, blob)
        data = join_container(header, body)
        return resigned(data, MODULE_KEY) if ctx.crafted else data
    if level == "header":
        header, body, desc = mutate_header(ctx, header, body)
        if desc is None:
            raise ContainerError("mutation not applicable")
        ctx.log.append(desc)
        data = join_container(header, body)
        return resigned(data, MODULE_KEY) if ctx.crafted else data
    data, desc = mutate_bytes(ctx, data)
    ctx.log.append(desc)
    return data


def apply_mutations(ctx: Context, data: bytes, mutate: Callable[[Context, bytes], bytes], count: int) -> bytes:
    """`count` mutations applied in turn; one that no longer applies (the bytes stopped parsing) is retried, then
    skipped. The result always differs from the input."""
    original = data
    for _ in range(count):
        for _attempt in range(8):
            mark = len(ctx.log)
            try:
                data = mutate(ctx, data)
                break
            except (
                ContainerError,
                KeyError,
                TypeError,
                ValueError,
                IndexError,
                AttributeError,
                struct.error,
                RecursionError,
            ):  # an earlier mutation left nothing this one applies to
                del ctx.log[mark:]
                continue
    if data == original:
        buf = bytearray(data)
        buf[-1] ^= 0x01
        data = bytes(buf)
        ctx.log.append("bytes: flip the last byte (no mutation applied)")
    return data
