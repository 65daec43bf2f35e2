"""Triton tactics for `engine.pointwise`: one generated kernel per fused group, every output written by it.

`pointwise_codegen.py` turns the node's program into the source of a module with two kernels (contiguous
inputs, and strided views); here that module is loaded and launched. Triton's JIT reads its kernels' source
from files, so the module is written under a per-user cache directory, named by a hash of the source, and
imported with importlib: nothing is eval'ed, and a plan holds only the program (the source is generated
again when the plan is loaded). The kernel writes straight into the arena views it is offered.

Two tactics differ only in their launch configuration, so the builder's timing picks per layer: `triton`
(1024 elements per program) and `triton_block4096`. They refuse, with the reason, any program the generator
cannot express; `torch_out` (engine/pointwise.py) and the any-op `torch` tactic remain as fallbacks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import tempfile
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from ...ir.types import Dim, bind_dim, torch_dtype
from .pointwise_codegen import Layout, Unsupported, node_layout
from .registry import BindContext, Env, Inputs, Kernel, OutputViews, tactic

if TYPE_CHECKING:
    from ...ir import Node
    from ..config import BuilderConfig

# -- loading the generated module and launching it ----------------------------------------------------

_MODULES: dict[str, ModuleType] = {}
_LOADING = threading.Lock()  # the builder compiles ahead from several threads: one module object per source


def kernel_dir() -> str:
    """Where generated sources live: a per-user cache directory (Triton's JIT needs real files)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.path.join(base, "tensorforge", "kernels")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError:  # no writable home (a container): the temp directory, still per user
        directory = os.path.join(tempfile.gettempdir(), f"tensorforge-kernels-{os.getuid()}")
        os.makedirs(directory, mode=0o700, exist_ok=True)
    return directory


def load_module(source: str) -> ModuleType:
    """The module of `source`, written to `kernel_dir()` under its hash (if not there already) and imported."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:32]
    with _LOADING:
        return _MODULES.get(digest) or _load(source, digest)


def _load(source: str, digest: str) -> ModuleType:
    directory = kernel_dir()
    path = os.path.join(directory, f"pointwise_{digest}.py")
    try:
        with open(path) as f:
            present = f.read() == source
    except OSError:
        present = False
    if not present:  # written atomically: a concurrent build never imports half a file
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pointwise-", suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(f"tensorforge_generated_pointwise_{digest}", path)
    if spec is None or spec.loader is None:  # not for a path ending in .py
        raise ImportError(f"no loader for the generated module {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _MODULES[digest] = module
    return module


MAX_LAUNCHES = 64  # launches a bound kernel remembers (one per set of sizes and input layouts it ran at)
# per input of a strided launch: (its rank, its strides)
InputLayouts = tuple[tuple[int, tuple[int, ...]], ...]
# (output shapes, grid, the kernel's integer arguments, whether indices need 64 bits)
Launch = tuple[list[torch.Size], tuple[int], tuple[int, ...], bool]


class PointwiseKernel:
    """The bound kernel: picks the fast or the strided kernel per call; sizes, strides and the grid are worked out
    once per set of sizes and input layout (the host side of a launch matters until the plan replays as a graph)."""

    def __init__(self, lay: Layout, block: int, num_warps: int):
        self.layout, self.block, self.num_warps = lay, block, num_warps
        module = load_module(lay.source)
        self.kernels = {"fast": module.fast, "strided": module.strided}
        # by (kernel name, the symbols' values, the input layouts of a strided launch)
        self._launches: dict[tuple[str, tuple[tuple[str, int], ...], InputLayouts | None], Launch] = {}
        self._dtypes = [torch_dtype(d) for d in lay.out_dtypes]

    def __call__(self, inputs: Inputs, offered: OutputViews, env: Env) -> list[torch.Tensor]:
        name = "fast" if all(t.is_contiguous() for t in inputs) else "strided"
        layouts = tuple((t.dim(), t.stride()) for t in inputs) if name == "strided" else None
        key = (name, tuple(sorted(env.items())), layouts)
        launch = self._launches.get(key)
        if launch is None:
            if len(self._launches) >= MAX_LAUNCHES:  # a plan run at many sizes: forget the oldest, not grow forever
                del self._launches[next(iter(self._launches))]
            launch = self._launches[key] = self._launch(name, env, layouts)
        shapes, grid, scalars, index_64 = launch
        outs = [
            view
            if view is not None and view.is_contiguous() and view.shape == shape
            else torch.empty(shape, dtype=dtype, device=inputs[0].device)
            for view, shape, dtype in zip(offered, shapes, self._dtypes)
        ]
        if grid[0]:
            self.kernels[name][grid](
                *inputs, *outs, *scalars, BLOCK=self.block, INDEX_64=index_64, num_warps=self.num_warps
            )
        return outs

    def _launch(self, name: str, env: Env, layouts: InputLayouts | None) -> Launch:
        """(output shapes, grid, the kernel's integer arguments, whether indices need 64 bits)."""
        lay = self.layout

        def bind(shape: Sequence[Dim]) -> torch.Size:
            return torch.Size(bind_dim(d, env) for d in shape)

        domain = bind(lay.domain)
        shapes = [bind(shape) for shape in lay.out_shapes]
        n = math.prod(domain)
        groups, flags, kinds = lay.variants[name]
        sizes = [math.prod(domain[a] for a in g) for g in groups]
        strides: list[int] = []
        reach = n
        for j, kind in enumerate(kinds):
            if kind != "strided":
                continue
            if layouts is not None and j < len(layouts):  # its own strides, right-aligned to the domain (0: broadcast)
                dim, stride = layouts[j]
                own = [0] * (len(domain) - dim - lay.pads[j]) + list(stride) + [0] * lay.pads[j]
                mine = [own[g[0]] for g, full in zip(groups, flags[j]) if full]
            else:  # contiguous: strides from the sizes of the groups it is full along
                mine, step = [], 1
                for g in range(len(groups) - 1, -1, -1):
                    if flags[j][g]:
                        mine.append(step)
                        step *= sizes[g]
                mine.reverse()
            used = [size for size, full in zip(sizes, flags[j]) if full]
            reach = max(reach, 1 + sum((size - 1) * st for size, st in zip(used, mine)))
            strides += mine
        return shapes, (-(-n // self.block),), (n, *sizes[1:], *strides), reach >= 2**31 - self.block


class _TritonPointwise:
    BLOCK, NUM_WARPS = 1024, 4

    @staticmethod
    def supports(node: Node, config: BuilderConfig) -> str | None:
        try:
            node_layout(node)
        except Unsupported as exc:
            return str(exc)
        return None

    @classmethod
    def bind(cls, node: Node, ctx: BindContext) -> Kernel:
        return PointwiseKernel(node_layout(node), cls.BLOCK, cls.NUM_WARPS)


@tactic("engine.pointwise", name="triton", devices=("cuda",), priority=10, compiles=True, requires_triton=True)
class TritonPointwise(_TritonPointwise):
    """1024 elements per program, 4 warps: 8 per thread, enough to hide latency on small and large tensors."""


@tactic("engine.pointwise", name="triton_block4096", devices=("cuda",), priority=9, compiles=True, requires_triton=True)
class TritonPointwiseBlock4096(_TritonPointwise):
    """4096 elements per program, 8 warps: fewer, longer programs for large tensors (timing decides)."""

    BLOCK, NUM_WARPS = 4096, 8
