"""The IR op set, one module per family. Importing this package registers every op."""

from . import attention, creation, elementwise, indexing, linalg, nn, reduce, shape  # noqa: F401
from . import opaque, subgraph  # noqa: F401
