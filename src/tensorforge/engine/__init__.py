"""The engine: `Builder(BuilderConfig).build(region) -> Plan`, TensorRT's builder for tensorforge regions.

    plan = Builder(BuilderConfig()).build(region, max_batch=8, device="cpu")
    outputs = plan.run(x)                      # any batch 1..8
    plan = Builder().build(region, profile=ir.Profile({"batch": (1, 8, 8), "seq": (16, 128, 512)}))
    outputs = plan.run(x)                      # any batch 1..8 and seq 16..512, tuned at (8, 128)
    data = plan.to_bytes(); plan = Plan.from_bytes(data, device="cpu")

Files: `config.py` (options), `passes/` (one file per graph pass, ordered in `passes.PASSES`), `ops.py` (the
fused layers as IR ops), `quantized_ops.py` (the 8-bit layers), `tactics/` (implementations per op, the
registry), `timing.py` (tactic selection, timing cache), `memory.py` (the activation arena), `context.py`
(execution), `plan.py` (the plan and its file format), `fingerprint.py` (what a plan was built for), `builder.py`
(the build steps in order).
"""

from . import (
    norm,  # noqa: F401  (registers engine.layer_norm; its tactics are in tactics/norm_triton.py)
    ops,  # noqa: F401  (registers engine.conv / engine.dense)
    quantized_ops,  # noqa: F401  (registers engine.qconv / engine.qdense)
)
from .builder import Builder
from .config import BuilderConfig
from .context import ExecutionContext
from .errors import BuildError, LayerError, PlanCompatibilityError
from .memory import ALIGNMENT, MemoryPlan
from .passes import PASSES
from .plan import LayerInfo, Plan
from .tactics import (
    pointwise_triton,  # noqa: F401  (engine.pointwise: its op, torch and Triton tactics)
    tactic,
)

__all__ = [
    "Builder",
    "BuilderConfig",
    "Plan",
    "LayerInfo",
    "BuildError",
    "LayerError",
    "PlanCompatibilityError",
    "ExecutionContext",
    "MemoryPlan",
    "ALIGNMENT",
    "PASSES",
    "tactic",
]
