"""LlamaIndex adapters for NuoNuo.

- :class:`NuoNuoRetriever`: a ``BaseRetriever`` that ingests documents and
  nodes and takes the place of ``VectorStoreIndex.as_retriever()``.
- :class:`NuoNuoMemoryBlock`: a ``BaseMemoryBlock`` for ``Memory`` that takes
  the place of ``VectorMemoryBlock``.
"""

from nuonuo_llamaindex.filters import to_core_filter
from nuonuo_llamaindex.memory_block import NuoNuoMemoryBlock
from nuonuo_llamaindex.retriever import NuoNuoRetriever

__all__ = ["NuoNuoMemoryBlock", "NuoNuoRetriever", "to_core_filter"]
