"""NuoNuo core: a hippocampus-inspired associative memory for texts.

How the terms of the model map to the terms of the framework adapters:

=====================================  ==========================================
model (this package)                    frameworks (LangChain, LlamaIndex)
=====================================  ==========================================
stored pattern: a memory's cue vectors  document, node, memory item
state pattern: the embedded query       query
``beta``: inverse temperature           (no counterpart)
``k`` winners of a sparse code          (no counterpart; not the result count)
recall result count                     ``k``, ``similarity_top_k``, ``limit``
association matrix, hops                association path in result metadata
score after settle and spreading        ``score``
namespace                               namespace, user id, session
=====================================  ==========================================

Layers: :mod:`nuonuo_core.functional` holds the tensor mathematics as plain
functions, :mod:`nuonuo_core.association` the factored Hebbian matrix,
:class:`AssociativeMemory` owns state, storage and locking.
"""

from nuonuo_core.config import LinkWeights, MemoryConfig
from nuonuo_core.embedding import Embedder, HashingEmbedder, SentenceTransformerEmbedder, load_embedder
from nuonuo_core.errors import (
    ConfigError,
    EmbeddingError,
    FormatVersionError,
    InvalidInputError,
    InvalidTypeError,
    MemoryNotFoundError,
    NamespaceError,
    NamespaceTypeError,
    NuoNuoError,
    StorageError,
)
from nuonuo_core.memory import AssociativeMemory
from nuonuo_core.types import MemoryItem, MemoryRecord, Namespace, RecallResult

__version__ = "0.1.0"

__all__ = [
    "AssociativeMemory",
    "ConfigError",
    "Embedder",
    "EmbeddingError",
    "FormatVersionError",
    "HashingEmbedder",
    "InvalidInputError",
    "InvalidTypeError",
    "LinkWeights",
    "MemoryConfig",
    "MemoryItem",
    "MemoryNotFoundError",
    "MemoryRecord",
    "NamespaceError",
    "NamespaceTypeError",
    "Namespace",
    "NuoNuoError",
    "RecallResult",
    "SentenceTransformerEmbedder",
    "StorageError",
    "load_embedder",
]
