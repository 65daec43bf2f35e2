"""The IR op set, one module per family. Importing this package registers every op."""

from . import attention, creation, elementwise, indexing, linalg, nn, opaque, quantize, reduce, shape, subgraph  # noqa: F401
