"""What a plan was built for: device and library versions, and which differences make it unusable.

A plan holds kernels chosen and tuned for one device with one set of libraries; run elsewhere it could be
slow, wrong or crash. The fields that matter are the plan format, the device type, name and compute
capability, and torch's major.minor version (it brings the cuDNN/cuBLAS kernels the tactics call). The
tensorforge version and the exact CUDA/cuDNN versions are recorded for reports but do not refuse a plan:
the plan format version covers tensorforge changes. CPU plans record the device name "cpu", so they move
between CPU machines.
"""

from __future__ import annotations

from typing import Any

import torch

# Bumped whenever what a plan holds or the rules its arena was planned by change: a plan of another version is
# refused with a sentence (rebuild it), never converted.
PLAN_FORMAT_VERSION = 3

# what a plan was built with (JSON-able): plan format, versions, and the device (`device_fingerprint`)
Fingerprint = dict[str, Any]


def _torch_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def device_fingerprint(device: torch.device) -> Fingerprint:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return {
            "device_type": "cuda",
            "device_name": torch.cuda.get_device_name(index),
            "capability": [major, minor],
            "cuda": torch.version.cuda,
            "cudnn": _cudnn_version(),
        }
    return {"device_type": device.type, "device_name": device.type, "capability": None, "cuda": None, "cudnn": None}


def _cudnn_version() -> int | None:
    cudnn = torch.backends.cudnn
    available: bool = cudnn.is_available()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
    return cudnn.version() if available else None  # type: ignore[no-untyped-call]  # (as above)


def fingerprint(device: torch.device) -> Fingerprint:
    from .. import __version__

    return {
        "plan_format": PLAN_FORMAT_VERSION,
        "tensorforge": __version__,
        "torch": torch.__version__,
        **device_fingerprint(device),
    }


def describe_device(fp: Fingerprint) -> str:
    """'cpu' or 'cuda NVIDIA H100 80GB HBM3 (sm90)'."""
    if fp.get("device_type") != "cuda":
        return str(fp.get("device_type"))
    cap = fp.get("capability")
    return f"cuda {fp.get('device_name')}" + (f" (sm{cap[0]}{cap[1]})" if cap else "")


def differences(built: Fingerprint, here: Fingerprint) -> list[str]:
    """Each difference that makes a plan built with fingerprint `built` unusable with `here`, as a sentence."""
    found = []
    if built.get("plan_format") != here["plan_format"]:
        found.append(
            f"plan format version {built.get('plan_format')}, this tensorforge reads version {here['plan_format']}"
        )
    device_keys = ("device_type", "device_name", "capability")
    if any(_norm(built.get(k)) != _norm(here[k]) for k in device_keys):
        found.append(f"built for device {describe_device(built)}, this is {describe_device(here)}")
    if _torch_minor(str(built.get("torch"))) != _torch_minor(here["torch"]):
        found.append(f"built with torch {_torch_minor(str(built.get('torch')))}, this is {_torch_minor(here['torch'])}")
    return found


def _norm(value: object) -> object:
    """Lists and tuples as lists (JSON brings a capability back as a list)."""
    return list(value) if isinstance(value, (list, tuple)) else value
