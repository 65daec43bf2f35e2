"""One content digest for everything tensorforge writes: a JSON document and the tensors it refers to.

Plans, modules and plan-cache keys all hash the same way, so "the same content" means one thing: sha256 over
the document as canonical JSON (sorted keys, no whitespace) and then each tensor's name, dtype, shape and bytes
in name order. A file stores the digest of what it holds and the reader recomputes it before using anything, so
an edit that stays well-formed (an activation changed in the JSON, a flipped weight bit) is caught at load, not
seen later as a wrong answer. It is a checksum against damage, not a signature: whoever can write a file can
also write a matching digest, which is why everything read from a file is also validated as data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch


def content_digest(doc: Any, tensors: Mapping[str, torch.Tensor] | None = None) -> str:
    h = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=True).encode())
    named = tensors or {}
    for name in sorted(named):
        t = named[name].detach().cpu().contiguous()
        h.update(f"\0{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


DIGEST_KEY = "sha256"  # where a document stores the digest of itself (without this key) and its tensors


def seal(doc: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """`doc` with the digest of itself and `tensors` under DIGEST_KEY (in place; returned for convenience)."""
    doc.pop(DIGEST_KEY, None)
    doc[DIGEST_KEY] = content_digest(doc, tensors)
    return doc


def unseal(doc: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> bool:
    """Remove the stored digest from `doc` and say whether it is the digest of what `doc` and `tensors` hold now."""
    stored: object = doc.pop(DIGEST_KEY, None)
    return stored == content_digest(doc, tensors)
