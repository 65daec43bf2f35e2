"""tensorforge's graph IR: typed graphs of registered ops, verified, printable, saved without pickle."""

from . import ops  # noqa: F401  (registers the op set)
from .execute import execute
from .graph import Graph, Node, Value
from .profile import Profile, ProfileError
from .registry import REQUIRED, OpDef, ShapeInferenceError, UnknownOpError, get_op, register_op, registered_ops
from .serialize import GraphFormatError, copy_graph, graph_from_json, graph_to_json, load, save
from .symbolic import SymExpr
from .types import Sym, TensorType
from .verify import VerificationError, verify

__all__ = [
    "Graph",
    "Node",
    "Value",
    "TensorType",
    "Profile",
    "ProfileError",
    "Sym",
    "SymExpr",
    "OpDef",
    "REQUIRED",
    "register_op",
    "get_op",
    "registered_ops",
    "execute",
    "verify",
    "save",
    "load",
    "graph_to_json",
    "copy_graph",
    "graph_from_json",
    "VerificationError",
    "ShapeInferenceError",
    "UnknownOpError",
    "GraphFormatError",
]
