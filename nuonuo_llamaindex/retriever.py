"""A LlamaIndex retriever backed by an associative memory, in place of ``VectorStoreIndex``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
from llama_index.core.ingestion import arun_transformations, run_transformations
from llama_index.core.schema import (
    BaseNode,
    Document,
    IndexNode,
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    QueryType,
    RelatedNodeInfo,
    TextNode,
    TransformComponent,
)
from llama_index.core.vector_stores.types import MetadataFilters

from nuonuo_core.embedding import validate_embeddings
from nuonuo_core.errors import InvalidInputError, InvalidTypeError, MemoryNotFoundError
from nuonuo_core.memory import AssociativeMemory, _preview, check_hops, normalize_namespace
from nuonuo_core.text import content_words
from nuonuo_core.types import MemoryItem, Namespace, RecallResult
from nuonuo_llamaindex.filters import to_core_filter

logger = logging.getLogger(__name__)

MEMORY_ID_KEY = "memory_id"
"""Metadata key of a returned node: id of the memory (equal to the node id)."""

HOPS_KEY = "hops"
"""Metadata key of a returned node: 0 for a direct hit, n for a memory reached through n links."""

SIMILARITY_KEY = "similarity"
"""Metadata key of a returned node: cosine similarity of its best cue to the query."""

PATH_KEY = "association_path"
"""Metadata key of a returned node: list of memory ids from the direct hit to this node."""

RESULT_METADATA_KEYS = (MEMORY_ID_KEY, HOPS_KEY, SIMILARITY_KEY, PATH_KEY)
"""Keys that retrieval adds to node metadata. They are hidden from the LLM and
the embedding text, and stripped from nodes before they are stored."""

REF_DOC_ID_KEY = "ref_doc_id"
"""Stored metadata key that contains the id of the document a node came from."""

MemoryLike = AssociativeMemory | str | os.PathLike


class NuoNuoRetriever(BaseRetriever):
    """A LlamaIndex retriever that recalls nodes from an associative memory.

    It takes the place of ``VectorStoreIndex.from_documents(...).as_retriever()``:
    it ingests ``Document`` objects and nodes (``from_documents``, ``from_nodes``,
    ``insert``, ``insert_nodes``), and ``retrieve``/``aretrieve`` return
    ``NodeWithScore`` objects that query engines, chat engines and postprocessors
    take as they are. With ``hops > 1`` it also returns nodes linked to the direct
    hits (chunks of the same document, memories naming the same rare word, or
    links made by ``memory.associate``), which a similarity search alone misses.

    Each returned node is a ``TextNode`` whose id is the memory id and whose
    metadata contains the stored metadata plus ``memory_id``, ``hops``,
    ``similarity`` and ``association_path`` (the list of memory ids from the
    direct hit to the node). ``NodeWithScore.score`` is the memory's activation,
    which links or a named speaker can lift above 1. Nodes that came from a document keep it as their
    ``NodeRelationship.SOURCE``.

    The memory embeds texts with its own model, so a node's precomputed
    ``embedding``, ``Settings.embed_model`` and ``QueryBundle.embedding`` are
    not used.

    Args:
        memory: The memory to read and write, or the path of a memory file to
            open. ``None`` creates a memory in RAM with the default embedding
            model; its contents are lost when the process exits.
        similarity_top_k: Number of nodes to return, default 2 as in LlamaIndex;
            0 returns none.
        hops: Recall hops; 1 is single-hop recall. ``None`` uses the memory's
            ``config.hops``.
        namespace: Namespace of the memory to store into and recall from, such
            as ``("alice",)``; the default ``()`` is the root namespace.
        filters: Metadata conditions every returned node must meet, as
            ``MetadataFilters`` (see :func:`nuonuo_llamaindex.filters.to_core_filter`)
            or a filter dict in the core's syntax.
        transformations: Transformations (node parsers, extractors) that
            :meth:`insert` runs on documents. ``None`` stores each document as one
            memory; the memory gives a long document extra cues for each chunk of
            it, so its end can be found too.
        show_progress: Show progress bars while transforming and embedding.
        callback_manager: LlamaIndex callback manager.
        object_map: Map of ``IndexNode`` index ids to objects, for recursive retrieval.
        objects: ``IndexNode`` objects for recursive retrieval.
        verbose: Print recursive retrieval steps.

    Raises:
        InvalidInputError: ``similarity_top_k`` below 0 or ``hops`` below 1 (both
            ``ValueError``), or unsupported filters.

    Example:
        >>> from llama_index.core import Document
        >>> retriever = NuoNuoRetriever.from_documents(
        ...     [Document(text="Max is my dog."), Document(text="Max loves the beach.")],
        ...     similarity_top_k=2, hops=2,
        ... )
        >>> [n.metadata["association_path"] for n in retriever.retrieve("my dog")]  # doctest: +SKIP
    """

    def __init__(
        self,
        memory: MemoryLike | None = None,
        *,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        hops: int | None = None,
        namespace: str | Sequence[str] = (),
        filters: MetadataFilters | Mapping[str, Any] | None = None,
        transformations: Sequence[TransformComponent] | None = None,
        show_progress: bool = False,
        callback_manager: CallbackManager | None = None,
        object_map: dict | None = None,
        objects: list[IndexNode] | None = None,
        verbose: bool = False,
    ) -> None:
        self._memory = open_memory(memory)
        self.similarity_top_k = similarity_top_k
        self.hops = hops
        self._namespace: Namespace = normalize_namespace(namespace)
        self.filters = filters
        self._transformations = list(transformations) if transformations is not None else []
        self._show_progress = show_progress
        super().__init__(
            callback_manager=callback_manager, object_map=object_map, objects=objects, verbose=verbose
        )

    # ------------------------------------------------------------------ settings

    @property
    def memory(self) -> AssociativeMemory:
        """The associative memory that nodes are stored in and recalled from."""
        return self._memory

    @property
    def namespace(self) -> Namespace:
        """Namespace that this retriever stores into and recalls from."""
        return self._namespace

    @property
    def similarity_top_k(self) -> int:
        """Number of nodes that retrieval returns."""
        return self._similarity_top_k

    @similarity_top_k.setter
    def similarity_top_k(self, value: int) -> None:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise InvalidTypeError(f"similarity_top_k must be an int, got {type(value).__name__}: {value!r}")
        if value < 0:
            raise InvalidInputError(f"similarity_top_k must be >= 0, got {value}")
        self._similarity_top_k = int(value)

    @property
    def hops(self) -> int | None:
        """Recall hops; ``None`` uses the memory's ``config.hops``."""
        return self._hops

    @hops.setter
    def hops(self, value: int | None) -> None:
        self._hops = None if value is None else check_hops(value)

    @property
    def filters(self) -> dict[str, Any] | None:
        """Metadata filter applied to every retrieval, in the core's syntax."""
        return self._filter

    @filters.setter
    def filters(self, value: MetadataFilters | Mapping[str, Any] | None) -> None:
        self._filter = to_core_filter(value)

    def as_retriever(self, **kwargs: Any) -> NuoNuoRetriever:
        """Return a retriever over the same memory, with the given settings changed.

        Takes the keyword arguments of :class:`NuoNuoRetriever` (``similarity_top_k``,
        ``hops``, ``namespace``, ``filters``, ...), so that code written for
        ``index.as_retriever(similarity_top_k=5)`` keeps working.
        """
        settings: dict[str, Any] = {
            "similarity_top_k": self._similarity_top_k,
            "hops": self._hops,
            "namespace": self._namespace,
            "filters": self._filter,
            "transformations": self._transformations,
            "show_progress": self._show_progress,
            "callback_manager": self.callback_manager,
            "object_map": self.object_map,
            "verbose": self._verbose,
        }
        settings.update(kwargs)
        return NuoNuoRetriever(self._memory, **settings)

    # ------------------------------------------------------------------ ingestion

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[Document],
        memory: MemoryLike | None = None,
        *,
        transformations: Sequence[TransformComponent] | None = None,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> NuoNuoRetriever:
        """Store documents in a memory and return a retriever over it.

        Without ``transformations`` each document becomes one memory whose id is
        the document id. With them (for example ``[SentenceSplitter()]``) each
        resulting node becomes one memory, and consecutive nodes of a document
        are linked, so ``hops > 1`` recalls a chunk's neighbours.

        Args:
            documents: The documents.
            memory: Memory or path of a memory file; ``None`` creates one in RAM.
            transformations: Node parsers and other transformations to run first.
            show_progress: Show progress bars.
            **kwargs: Other arguments of :class:`NuoNuoRetriever`.
        """
        retriever = cls(memory, transformations=transformations, show_progress=show_progress, **kwargs)
        nodes = run_transformations(
            list(documents), retriever._transformations, show_progress=show_progress
        )
        retriever.insert_nodes(nodes)
        return retriever

    @classmethod
    def from_nodes(
        cls, nodes: Sequence[BaseNode], memory: MemoryLike | None = None, **kwargs: Any
    ) -> NuoNuoRetriever:
        """Store nodes in a memory, one memory per node, and return a retriever over it.

        Args:
            nodes: The nodes; each node's id becomes its memory's id.
            memory: Memory or path of a memory file; ``None`` creates one in RAM.
            **kwargs: Other arguments of :class:`NuoNuoRetriever`.
        """
        retriever = cls(memory, **kwargs)
        retriever.insert_nodes(nodes)
        return retriever

    def insert(self, document: Document, **insert_kwargs: Any) -> list[str]:
        """Run the transformations on one document and store the result; returns the memory ids."""
        nodes = run_transformations([document], self._transformations, show_progress=self._show_progress)
        return self.insert_nodes(nodes, **insert_kwargs)

    async def ainsert(self, document: Document, **insert_kwargs: Any) -> list[str]:
        """Async :meth:`insert`; transformations run with their async methods."""
        nodes = await arun_transformations(
            [document], self._transformations, show_progress=self._show_progress
        )
        return await self.ainsert_nodes(nodes, **insert_kwargs)

    def insert_nodes(self, nodes: Sequence[BaseNode], **insert_kwargs: Any) -> list[str]:
        """Store nodes, one memory per node, and return the memory ids in order.

        The node id becomes the memory id, the node's text the memory's text, and
        its metadata the memory's metadata. Nodes of the same source document form
        one session, so consecutive ones are linked. When a node has metadata that
        its ``excluded_embed_metadata_keys`` let through, the metadata with the
        start of the text is stored as an extra cue, so queries about a title or
        file name find the node, as in ``VectorStoreIndex``.

        All nodes are checked before anything is stored; a bad node raises and
        stores nothing.

        Returns:
            Memory ids, in the order of ``nodes``. With the memory's
            ``config.deduplicate``, a node whose text is already stored in the
            namespace returns the existing memory's id and is not stored again.

        Raises:
            InvalidInputError: a node without text, with metadata that is not
                JSON-serialisable, or with an id that is already stored.
            InvalidTypeError: an item that is not a LlamaIndex node.
        """
        if insert_kwargs:
            logger.warning("insert_nodes ignores the arguments %s", sorted(insert_kwargs))
        items = self._items_from_nodes(nodes)
        if not items:
            return []
        return self._memory.add_many(items, namespace=self._namespace, show_progress=self._show_progress)

    async def ainsert_nodes(self, nodes: Sequence[BaseNode], **insert_kwargs: Any) -> list[str]:
        """Async :meth:`insert_nodes`, run in a worker thread."""
        return await asyncio.to_thread(self.insert_nodes, list(nodes), **insert_kwargs)

    def _items_from_nodes(self, nodes: Sequence[BaseNode]) -> list[MemoryItem]:
        if isinstance(nodes, BaseNode):
            raise InvalidTypeError("nodes must be a sequence of nodes, got a single node; wrap it in a list")
        chunk_words = self._memory.config.chunk_words
        items = []
        for index, node in enumerate(nodes):
            if not isinstance(node, BaseNode):
                raise InvalidTypeError(f"nodes[{index}] must be a LlamaIndex node, got {type(node).__name__}")
            items.append(_item_from_node(node, chunk_words))

        # Reject ids that are stored already, before anything is written.
        for item in items:
            if item.id in self._memory:
                raise InvalidInputError(
                    f"node id {item.id!r} is already stored; delete it first with "
                    "delete_nodes() or delete_ref_doc()"
                )
        return items

    def delete_nodes(self, node_ids: Sequence[str], **delete_kwargs: Any) -> None:
        """Delete the memories with these node ids, with their links.

        ``delete_kwargs`` (such as ``delete_from_docstore``) are accepted for
        compatibility with ``VectorStoreIndex`` and ignored.

        Raises:
            MemoryNotFoundError: when an id is not stored in this retriever's
                namespace; nothing is deleted then.
        """
        if isinstance(node_ids, str):
            raise InvalidTypeError("node_ids must be a list of ids, got a single str")
        ids = list(node_ids)
        for node_id in ids:
            if node_id not in self._memory or self._memory.get(node_id).namespace != self._namespace:
                raise MemoryNotFoundError(f"no node with id {node_id!r} in namespace {self._namespace!r}")
        for node_id in ids:
            self._memory.delete(node_id)

    async def adelete_nodes(self, node_ids: Sequence[str], **delete_kwargs: Any) -> None:
        """Async :meth:`delete_nodes`, run in a worker thread."""
        await asyncio.to_thread(self.delete_nodes, node_ids, **delete_kwargs)

    def delete_ref_doc(self, ref_doc_id: str, **delete_kwargs: Any) -> int:
        """Delete every memory that came from the document ``ref_doc_id``; returns how many.

        An unknown document id logs a warning and deletes nothing, as in LlamaIndex.
        ``delete_kwargs`` are accepted for compatibility and ignored.
        """
        records = self._memory.list(self._namespace, filter={REF_DOC_ID_KEY: ref_doc_id})
        if not records:
            logger.warning("ref_doc_id %s not found, nothing deleted", ref_doc_id)
            return 0
        for record in records:
            self._memory.delete(record.id)
        return len(records)

    async def adelete_ref_doc(self, ref_doc_id: str, **delete_kwargs: Any) -> int:
        """Async :meth:`delete_ref_doc`, run in a worker thread."""
        return await asyncio.to_thread(self.delete_ref_doc, ref_doc_id, **delete_kwargs)

    # ------------------------------------------------------------------ retrieval

    def retrieve(self, str_or_query_bundle: QueryType) -> list[NodeWithScore]:
        """Recall the nodes for a query string or ``QueryBundle``, best first.

        Raises:
            InvalidTypeError: when the query is neither a str nor a ``QueryBundle``.
                It is a ``TypeError``.
        """
        return super().retrieve(_check_query_type(str_or_query_bundle))

    async def aretrieve(self, str_or_query_bundle: QueryType) -> list[NodeWithScore]:
        """Async :meth:`retrieve`."""
        return await super().aretrieve(_check_query_type(str_or_query_bundle))

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [_node_with_score(result) for result in self._recall(query_bundle)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        results = await asyncio.to_thread(self._recall, query_bundle)
        return [_node_with_score(result) for result in results]

    def _recall(self, query_bundle: QueryBundle) -> list[RecallResult]:
        """Recall memories for a query bundle; the one body of sync and async retrieval."""
        texts = [text for text in query_bundle.embedding_strs if text.strip()]
        if self._similarity_top_k == 0 or not texts:
            return []
        if len(texts) == 1:
            return self._memory.recall(
                texts[0], self._similarity_top_k, hops=self._hops,
                namespace=self._namespace, filter=self._filter,
            )

        # Several embedding strings (HyDE and other query transforms): recall by
        # the mean of their unit embeddings, as VectorIndexRetriever does in
        # llama-index-core 0.14.
        embedder = self._memory.embedder
        vectors = validate_embeddings(embedder.encode(texts), len(texts), self._memory.dim, embedder.name)
        return self._memory.recall_by_vector(
            vectors.mean(axis=0), self._similarity_top_k, hops=self._hops,
            namespaces=[self._namespace], filter=self._filter,
            query_words=content_words(" ".join(texts)),
        )


def open_memory(memory: MemoryLike | None) -> AssociativeMemory:
    """Return ``memory`` itself, the memory file at that path, or a new memory in RAM for ``None``."""
    if memory is None:
        return AssociativeMemory()
    if isinstance(memory, AssociativeMemory):
        return memory
    if isinstance(memory, (str, os.PathLike)):
        return AssociativeMemory(memory)
    raise InvalidTypeError(
        f"memory must be an AssociativeMemory, a path or None, got {type(memory).__name__}"
    )


def _check_query_type(value: Any) -> QueryType:
    """Check that a query is a str or a ``QueryBundle``, and return it.

    Without this check, llama-index-core 0.14.25 raises a pydantic
    ``ValidationError`` for ``None`` or an int, and an ``AttributeError`` for bytes.
    """
    if not isinstance(value, (str, QueryBundle)):
        raise InvalidTypeError(
            f"query must be a str or QueryBundle, got {type(value).__name__}: {_preview(value)}"
        )
    return value


def _item_from_node(node: BaseNode, chunk_words: int) -> MemoryItem:
    """Turn one node into a memory item; raises on a node that cannot be stored."""
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(f"node {node.node_id!r} has no text; only nodes with text can be stored")

    # Stored metadata: the node's own, without keys that retrieval adds, plus the
    # source document so that delete_ref_doc() and SOURCE relationships work.
    metadata = {key: value for key, value in node.metadata.items() if key not in RESULT_METADATA_KEYS}
    ref_doc_id = node.node_id if isinstance(node, Document) else node.ref_doc_id
    if ref_doc_id is not None:
        metadata[REF_DOC_ID_KEY] = ref_doc_id
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"metadata of node {node.node_id!r} must be JSON-serialisable: {error}"
        ) from None

    # The metadata that LlamaIndex would embed with the text becomes an extra cue.
    cues: tuple[str, ...] = ()
    metadata_text = node.get_metadata_str(mode=MetadataMode.EMBED)
    if metadata_text.strip():
        head = " ".join(text.split()[:chunk_words])
        cues = (f"{metadata_text}\n\n{head}",)

    # Chunks of one document form a session, so consecutive chunks are linked.
    session = node.ref_doc_id if not isinstance(node, Document) else None
    return MemoryItem(text=text, id=node.node_id, metadata=metadata, cues=cues, session=session)


def _node_with_score(result: RecallResult) -> NodeWithScore:
    metadata = dict(result.metadata)
    ref_doc_id = metadata.pop(REF_DOC_ID_KEY, None)
    metadata[MEMORY_ID_KEY] = result.id
    metadata[HOPS_KEY] = result.hops
    metadata[SIMILARITY_KEY] = result.similarity
    metadata[PATH_KEY] = list(result.path)
    node = TextNode(
        id_=result.id,
        text=result.text,
        metadata=metadata,
        excluded_embed_metadata_keys=list(RESULT_METADATA_KEYS),
        excluded_llm_metadata_keys=list(RESULT_METADATA_KEYS),
    )
    if isinstance(ref_doc_id, str):
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=ref_doc_id)
    return NodeWithScore(node=node, score=result.score)
