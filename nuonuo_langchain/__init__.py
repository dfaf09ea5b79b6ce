"""LangChain and LangGraph adapters for NuoNuo.

- :class:`NuoNuoMemory`: a classic chain memory (``ConversationChain(memory=...)``).
- :class:`NuoNuoRetriever`: a retriever, in place of ``vectorstore.as_retriever()``.
- :class:`NuoNuoStore`: a LangGraph store (``create_agent(..., store=...)``).

All three keep their data in a :class:`nuonuo_core.AssociativeMemory`, which
several of them can share.
"""

from nuonuo_langchain.memory import NuoNuoMemory
from nuonuo_langchain.retriever import NuoNuoRetriever
from nuonuo_langchain.store import NuoNuoStore

__all__ = ["NuoNuoMemory", "NuoNuoRetriever", "NuoNuoStore"]
