"""Partitioning: decide what the engine runs, group it into regions, and leave the rest to PyTorch.

    graph, config = tensorforge.partition_for_tensorforge(graph, min_block_size=1)
    print(config.report)                 # what was offloaded, every region, every reason a node stayed out

Files: `fold.py` (what is computed from constants only, computed once, first), `rules.py` (which ops the engine
takes, and why not), `batch.py` (implicit batch mode), `regions.py` (cycle-free regions and pruning),
`partitioner.py` (the entry point), `report.py`, `config.py`, `serialize.py` (each region as JSON plus weights).
"""

from .config import PartitionConfig
from .fold import FoldResult, fold_constants
from .partitioner import partition_for_tensorforge
from .report import Fallback, Folded, OpCount, PartitionReport, RegionSummary
from .rules import (
    ENGINE_VERSION,
    SUPPORTED,
    SupportContext,
    SupportRule,
    get_rule,
    register_supported_op,
    registered_rules,
    rule_table,
    support_reason,
    support_rule,
)
from .serialize import deserialize_region, serialize_region

__all__ = [
    "partition_for_tensorforge",
    "PartitionConfig",
    "PartitionReport",
    "OpCount",
    "RegionSummary",
    "Fallback",
    "Folded",
    "fold_constants",
    "FoldResult",
    "ENGINE_VERSION",
    "SUPPORTED",
    "SupportContext",
    "SupportRule",
    "support_rule",
    "register_supported_op",
    "get_rule",
    "registered_rules",
    "rule_table",
    "support_reason",
    "serialize_region",
    "deserialize_region",
]
