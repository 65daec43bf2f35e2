"""Where a runtime warning should point: at the user's call, however deep inside tensorforge it is raised."""

from __future__ import annotations

import os
import sys

import torch

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # .../tensorforge/
# the command line is a user of the library like any script: a warning points at its call (and it shows warnings
# raised from tensorforge's files, cli/__init__.py)
_CLI = os.path.join(_PACKAGE, "cli") + os.sep
_TORCH = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep  # nn.Module.__call__, load_state_dict


def _is_library(filename: str) -> bool:
    path = os.path.abspath(filename)
    return (path.startswith(_PACKAGE) and not path.startswith(_CLI)) or path.startswith(_TORCH)


def user_stacklevel() -> int:
    """The `stacklevel` for `warnings.warn`, called from the function that warns, that names the first frame outside
    tensorforge and torch: the user's `load`, `compile` or `module(x)`, whichever path led to the warning."""
    frame = sys._getframe(1)  # the function that warns: stacklevel 1
    level = 1
    while frame.f_back is not None and _is_library(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    return level
