"""A LangChain retriever that recalls documents by association."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, field_validator, model_validator

from nuonuo_core import (
    AssociativeMemory,
    InvalidInputError,
    InvalidTypeError,
    MemoryConfig,
    MemoryItem,
    MemoryNotFoundError,
    RecallResult,
)
from nuonuo_core.filters import validate_filter
from nuonuo_core.memory import check_id, check_k, check_metadata, check_text
from nuonuo_langchain._common import check_hops, normalize_namespace, open_memory

SEARCH_KWARGS = frozenset({"k", "hops", "filter"})
"""Keys accepted in ``search_kwargs``."""

SCORE_KEY = "score"
"""Document metadata key of the recall score that ranks results: a share of the
attention, which rises above 1 through links or a named speaker."""

SIMILARITY_KEY = "similarity"
"""Document metadata key of the cosine similarity of the best cue to the query."""

HOPS_KEY = "hops"
"""Document metadata key of the number of links between the direct hit and the document."""

PATH_KEY = "path"
"""Document metadata key of the association path: ids from the direct hit to the document."""


class NuoNuoRetriever(BaseRetriever):
    """Retriever over an associative memory, a drop-in for ``vectorstore.as_retriever()``.

    ``invoke(query)`` returns the ``k`` best memories as documents, best first.
    With ``hops`` > 1 it also returns documents linked to the direct hits (by a
    shared rare name, by being added one after another in a session, or by
    ``AssociativeMemory.associate``), which the query alone does not find.

    Every document has the memory id as ``id`` and, besides its stored metadata,
    ``score``, ``similarity``, ``hops`` and ``path`` (the list of ids from the
    direct hit to this document). These four keys replace stored metadata of the
    same name.

    ``k``, ``hops`` and ``filter`` can also be given per call:
    ``retriever.invoke(query, k=2, hops=2)``, or, as with
    ``vectorstore.as_retriever``, at construction in ``search_kwargs``.

    Without ``path`` or ``memory`` everything is kept in RAM and lost when the
    process exits.

    Example:
        >>> from nuonuo_core import HashingEmbedder
        >>> retriever = NuoNuoRetriever.from_texts(
        ...     ["My dog is Max.", "Max loves the beach."], embedder=HashingEmbedder(), k=2, hops=2
        ... )
        >>> [doc.metadata["hops"] for doc in retriever.invoke("my dog")]  # doctest: +SKIP
        [0, 1]
    """

    memory: AssociativeMemory | None = Field(default=None, exclude=True)
    """The associative memory to recall from. Built from ``path``, ``config`` and
    ``embedder`` when not given."""

    path: str | None = None
    """SQLite file of a memory built here; RAM only when ``None``. Excludes ``memory``."""

    config: MemoryConfig | None = Field(default=None, exclude=True)
    """Configuration of a memory built here; excludes ``memory``."""

    embedder: Any = Field(default=None, exclude=True)
    """Embedder of a memory built here; the packaged all-MiniLM-L6-v2 when ``None``.
    Excludes ``memory``."""

    k: int = 4
    """Number of documents returned. 0 returns none, as ``AssociativeMemory.recall`` does."""

    hops: int | None = None
    """Hops of recall: 1 is single-hop, 2 also returns documents linked to the direct
    hits. ``None`` uses the memory's ``config.hops``."""

    filter: dict[str, Any] | None = None
    """Metadata conditions every document must meet: key -> value, or key ->
    ``{"$eq"|"$ne"|"$gt"|"$gte"|"$lt"|"$lte"|"$in"|"$nin": operand}``."""

    namespace: tuple[str, ...] = ()
    """Core namespace that documents are added to and recalled from; a str is a 1-tuple."""

    namespace_prefix: tuple[str, ...] | None = None
    """When set, recall searches every namespace starting with it instead of
    ``namespace``; ``()`` searches all. Documents are still added to ``namespace``."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _merge_search_kwargs(cls, values: Any) -> Any:
        """Move ``search_kwargs`` (``k``, ``hops``, ``filter``) into the fields, as a vector store retriever takes them."""
        if isinstance(values, dict) and "search_type" in values:
            raise InvalidInputError(
                f"search_type is not supported, got {values['search_type']!r}: NuoNuo has one kind of "
                "search; set k, hops and filter instead"
            )
        if not isinstance(values, dict) or "search_kwargs" not in values:
            return values
        values = dict(values)
        search_kwargs = values.pop("search_kwargs") or {}
        if not isinstance(search_kwargs, Mapping):
            raise InvalidInputError(f"search_kwargs must be a mapping, got {type(search_kwargs).__name__}")
        unknown = sorted(set(search_kwargs) - SEARCH_KWARGS)
        if unknown:
            raise InvalidInputError(
                f"unsupported search_kwargs {unknown}; expected some of {sorted(SEARCH_KWARGS)}"
            )
        for key, value in search_kwargs.items():
            if key in values and values[key] != value:
                raise InvalidInputError(f"{key!r} given both as a field ({values[key]!r}) and in search_kwargs ({value!r})")
            values[key] = value
        return values

    @field_validator("namespace", mode="before")
    @classmethod
    def _check_namespace(cls, value: Any) -> tuple[str, ...]:
        return normalize_namespace(value)

    @field_validator("namespace_prefix", mode="before")
    @classmethod
    def _check_namespace_prefix(cls, value: Any) -> tuple[str, ...] | None:
        return None if value is None else normalize_namespace(value)

    @field_validator("path", mode="before")
    @classmethod
    def _check_path(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("k")
    @classmethod
    def _check_k(cls, value: int) -> int:
        return check_k(value)

    @field_validator("hops")
    @classmethod
    def _check_hops(cls, value: int | None) -> int | None:
        return None if value is None else check_hops(value)

    @field_validator("filter", mode="before")
    @classmethod
    def _check_filter(cls, value: Any) -> dict[str, Any] | None:
        return validate_filter(value)

    @model_validator(mode="after")
    def _open_memory(self) -> NuoNuoRetriever:
        self.memory = open_memory(self.memory, self.path, self.config, self.embedder)
        return self

    def _core(self) -> AssociativeMemory:
        assert self.memory is not None  # set by the model validator
        return self.memory

    # ------------------------------------------------------------------ retrieval

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        hops: int | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> list[Document]:
        results = self._core().recall(query, **self._recall_arguments(k, hops, filter))
        return [_to_document(result) for result in results]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        hops: int | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> list[Document]:
        results = await self._core().arecall(query, **self._recall_arguments(k, hops, filter))
        return [_to_document(result) for result in results]

    def _recall_arguments(
        self, k: int | None, hops: int | None, filter: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Merge per-call overrides with the fields into keyword arguments of ``recall``."""
        arguments: dict[str, Any] = {
            "k": self.k if k is None else check_k(k),
            "hops": self.hops if hops is None else check_hops(hops),
            "filter": self.filter if filter is None else filter,
        }
        if self.namespace_prefix is not None:
            arguments["namespace_prefix"] = self.namespace_prefix
        else:
            arguments["namespace"] = self.namespace
        return arguments

    # ------------------------------------------------------------------ ingestion

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        *,
        ids: Sequence[str] | None = None,
        session: str | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> list[str]:
        """Store texts in ``namespace`` and return their ids, in order.

        Args:
            texts: The texts; none may be blank.
            metadatas: One JSON-serialisable mapping per text, or ``None``.
            ids: One id per text, or ``None`` for random ids. A text whose id is
                already stored replaces that memory's text and metadata.
            session: When given, consecutive texts are linked, so that recall
                with ``hops`` > 1 leads from one to the next.
            batch_size: Texts per embedding batch.
            show_progress: Show a progress bar while embedding.

        Every text and metadata is checked before anything is stored.
        """
        if isinstance(texts, str):
            raise InvalidTypeError("texts must be an iterable of strings, got a single str")
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidInputError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        documents = [
            Document(page_content=text, metadata=dict(metadatas[i]) if metadatas else {})
            for i, text in enumerate(_checked_texts(texts))
        ]
        return self.add_documents(
            documents, ids=ids, session=session, batch_size=batch_size, show_progress=show_progress
        )

    def add_documents(
        self,
        documents: Iterable[Document],
        *,
        ids: Sequence[str] | None = None,
        session: str | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> list[str]:
        """Store documents in ``namespace`` and return their ids, in order.

        A document's ``id`` (or the matching entry of ``ids``) becomes the memory
        id. A memory whose id is already stored in ``namespace`` is updated in
        place: text and metadata are replaced, links are kept. Other arguments
        are as in :meth:`add_texts`. Every document is checked before anything
        is stored.

        Note that with ``config.deduplicate`` (the default) a new document whose
        text is already stored in the namespace returns the existing memory's id.
        """
        memory = self._core()
        items = self._items(documents, ids)
        if not items:
            return []

        # Split into updates of stored ids and new memories, checking the
        # updates' namespaces before anything is written.
        updates: dict[int, MemoryItem] = {}
        new: dict[int, MemoryItem] = {}
        for position, item in enumerate(items):
            if item.id is not None and item.id in memory:
                self._check_same_namespace(item.id)
                updates[position] = item
            else:
                new[position] = item

        ids_out: list[str] = [""] * len(items)
        added = memory.add_many(
            list(new.values()), namespace=self.namespace, session=session,
            batch_size=batch_size, show_progress=show_progress,
        )
        for position, memory_id in zip(new, added):
            ids_out[position] = memory_id
        for position, item in updates.items():
            memory.update(item.id, item.text, metadata=item.metadata)  # type: ignore[arg-type]
            ids_out[position] = item.id  # type: ignore[assignment]
        return ids_out

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Async :meth:`add_texts`, run in a worker thread."""
        if not isinstance(texts, str):
            texts = list(texts)
        return await asyncio.to_thread(self.add_texts, texts, metadatas, **kwargs)

    async def aadd_documents(self, documents: Iterable[Document], **kwargs: Any) -> list[str]:
        """Async :meth:`add_documents`, run in a worker thread."""
        return await asyncio.to_thread(self.add_documents, list(documents), **kwargs)

    def _items(self, documents: Iterable[Document], ids: Sequence[str] | None) -> list[MemoryItem]:
        documents = list(documents)
        if ids is not None:
            if isinstance(ids, str):
                raise InvalidTypeError("ids must be a sequence of strings, got a single str")
            if len(ids) != len(documents):
                raise InvalidInputError(f"got {len(ids)} ids for {len(documents)} documents")
        items = []
        for position, document in enumerate(documents):
            if not isinstance(document, Document):
                raise InvalidTypeError(
                    f"documents[{position}] must be a langchain_core Document, "
                    f"got {type(document).__name__}"
                )
            memory_id = ids[position] if ids is not None else document.id
            items.append(MemoryItem(
                text=check_text(document.page_content, f"documents[{position}].page_content"),
                id=None if memory_id is None else check_id(memory_id),
                metadata=check_metadata(document.metadata),
            ))
        chosen = [item.id for item in items if item.id is not None]
        if len(chosen) != len(set(chosen)):
            duplicate = next(i for i in chosen if chosen.count(i) > 1)
            raise InvalidInputError(f"id {duplicate!r} appears twice among the documents")
        return items

    def _check_same_namespace(self, memory_id: str) -> None:
        try:
            stored = self._core().get(memory_id)
        except MemoryNotFoundError:
            return
        if stored.namespace != self.namespace:
            raise InvalidInputError(
                f"id {memory_id!r} is already stored in namespace {stored.namespace!r}, "
                f"not in this retriever's namespace {self.namespace!r}; ids are unique "
                "across namespaces"
            )

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        *,
        ids: Sequence[str] | None = None,
        session: str | None = None,
        **kwargs: Any,
    ) -> NuoNuoRetriever:
        """Build a retriever from keyword arguments (its fields) and store ``texts`` in it."""
        retriever = cls(**kwargs)
        retriever.add_texts(texts, metadatas, ids=ids, session=session)
        return retriever

    @classmethod
    def from_documents(
        cls,
        documents: Iterable[Document],
        *,
        ids: Sequence[str] | None = None,
        session: str | None = None,
        **kwargs: Any,
    ) -> NuoNuoRetriever:
        """Build a retriever from keyword arguments (its fields) and store ``documents`` in it."""
        retriever = cls(**kwargs)
        retriever.add_documents(documents, ids=ids, session=session)
        return retriever


def _checked_texts(texts: list[Any]) -> list[str]:
    return [check_text(text, f"texts[{position}]") for position, text in enumerate(texts)]


def _to_document(result: RecallResult) -> Document:
    metadata = dict(result.metadata)
    metadata[SCORE_KEY] = result.score
    metadata[SIMILARITY_KEY] = result.similarity
    metadata[HOPS_KEY] = result.hops
    metadata[PATH_KEY] = list(result.path)
    return Document(page_content=result.text, id=result.id, metadata=metadata)
