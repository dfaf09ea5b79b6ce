"""The associative memory: the object that owns state, storage and locking."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
import numbers
import os
import sqlite3
import threading
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from nuonuo_core.config import MemoryConfig
from nuonuo_core.embedding import Embedder, HashingEmbedder, load_embedder, validate_embeddings
from nuonuo_core.errors import (
    ConfigError,
    EmbeddingError,
    InvalidInputError,
    InvalidTypeError,
    MemoryNotFoundError,
    NamespaceError,
    NamespaceTypeError,
    NuoNuoError,
    StorageError,
)
from nuonuo_core.filters import matches_filter, validate_filter
from nuonuo_core.functional import Projection, make_projection, winner_take_all
from nuonuo_core.cues import derive_cues, group_for_embedding
from nuonuo_core.lexical import EntityIndex
from nuonuo_core.partition import Candidate, CueInfo, Entry, Partition
from nuonuo_core.storage import LoadedMemories, Storage, StoredCue, StoredMemory
from nuonuo_core.text import lexical_terms, normalize_text
from nuonuo_core.types import MemoryItem, MemoryRecord, Namespace, RecallResult

logger = logging.getLogger(__name__)

NamespaceLike = str | Sequence[str]

# Rows per winner-take-all call when codes are computed for many memories at once.
_CODE_CHUNK = 2048
# Times update() embeds outside the lock before it embeds holding the lock.
_OPTIMISTIC_UPDATES = 3

# Sentence-transformers models trained on English text only (their model cards
# give "language: en"). Their WordPiece tokenizers turn other scripts into
# [UNK] pieces or single characters, and unrelated texts of such scripts get
# nearly the same vector. An embedder that sets `english_only` overrides this list.
ENGLISH_ONLY_MODELS = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
# A text is unfamiliar to an English-only model when more than this share of its
# letters and symbols is outside the Latin script.
UNFAMILIAR_SHARE = 0.5
# Share of the query's character bigrams that a memory text must contain to be a
# direct hit when the query or the memory is unfamiliar. A heuristic: related
# Chinese sentences share about half of their bigrams, unrelated ones a few.
MIN_CHARACTER_OVERLAP = 0.3
# Extra candidates fetched for an unfamiliar query before the character check.
_UNFAMILIAR_EXTRA_CANDIDATES = 50


class AssociativeMemory:
    """A long-term memory of texts with single-hop and multi-hop recall.

    Texts are embedded, stored with several cues each, and turned into sparse
    codes that the Hebbian association links together. ``recall`` finds memories
    by their cues (two-stage Hopfield) and, with ``hops > 1``, follows the links
    from those to memories that the query alone does not find.

    Every memory belongs to a namespace, a tuple of strings such as
    ``("alice",)`` or ``("alice", "work")``; the default is ``()``. Recall and
    links never cross namespaces.

    With ``path`` the memory lives in that SQLite file and every write is on disk
    when the call returns; without it, everything is lost when the process exits.

    All methods are thread-safe. The ``a``-prefixed methods run the same work in a
    worker thread, so they do not block the event loop.

    Languages: the default model, all-MiniLM-L6-v2, was trained on English. It
    reads other Latin-script languages roughly, and other scripts (Chinese,
    Cyrillic, Arabic, emoji) not at all: its tokenizer turns them into unknown
    or single-character word pieces, and unrelated texts in them get nearly the
    same vector (cosine 0.4 to 0.8 between unrelated Chinese sentences, about
    0.1 between unrelated English ones, in a small sample). So with an
    English-only model (:data:`ENGLISH_ONLY_MODELS`, or an embedder whose
    ``english_only`` is true), a direct hit whose text or query is mostly in
    another script must contain :data:`MIN_CHARACTER_OVERLAP` of the query's
    character bigrams. Such memories are stored and returned exactly, and found
    by the characters they share with the query, not by meaning. For meaning
    across languages, use a multilingual embedder.

    Args:
        path: SQLite file to open or create; ``None`` keeps the memory in RAM.
        config: Configuration; for an existing file the stored one is used when
            ``None``.
        embedder: Embedding model; by default the one named by
            ``config.embedding_model``, loaded on first use.

    Example:
        >>> memory = AssociativeMemory(embedder=HashingEmbedder())
        >>> first = memory.add("My dog is called Max.", session="chat")
        >>> second = memory.add("Max loves running on the beach.", session="chat")
        >>> [r.path for r in memory.recall("my dog", k=2, hops=2)]  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        config: MemoryConfig | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        if config is not None and not isinstance(config, MemoryConfig):
            raise InvalidTypeError(f"config must be a MemoryConfig, got {type(config).__name__}")
        if embedder is not None and not isinstance(embedder, Embedder):
            raise InvalidTypeError(
                f"embedder must have name, dim and encode(), got {type(embedder).__name__}"
            )
        self._lock = threading.RLock()
        # Guards the embedder and projection, which are made on first use.
        self._lazy_lock = threading.RLock()
        self._storage: Storage | None = None
        self._closed = False
        self._projection = None
        self._partitions: dict[Namespace, Partition] = {}
        self._namespace_of: dict[str, Namespace] = {}
        self._stored_code_params: str | None = None
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise InvalidTypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if path is not None:
            self._storage = Storage(path)
        try:
            self._setup(config, embedder)
        except BaseException:
            self._close_storage()
            raise

    def _setup(self, config: MemoryConfig | None, embedder: Embedder | None) -> None:
        """Settle configuration and embedder against the file, then load it."""
        stored_json: str | None = None
        stored_config: MemoryConfig | None = None
        if self._storage is not None:
            stored_json = self._storage.get_meta("config")
            if stored_json is not None:
                try:
                    stored_config = MemoryConfig.from_dict(json.loads(stored_json))
                except (ValueError, TypeError) as error:
                    raise StorageError(
                        f"memory file {str(self._storage.path)!r} contains an unreadable configuration: {error}"
                    ) from error
            self._stored_code_params = self._storage.get_meta("code_params")

        if config is None:
            config = stored_config or MemoryConfig()
        if embedder is not None and embedder.name != config.embedding_model:
            if stored_config is not None and stored_config.embedding_model != embedder.name:
                raise ConfigError(
                    f"the memory file was written with embedding model "
                    f"{stored_config.embedding_model!r}, but the embedder is {embedder.name!r}"
                )
            config = config.replace(embedding_model=embedder.name)
        if stored_config is not None and stored_config.embedding_model != config.embedding_model:
            raise ConfigError(
                f"the memory file was written with embedding model {stored_config.embedding_model!r}, "
                f"but the configuration names {config.embedding_model!r}"
            )
        self.config = config
        self.device = config.torch_device
        self._embedder = embedder
        # Subject name -> its embedding; see MemoryConfig.subject_projection.
        self._subject_vectors: dict[str, np.ndarray] = {}
        self._dim: int | None = embedder.dim if embedder is not None else None
        if self._storage is not None:
            stored_dim = self._storage.get_meta("embedding_dim")
            if stored_dim is not None:
                if self._dim is not None and int(stored_dim) != self._dim:
                    raise ConfigError(
                        f"the memory file holds {stored_dim}-dimensional embeddings, "
                        f"but the embedder makes {self._dim}"
                    )
                self._dim = int(stored_dim)
        logger.info("Memory uses device %s", self.device)
        if self._storage is None:
            return

        # Load first, so a file that fails to load has not been written to.
        self._load()
        if stored_json != config.to_json():
            with self._storage.transaction():
                self._storage.set_meta("config", config.to_json())

    # ------------------------------------------------------------------ setup

    @property
    def embedder(self) -> Embedder:
        """The embedding model, loaded on first use."""
        if self._embedder is not None:
            return self._embedder
        with self._lazy_lock:
            if self._embedder is not None:
                return self._embedder
            name = self.config.embedding_model
            embedder: Embedder
            if name == "hashing" or name.startswith("hashing:"):
                embedder = HashingEmbedder(dim=self._dim or 384, name=name)
            else:
                device = "cuda" if self.device.type == "cuda" else "cpu"
                embedder = load_embedder(name, device=device)
            if self._dim is not None and embedder.dim != self._dim:
                raise ConfigError(
                    f"the memory holds {self._dim}-dimensional embeddings, "
                    f"but model {name!r} makes {embedder.dim}"
                )
            self._embedder = embedder
            return embedder

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        if self._dim is None:
            self._dim = self.embedder.dim
        return self._dim

    def _get_projection(self) -> Projection:
        if self._projection is None:
            with self._lazy_lock:
                if self._projection is None:
                    self._projection = make_projection(
                        self.dim, self.config.code_dim, self._projection_blocks(), self.config.seed, self.device
                    )
        return self._projection

    def _code_params(self) -> str:
        """Everything a memory's code depends on besides its embedding, as JSON."""
        return json.dumps(
            {
                "dim": self.dim, "code_dim": self.config.code_dim, "k": self.config.k,
                "blocks": self._projection_blocks(), "seed": self.config.seed,
            },
            sort_keys=True,
        )

    def _make_codes(self, primary: np.ndarray) -> np.ndarray:
        """Return the sparse code of each embedding, computed in chunks of bounded size.

        The projection makes ``code_dim`` floats per row before winner-take-all,
        so a chunk of 2048 rows needs 128 MiB at the default ``code_dim``.

        Shape:
            primary: ``(n, dim)``, float32 unit rows (the text cues).
            return: ``(n, k)``, int64 unit indices, ascending.
        """
        codes = np.empty((primary.shape[0], self.config.k), dtype=np.int64)
        if primary.shape[0] == 0:
            return codes
        projection = self._get_projection()
        for start in range(0, primary.shape[0], _CODE_CHUNK):
            chunk = torch.from_numpy(np.ascontiguousarray(primary[start : start + _CODE_CHUNK])).to(self.device)
            codes[start : start + chunk.shape[0]] = winner_take_all(chunk, projection, self.config.k).cpu().numpy()
        return codes

    def _projection_blocks(self) -> int:
        # Fall back to fewer blocks when the configured number does not divide
        # the embedding dimension (a custom embedder of odd size).
        blocks = self.config.projection_blocks
        while blocks > 1 and (self.dim % blocks or self.config.code_dim % blocks):
            blocks -= 1
        return blocks

    def _partition(self, namespace: Namespace, create: bool) -> Partition | None:
        partition = self._partitions.get(namespace)
        if partition is None and create:
            partition = Partition(namespace, self.config, self.dim, self.device)
            partition.set_entity_links(
                self.config.links.entity, _rare_word_limit, self.config.links.word, _RARE_WORD_CAP
            )
            self._partitions[namespace] = partition
        return partition

    def _load(self) -> None:
        """Rebuild the in-memory indexes from the file.

        Codes stored in the file are used when they were made with the current
        ``code_dim``, ``k``, projection and seed. Otherwise every code is
        computed again from the stored embeddings and written back.
        """
        assert self._storage is not None
        started = time.perf_counter()
        try:
            loaded = self._storage.load(self._dim)
            links = list(self._storage.load_associations())
        except sqlite3.Error as error:
            raise StorageError(f"cannot read memory file {str(self._storage.path)!r}: {error}") from error
        except (ValueError, TypeError) as error:  # JSON of a damaged row
            raise StorageError(f"memory file {str(self._storage.path)!r} is damaged: {error}") from error
        if len(loaded) == 0:
            return
        if self._dim is None:
            self._dim = int(loaded.embeddings.shape[1])
        bad = ~np.isfinite(loaded.embeddings).all(axis=1)
        if bad.any():
            owner = int(np.searchsorted(loaded.cue_offsets, int(np.nonzero(bad)[0][0]), side="right")) - 1
            raise StorageError(
                f"memory file {str(self._storage.path)!r} is damaged: memory {loaded.ids[owner]!r} "
                "has an embedding with NaN or infinite values"
            )
        codes = self._loaded_codes(loaded)

        # One partition per namespace, filled in one batch each.
        by_namespace: dict[Namespace, list[int]] = {}
        for index, namespace in enumerate(loaded.namespaces):
            by_namespace.setdefault(namespace, []).append(index)
        rowid_to_slot: dict[int, tuple[Partition, int]] = {}
        offsets = loaded.cue_offsets
        for namespace, indexes in by_namespace.items():
            partition = self._partition(namespace, create=True)
            assert partition is not None
            entries = []
            vectors = []
            for i in indexes:
                first, last = int(offsets[i]), int(offsets[i + 1])
                entries.append(
                    Entry(
                        id=loaded.ids[i], rowid=loaded.rowids[i], text=loaded.texts[i],
                        metadata=loaded.metadata[i], timestamp=loaded.timestamps[i],
                        created_at=loaded.created_at[i], session=loaded.sessions[i],
                        content_hash=loaded.content_hashes[i],
                        cues=[
                            CueInfo(loaded.cue_kinds[c], loaded.cue_starts[c], loaded.cue_ends[c], loaded.cue_texts[c])
                            for c in range(first, last)
                        ],
                    )
                )
                vectors.append(loaded.embeddings[first:last])
            slots = partition.add_many(entries, vectors, codes[indexes])
            for entry, slot in zip(entries, slots):
                rowid_to_slot[entry.rowid] = (partition, slot)  # type: ignore[index]
                self._namespace_of[entry.id] = namespace

        # Links; one between namespaces cannot be made by this code and is skipped.
        skipped = 0
        for source, target, kind, weight in links:
            if source not in rowid_to_slot or target not in rowid_to_slot:
                continue
            partition, a = rowid_to_slot[source]
            other, b = rowid_to_slot[target]
            if other is not partition:
                skipped += 1
                continue
            partition.association.link(a, b, kind, weight)
        if skipped:
            logger.warning("Skipped %d stored links between namespaces in %s", skipped, self._storage.path)
        logger.info(
            "Opened %s: %d memories, %d links in %.2f s",
            self._storage.path, len(loaded), len(links), time.perf_counter() - started,
        )

    def _loaded_codes(self, loaded: LoadedMemories) -> np.ndarray:
        """Return the codes of loaded memories, from the file when they are current.

        Shape:
            return: ``(len(loaded), k)``, int64.
        """
        assert self._storage is not None
        params = self._code_params()
        k = self.config.k
        if params == self._stored_code_params and all(
            code is not None and len(code) == 4 * k for code in loaded.codes
        ):
            codes = np.frombuffer(b"".join(loaded.codes), dtype="<i4").reshape(-1, k).astype(np.int64)  # type: ignore[arg-type]
            if codes.size == 0 or (codes.min() >= 0 and codes.max() < self.config.code_dim):
                return codes

        # Stale or missing: compute from the text cue of each memory and store.
        logger.info("Computing the codes of %d memories in %s", len(loaded), self._storage.path)
        codes = self._make_codes(loaded.embeddings[loaded.cue_offsets[:-1]])
        with self._storage.transaction():
            self._storage.store_codes(loaded.rowids, codes)
            self._storage.set_meta("code_params", params)
        self._stored_code_params = params
        return codes

    def _close_storage(self) -> None:
        if self._storage is not None:
            self._storage.close()

    def close(self) -> None:
        """Close the memory file. Using the memory afterwards raises ``StorageError``."""
        with self._lock:
            if not self._closed:
                self._close_storage()
                self._closed = True

    def __enter__(self) -> AssociativeMemory:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the memory is closed")

    # ------------------------------------------------------------------ add

    def add(
        self,
        text: str,
        *,
        id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp: float | datetime | str | None = None,
        cues: Sequence[str] = (),
        session: str | None = None,
        namespace: NamespaceLike = (),
    ) -> str:
        """Store one memory and return its id.

        Args:
            text: The text to remember; must not be blank.
            id: Id to give the memory; a random one when ``None``. An id that is
                already stored raises ``InvalidInputError``: use :meth:`update`.
            metadata: JSON-serialisable values stored and returned with it.
            timestamp: When the event happened: POSIX seconds, a ``datetime`` or
                an ISO 8601 string.
            cues: Extra texts that should recall this memory (paraphrases).
            session: Conversation this memory belongs to; consecutive memories of
                one session are linked.
            namespace: Namespace to store it in.

        Returns:
            The id of the memory. With ``config.deduplicate``, adding a text that
            is already stored in the namespace without giving an ``id`` returns
            the existing memory's id and stores nothing; with an ``id`` the
            memory is always stored under that id.
        """
        # A single string is one cue; everything else is checked in _prepare.
        item = MemoryItem(
            text=text, id=id, metadata=metadata if metadata is not None else {},  # type: ignore[arg-type]
            timestamp=timestamp, cues=(cues,) if isinstance(cues, str) else cues,  # type: ignore[arg-type]
            session=session,
        )
        return self._add_items([item], namespace, None, 64, False, label_items=False)[0]

    def add_many(
        self,
        items: Iterable[MemoryItem | str | Mapping[str, Any]],
        *,
        namespace: NamespaceLike = (),
        session: str | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> list[str]:
        """Store many memories in one transaction and return their ids, in order.

        Items are :class:`MemoryItem`, plain strings, or mappings with the fields
        of :class:`MemoryItem`. All items are checked before anything is stored; a
        bad item raises and stores nothing.

        Args:
            items: The memories.
            namespace: Namespace to store them in.
            session: Session of the items that name none; consecutive items of a
                session are linked.
            batch_size: Texts per embedding batch.
            show_progress: Show a progress bar while embedding.
        """
        return self._add_items(_as_list(items), namespace, session, batch_size, show_progress, label_items=True)

    def _add_items(
        self,
        items: list[Any],
        namespace: NamespaceLike,
        session: str | None,
        batch_size: int,
        show_progress: bool,
        label_items: bool,
    ) -> list[str]:
        """Check, embed and store items; the body of :meth:`add` and :meth:`add_many`."""
        self._check_open()
        namespace = normalize_namespace(namespace)
        if session is not None:
            check_label(session, "session")
        batch_size = check_k(batch_size, "batch_size")
        if batch_size == 0:
            raise InvalidInputError("batch_size must be >= 1, got 0")
        prepared = []
        for index, item in enumerate(items):
            try:
                prepared.append(self._prepare(item, session))
            except NuoNuoError as error:
                if not label_items:
                    raise
                # Same exception class, with the position of the bad item in front.
                raise type(error)(f"item {index}: {error}") from error
        if not prepared:
            return []
        id_counts = Counter(p.entry.id for p in prepared if p.explicit_id)
        repeated = [memory_id for memory_id, count in id_counts.items() if count > 1]
        if repeated:
            raise InvalidInputError(f"id {repeated[0]!r} appears twice in one batch")

        # Embed outside the lock.
        per_item = self._embed_cues(
            [(p.entry.text, p.entry.cues, p.cue_texts) for p in prepared], batch_size, show_progress
        )
        codes = self._make_codes(np.stack([v[0] for v in per_item]))

        with self._lock:
            self._check_open()
            partition = self._partition(namespace, create=True)
            assert partition is not None
            for p in prepared:
                if p.explicit_id and p.entry.id in self._namespace_of:
                    raise InvalidInputError(
                        f"a memory with id {p.entry.id!r} already exists; use update() to change it"
                    )
            results: list[str] = []
            new_entries: list[Entry] = []
            new_vectors: list[np.ndarray] = []
            new_codes: list[np.ndarray] = []
            seen_hash: dict[str, str] = {}
            for p, item_vectors, code in zip(prepared, per_item, codes):
                # A memory the caller gave its own id is stored as asked.
                if self.config.deduplicate and not p.explicit_id:
                    existing = partition.slot_of_hash.get(p.entry.content_hash)
                    if existing is not None:
                        results.append(partition.entries[existing].id)  # type: ignore[union-attr]
                        continue
                    if p.entry.content_hash in seen_hash:
                        results.append(seen_hash[p.entry.content_hash])
                        continue
                    seen_hash[p.entry.content_hash] = p.entry.id
                results.append(p.entry.id)
                new_entries.append(p.entry)
                new_vectors.append(item_vectors)
                new_codes.append(code)
            if not new_entries:
                return results
            self._store_new(partition, new_entries, new_vectors, np.stack(new_codes))
            return results

    def _store_new(
        self, partition: Partition, entries: list[Entry], vectors: list[np.ndarray], codes: np.ndarray
    ) -> None:
        """Write new memories and their session links to disk, then to the indexes."""
        # Session links: each memory to the previous one of its session.
        previous: dict[str, int | Entry] = {}
        for session, slot in partition.last_in_session.items():
            previous[session] = slot
        session_links: list[tuple[int | Entry, Entry]] = []
        for entry in entries:
            if entry.session is None:
                continue
            before = previous.get(entry.session)
            if before is not None:
                session_links.append((before, entry))
            previous[entry.session] = entry

        if self._storage is not None:
            params = self._code_params()
            with self._storage.transaction():
                if self._storage.get_meta("embedding_dim") is None:
                    self._storage.set_meta("embedding_dim", str(self.dim))
                if self._stored_code_params != params:
                    self._storage.set_meta("code_params", params)
                for entry, item_vectors, code in zip(entries, vectors, codes):
                    entry.rowid = self._storage.insert_memory(
                        _stored(entry, item_vectors, code, partition.namespace)
                    )
                for before, entry in session_links:
                    before_rowid = (
                        partition.entries[before].rowid if isinstance(before, int) else before.rowid  # type: ignore[union-attr]
                    )
                    self._storage.add_association(before_rowid, entry.rowid, "session", 1.0)  # type: ignore[arg-type]
            self._stored_code_params = params

        slots = partition.add_many(entries, vectors, codes)
        slot_of_entry = {id(entry): slot for entry, slot in zip(entries, slots)}
        for entry in entries:
            self._namespace_of[entry.id] = partition.namespace
        partition.association.link_many(
            (
                (before if isinstance(before, int) else slot_of_entry[id(before)], slot_of_entry[id(entry)])
                for before, entry in session_links
            ),
            "session",
            1.0,
        )

    class _Prepared:
        __slots__ = ("entry", "cue_texts", "explicit_id")

        def __init__(self, entry: Entry, cue_texts: list[str], explicit_id: bool) -> None:
            self.entry = entry
            self.cue_texts = cue_texts
            self.explicit_id = explicit_id

    def _prepare(self, item: Any, session: str | None) -> AssociativeMemory._Prepared:
        """Check one item and work out its cues; raises on bad input."""
        if isinstance(item, str):
            item = MemoryItem(text=item)
        elif isinstance(item, Mapping):
            unknown = set(item) - {"text", "id", "metadata", "timestamp", "cues", "session"}
            if unknown:
                raise InvalidInputError(
                    f"unknown fields {sorted(map(str, unknown))}; valid fields: "
                    "text, id, metadata, timestamp, cues, session"
                )
            if "text" not in item:
                raise InvalidInputError("the mapping has no 'text'")
            item = MemoryItem(
                text=item["text"], id=item.get("id"),
                metadata=item["metadata"] if item.get("metadata") is not None else {},
                timestamp=item.get("timestamp"),
                cues=item["cues"] if item.get("cues") is not None else (),
                session=item.get("session"),
            )
        elif not isinstance(item, MemoryItem):
            raise InvalidTypeError(
                f"an item must be a str, a mapping or a MemoryItem, got {type(item).__name__}: {_preview(item)}"
            )
        text = check_text(item.text, "text")
        explicit_id = item.id is not None
        memory_id = check_id(item.id) if explicit_id else uuid.uuid4().hex
        metadata = check_metadata(item.metadata)
        timestamp = parse_timestamp(item.timestamp)
        item_session = item.session if item.session is not None else session
        if item_session is not None:
            check_label(item_session, "session")
        extra = check_cues(item.cues)

        cue_infos, cue_texts = self._cues_for(text, extra)
        entry = Entry(
            id=memory_id, rowid=None, text=text, metadata=metadata, timestamp=timestamp,
            created_at=time.time(), session=item_session, content_hash=content_hash(text),
            cues=cue_infos,
        )
        return AssociativeMemory._Prepared(entry, cue_texts, explicit_id)

    def _cues_for(self, text: str, extra: list[str]) -> tuple[list[CueInfo], list[str]]:
        return derive_cues(text, extra, self.config)

    def _embed(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        embedder = self.embedder
        raw = embedder.encode(texts, batch_size=batch_size, show_progress=show_progress)
        return validate_embeddings(raw, len(texts), self.dim, embedder.name)

    def _embed_cues(
        self, memories: list[tuple[str, list[CueInfo], list[str]]], batch_size: int = 64, show_progress: bool = False
    ) -> list[np.ndarray]:
        """Return the vectors of every cue of each memory, in cue order.

        Each memory is ``(text, cue infos, cue texts)``, its text cue first.
        Sentence cues are pooled from the pass over their memory's text where
        the embedder offers ``encode_with_spans``; every other distinct text is
        embedded once.
        """
        with_spans = getattr(self.embedder, "encode_with_spans", None)
        pooled, plain_texts = group_for_embedding(memories, with_spans is not None)
        plain = {cue: row for row, cue in enumerate(plain_texts)}
        plain_vectors = self._embed(plain_texts, batch_size, show_progress) if plain_texts else None
        pooled_row = {text: row for row, text in enumerate(pooled)}
        if pooled:
            text_vectors, span_vectors = with_spans(  # type: ignore[misc]
                list(pooled), list(pooled.values()), batch_size=batch_size, show_progress=show_progress
            )
            text_vectors = validate_embeddings(text_vectors, len(pooled), self.dim, self.embedder.name)
            if len(span_vectors) != len(pooled):
                raise EmbeddingError(
                    f"embedder {self.embedder.name!r} returned span vectors for {len(span_vectors)} texts, "
                    f"expected {len(pooled)}"
                )
            span_vectors = [
                validate_embeddings(v, len(spans), self.dim, self.embedder.name)
                for v, spans in zip(span_vectors, pooled.values())
            ]

        result = []
        for text, infos, cue_texts in memories:
            rows = np.empty((len(infos), self.dim), dtype=np.float32)
            sentence_number = 0
            for number, (info, cue) in enumerate(zip(infos, cue_texts)):
                if text in pooled and info.kind == "text":
                    rows[number] = text_vectors[pooled_row[text]]
                elif text in pooled and info.kind == "sentence":
                    rows[number] = span_vectors[pooled_row[text]][sentence_number]
                    sentence_number += 1
                else:
                    rows[number] = plain_vectors[plain[cue]]  # type: ignore[index]
            result.append(rows)
        return result

    # ------------------------------------------------------------------ links

    def associate(self, a: str, b: str, weight: float = 1.0) -> None:
        """Link memories ``a`` and ``b`` so that recalling one with ``hops > 1`` reaches the other.

        Links are symmetric; linking the same pair again adds to the weight. Both
        memories must be in the same namespace.
        """
        self._check_open()
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight) or weight <= 0:
            raise InvalidInputError(f"weight must be a positive finite number, got {weight!r}")
        with self._lock:
            partition_a, slot_a = self._locate(a)
            partition_b, slot_b = self._locate(b)
            if partition_a is not partition_b:
                raise InvalidInputError(
                    f"memories {a!r} and {b!r} are in different namespaces "
                    f"{partition_a.namespace!r} and {partition_b.namespace!r}; links never cross namespaces"
                )
            if slot_a == slot_b:
                raise InvalidInputError(f"cannot link memory {a!r} to itself")
            if self._storage is not None:
                with self._storage.transaction():
                    entry_a = partition_a.entries[slot_a]
                    entry_b = partition_a.entries[slot_b]
                    self._storage.add_association(entry_a.rowid, entry_b.rowid, "explicit", float(weight))  # type: ignore[union-attr,arg-type]
            partition_a.association.link(slot_a, slot_b, "explicit", float(weight))

    def dissociate(self, a: str, b: str) -> None:
        """Remove every stored link between memories ``a`` and ``b``."""
        self._check_open()
        with self._lock:
            partition_a, slot_a = self._locate(a)
            partition_b, slot_b = self._locate(b)
            if partition_a is not partition_b:
                return
            if self._storage is not None:
                with self._storage.transaction():
                    self._storage.delete_association(
                        partition_a.entries[slot_a].rowid, partition_a.entries[slot_b].rowid, None  # type: ignore[union-attr,arg-type]
                    )
            partition_a.association.unlink(slot_a, slot_b)

    def links(self, id: str) -> dict[str, dict[str, float]]:
        """Return the stored links of a memory: neighbour id -> kind -> weight."""
        with self._lock:
            partition, slot = self._locate(id)
            return {
                partition.entries[n].id: kinds  # type: ignore[union-attr]
                for n, kinds in partition.association.links_of(slot).items()
            }

    # ------------------------------------------------------------------ recall

    def recall(
        self,
        query: str,
        k: int = 5,
        *,
        hops: int | None = None,
        namespace: NamespaceLike = (),
        namespace_prefix: NamespaceLike | None = None,
        filter: Mapping[str, Any] | None = None,
    ) -> list[RecallResult]:
        """Return the memories that best match ``query``, best first.

        Single-hop recall (``hops=1``) scores every memory by its best cue and
        settles the query on the top ``hopfield_candidates`` (two-stage Hopfield).
        With ``hops > 1`` the Hebbian association then spreads from those memories
        for ``hops - 1`` more steps, so memories linked to the direct hits are
        returned too, each with the chain of ids (``path``) it was reached through.

        With an English-only model, a query or memory mostly in another script
        needs shared characters to match; see the class docstring.

        Args:
            query: Text to recall by. An empty or blank query returns ``[]``.
            k: Number of results; 0 returns ``[]``.
            hops: Number of hops; ``config.hops`` when ``None``.
            namespace: Namespace to search.
            namespace_prefix: Search every namespace that starts with this tuple
                instead of ``namespace``; ``()`` searches all.
            filter: Metadata conditions every result must meet; see
                :func:`nuonuo_core.filters.validate_filter`.

        Raises:
            InvalidTypeError: when ``query`` is not a str, or ``k`` or ``hops``
                not an int.
            InvalidInputError: when ``k`` is negative or ``hops`` below 1.
            EmbeddingError: when the embedder returns NaN, infinite values or
                the wrong shape.
        """
        self._check_open()
        query = check_query(query)
        k = check_k(k)
        hops = self.config.hops if hops is None else check_hops(hops)
        checked_filter = validate_filter(filter)
        if k == 0 or not query.strip():
            return []
        namespaces = self._target_namespaces(namespace, namespace_prefix)
        if not namespaces:
            return []
        query_vector = torch.from_numpy(self._embed([query])[0]).to(self.device)

        # With an English-only model, texts in other scripts need shared characters.
        if not _reads_english_only(self.embedder):
            return self._recall_vector(
                query_vector, k, hops, namespaces, checked_filter, lexical_terms(query),
                subject_vector=self._subject_vector,
            )
        query_unfamiliar = unfamiliar_share(query) > UNFAMILIAR_SHARE
        query_features = character_features(query)

        def is_match(text: str) -> bool:
            if not query_unfamiliar and unfamiliar_share(text) <= UNFAMILIAR_SHARE:
                return True
            return character_overlap(query_features, text) >= MIN_CHARACTER_OVERLAP

        # An unfamiliar query's vector ranks related memories barely above
        # unrelated ones, so look further down before the check.
        fetch = k + _UNFAMILIAR_EXTRA_CANDIDATES if query_unfamiliar else k
        results = self._recall_vector(
            query_vector, fetch, hops, namespaces, checked_filter, lexical_terms(query), is_match,
            subject_vector=self._subject_vector,
        )
        return results[:k]

    def recall_by_vector(
        self,
        vector: torch.Tensor | np.ndarray,
        k: int = 5,
        *,
        hops: int | None = None,
        namespaces: Sequence[Namespace] = ((),),
        filter: Mapping[str, Any] | None = None,
        query_words: Sequence[str] = (),
    ) -> list[RecallResult]:
        """Recall by an embedding instead of a text; otherwise like :meth:`recall`.

        Shape:
            vector: ``(dim,)``, float32; it is normalised to unit length.
        """
        self._check_open()
        k = check_k(k)
        hops = self.config.hops if hops is None else check_hops(hops)
        checked_filter = validate_filter(filter)
        if isinstance(namespaces, str):
            raise NamespaceTypeError(f"namespaces must be a list of namespaces, got the str {namespaces!r}")
        targets = [normalize_namespace(namespace) for namespace in namespaces]
        if isinstance(query_words, str):
            raise InvalidTypeError(f"query_words must be a list of words, got the str {query_words!r}")
        words_list = list(query_words)
        for word in words_list:
            if not isinstance(word, str):
                raise InvalidTypeError(f"query_words must hold str words, got {type(word).__name__} {word!r}")
        if k == 0:
            return []
        if isinstance(vector, torch.Tensor):
            real = not vector.dtype.is_complex and vector.dtype != torch.bool
        else:
            try:
                vector = np.asarray(vector)
            except (TypeError, ValueError) as error:
                raise InvalidTypeError(f"vector must be a tensor or array of {self.dim} floats: {error}") from error
            real = vector.dtype.kind in "fiu"
        if not real:
            raise InvalidTypeError(
                f"vector must be a tensor or array of {self.dim} real numbers, got dtype {vector.dtype}"
            )
        vector = torch.as_tensor(vector, dtype=torch.float32).to(self.device)
        if vector.shape != (self.dim,):
            raise InvalidInputError(f"vector must have shape ({self.dim},), got {tuple(vector.shape)}")
        norm = float(vector.norm())
        # The norm is finite exactly when every element is.
        if not math.isfinite(norm):
            bad = (~torch.isfinite(vector)).nonzero()
            if bad.numel() == 0:
                raise InvalidInputError(f"vector is too large to normalise: its norm overflows float32 ({norm})")
            position = int(bad[0, 0])
            raise InvalidInputError(f"vector must be finite, got {float(vector[position])} at index {position}")
        if norm == 0.0:
            raise InvalidInputError("vector must be non-zero, got all zeros")
        return self._recall_vector(vector / norm, k, hops, targets, checked_filter, words_list)

    def _recall_vector(
        self,
        vector: torch.Tensor,
        k: int,
        hops: int,
        namespaces: Sequence[Namespace],
        filter: dict[str, Any] | None,
        query_words: list[str],
        is_match: Callable[[str], bool] | None = None,
        subject_vector: Callable[[str], np.ndarray] | None = None,
    ) -> list[RecallResult]:
        """Recall by a checked unit vector in each namespace and merge the results.

        ``is_match``, when given, must accept the text of the direct hit that
        starts each result's path; results from a rejected hit are dropped.
        ``subject_vector``, when given, embeds a subject's name, so that the
        subjects the query names are taken out of the query vector (see
        ``MemoryConfig.subject_projection``).
        """
        with self._lock:
            self._check_open()
            found: list[tuple[Partition, Candidate]] = []
            partitions = [self._partitions.get(namespace) for namespace in namespaces]
            partitions = [p for p in partitions if p is not None and len(p) > 0]
            scored_query = None
            if subject_vector is not None and self.config.subject_projection > 0 and query_words:
                scored_query = _without_subjects(
                    vector, partitions, query_words, self.config.subject_projection, subject_vector
                )
            hits = [p.direct_hits(vector, query_words, k, filter, scored_query) for p in partitions]
            log_normalizer = None
            if len(partitions) > 1:
                # Share attention among the candidates of all namespaces, so that
                # scores from different namespaces compare.
                pooled = [h.top_scores() for h in hits if h is not None]
                if pooled:
                    scores = np.sort(np.concatenate(pooled))[::-1]
                    scores = scores[: self.config.ranked_candidates(k)]
                    log_normalizer = float(_logsumexp(self.config.beta * scores))
            for partition, partition_hits in zip(partitions, hits):
                if partition_hits is None:
                    continue
                candidates = partition.recall(
                    vector, query_words, k, hops, filter, hits=partition_hits, log_normalizer=log_normalizer
                )
                if is_match is not None:
                    accepted = {
                        c.path[0] for c in candidates
                        if is_match(partition.entries[c.path[0]].text)  # type: ignore[union-attr]
                    }
                    candidates = [c for c in candidates if c.path[0] in accepted]
                found.extend((partition, candidate) for candidate in candidates)
            found.sort(key=lambda pc: (-pc[1].score, pc[1].hops))
            return [self._result(partition, candidate) for partition, candidate in found[:k]]

    def _subject_vector(self, subject: str) -> np.ndarray:
        """Return the unit embedding of a subject's name (lower-cased, as subjects
        are kept), float32; called with the lock held.

        The last :data:`_SUBJECT_VECTORS_KEPT` names embedded are kept, the
        oldest dropped first, so a name is embedded again only after that many
        others.
        """
        vector = self._subject_vectors.get(subject)
        if vector is None:
            vector = self._embed([subject])[0].astype(np.float32)
            norm = float(np.linalg.norm(vector))
            vector = vector / np.float32(norm) if norm > 0 else vector
            if len(self._subject_vectors) >= _SUBJECT_VECTORS_KEPT:
                # The oldest entry goes first: dictionaries keep insertion order.
                del self._subject_vectors[next(iter(self._subject_vectors))]
            self._subject_vectors[subject] = vector
        return vector

    def _result(self, partition: Partition, candidate: Candidate) -> RecallResult:
        entry = partition.entries[candidate.slot]
        assert entry is not None
        owner = partition.entries[candidate.path[0]]
        cue_text = entry.text
        if owner is not None:
            for row, info in zip(owner.cue_rows, owner.cues):
                if row == candidate.cue_row:
                    cue_text = info.resolve(owner.text)
                    break
        return RecallResult(
            id=entry.id,
            text=entry.text,
            score=float(candidate.score),
            similarity=float(candidate.similarity),
            metadata=_copy_metadata(entry.metadata),
            namespace=partition.namespace,
            timestamp=entry.timestamp,
            hops=candidate.hops,
            path=tuple(partition.entries[s].id for s in candidate.path),  # type: ignore[union-attr]
            cue=cue_text,
        )

    def _target_namespaces(
        self, namespace: NamespaceLike, namespace_prefix: NamespaceLike | None
    ) -> list[Namespace]:
        if namespace_prefix is not None:
            prefix = normalize_namespace(namespace_prefix, allow_empty=True)
            with self._lock:
                return [ns for ns in self._partitions if ns[: len(prefix)] == prefix]
        return [normalize_namespace(namespace)]

    # ------------------------------------------------------------------ read

    def get(self, id: str) -> MemoryRecord:
        """Return the memory with ``id``; raises :class:`MemoryNotFoundError` if none."""
        self._check_open()
        with self._lock:
            partition, slot = self._locate(id)
            return _record(partition, slot)

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and id in self._namespace_of

    def __len__(self) -> int:
        return len(self._namespace_of)

    def count(self, namespace: NamespaceLike = ()) -> int:
        """Number of memories in ``namespace``."""
        namespace = normalize_namespace(namespace)
        with self._lock:
            partition = self._partitions.get(namespace)
            return 0 if partition is None else len(partition)

    def namespaces(self) -> list[Namespace]:
        """Namespaces that hold at least one memory, sorted."""
        with self._lock:
            return sorted(ns for ns, p in self._partitions.items() if len(p))

    def list(
        self,
        namespace: NamespaceLike = (),
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[MemoryRecord]:
        """Return stored memories of a namespace in the order they were added."""
        self._check_open()
        namespace = normalize_namespace(namespace)
        checked_filter = validate_filter(filter)
        if limit is not None:
            limit = check_k(limit, "limit")
        offset = check_k(offset, "offset")
        with self._lock:
            partition = self._partitions.get(namespace)
            if partition is None:
                return []
            matching = [
                slot for slot, entry in enumerate(partition.entries)
                if entry is not None and matches_filter(entry.metadata, checked_filter)
            ]
            matching.sort(key=lambda s: (partition.entries[s].created_at, partition.entries[s].rowid or 0))  # type: ignore[union-attr]
            end = None if limit is None else offset + limit
            return [_record(partition, slot) for slot in matching[offset:end]]

    def _locate(self, id: Any) -> tuple[Partition, int]:
        memory_id = check_id(id)
        namespace = self._namespace_of.get(memory_id)
        if namespace is None:
            raise MemoryNotFoundError(f"no memory with id {memory_id!r}")
        partition = self._partitions[namespace]
        return partition, partition.slot_of[memory_id]

    # ------------------------------------------------------------------ change

    def update(
        self,
        id: str,
        text: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        cues: Sequence[str] | None = None,
    ) -> MemoryRecord:
        """Change a memory's text (re-embedding it), metadata or extra cues; keeps its id and links.

        ``None`` leaves a field as it is. Embedding runs outside the lock. When
        another thread changes the memory's text or cues meanwhile, the new
        content is embedded again, so neither change is lost. After three such
        retries the embedding runs holding the lock.

        Returns:
            The updated memory.

        Raises:
            MemoryNotFoundError: when no memory has ``id``.
        """
        self._check_open()
        memory_id = check_id(id)
        new_text = None if text is None else check_text(text, "text")
        new_metadata = None if metadata is None else check_metadata(metadata)
        new_cues = None if cues is None else check_cues(cues)
        if new_text is None and new_cues is None:
            if new_metadata is None:
                return self.get(memory_id)
            with self._lock:
                self._check_open()
                partition, slot = self._locate(memory_id)
                entry = partition.entries[slot]
                assert entry is not None
                if self._storage is not None:
                    with self._storage.transaction():
                        self._storage.update_metadata(entry.rowid, new_metadata)  # type: ignore[arg-type]
                entry.metadata = new_metadata
                return _record(partition, slot)

        # Embed outside the lock first. After _OPTIMISTIC_UPDATES tries that
        # another thread overtook, hold the lock while embedding, so that a
        # memory updated in a tight loop elsewhere cannot starve this call.
        for attempt in range(_OPTIMISTIC_UPDATES + 1):
            exclusive = attempt == _OPTIMISTIC_UPDATES
            if exclusive:
                self._lock.acquire()
            try:
                record = self._try_update(memory_id, new_text, new_metadata, new_cues)
            finally:
                if exclusive:
                    self._lock.release()
            if record is not None:
                return record
        raise AssertionError("an update holding the lock cannot see a concurrent change")

    def _try_update(
        self,
        memory_id: str,
        new_text: str | None,
        new_metadata: dict[str, Any] | None,
        new_cues: list[str] | None,
    ) -> MemoryRecord | None:
        """Embed and write one update; ``None`` when the memory changed meanwhile."""
        with self._lock:
            self._check_open()
            partition, slot = self._locate(memory_id)
            current = partition.entries[slot]
            assert current is not None
            snapshot = _content_of(current)
        final_text = new_text if new_text is not None else snapshot[0]
        extra = new_cues if new_cues is not None else list(snapshot[1])  # type: ignore[arg-type]
        infos, cue_texts = self._cues_for(final_text, extra)
        vectors = self._embed_cues([(final_text, infos, cue_texts)])[0]
        code = self._make_codes(vectors[:1])[0]
        with self._lock:
            self._check_open()
            partition, slot = self._locate(memory_id)
            current = partition.entries[slot]
            assert current is not None
            if _content_of(current) != snapshot:
                return None
            entry = Entry(
                id=current.id, rowid=current.rowid, text=final_text,
                metadata=new_metadata if new_metadata is not None else current.metadata,
                timestamp=current.timestamp, created_at=current.created_at, session=current.session,
                content_hash=content_hash(final_text), cues=infos,
            )
            if self._storage is not None:
                stored = _stored(entry, vectors, code)
                with self._storage.transaction():
                    self._storage.replace_memory_content(
                        current.rowid, entry.text, entry.metadata, entry.content_hash,  # type: ignore[arg-type]
                        stored.cues, code,
                    )
            partition.replace_content(slot, entry, vectors, code)
            return _record(partition, slot)

    def delete(self, id: str) -> None:
        """Delete a memory with its cues and links, from RAM and from the file.

        It is never recalled again, directly or through a chain. The file's
        freed pages are handed back to the file system.

        Raises:
            MemoryNotFoundError: when no memory has ``id``.
        """
        self._check_open()
        with self._lock:
            self._check_open()
            partition, slot = self._locate(id)
            entry = partition.entries[slot]
            assert entry is not None
            if self._storage is not None:
                with self._storage.transaction():
                    self._storage.delete_memories([entry.rowid])  # type: ignore[list-item]
            partition.remove(slot)
            del self._namespace_of[entry.id]
            self._reclaim_space()

    def _reclaim_space(self) -> None:
        """Shrink the file after a delete; a failure only costs space, so it is logged."""
        if self._storage is None:
            return
        try:
            self._storage.reclaim_space()
        except StorageError as error:
            logger.warning("%s", error)

    def delete_namespace(self, namespace: NamespaceLike) -> int:
        """Delete every memory of a namespace with their cues and links; returns how many.

        Only the namespace itself: deleting ``("alice",)`` leaves
        ``("alice", "work")`` in place.
        """
        self._check_open()
        namespace = normalize_namespace(namespace)
        with self._lock:
            partition = self._partitions.get(namespace)
            if partition is None:
                return 0
            entries = [e for e in partition.entries if e is not None]
            if self._storage is not None:
                with self._storage.transaction():
                    self._storage.delete_memories([e.rowid for e in entries])  # type: ignore[misc]
            for entry in entries:
                del self._namespace_of[entry.id]
            del self._partitions[namespace]
            self._reclaim_space()
            return len(entries)

    def clear(self) -> None:
        """Delete every memory of every namespace."""
        with self._lock:
            for namespace in list(self._partitions):
                self.delete_namespace(namespace)

    # ------------------------------------------------------------------ async

    async def aadd(self, text: str, **kwargs: Any) -> str:
        """Async :meth:`add`, run in a worker thread."""
        return await asyncio.to_thread(self.add, text, **kwargs)

    async def aadd_many(self, items: Iterable[MemoryItem | str | Mapping[str, Any]], **kwargs: Any) -> list[str]:
        """Async :meth:`add_many`, run in a worker thread."""
        return await asyncio.to_thread(self.add_many, _as_list(items), **kwargs)

    async def arecall(self, query: str, k: int = 5, **kwargs: Any) -> list[RecallResult]:
        """Async :meth:`recall`, run in a worker thread."""
        return await asyncio.to_thread(self.recall, query, k, **kwargs)

    async def aget(self, id: str) -> MemoryRecord:
        """Async :meth:`get`, run in a worker thread."""
        return await asyncio.to_thread(self.get, id)

    async def aupdate(self, id: str, text: str | None = None, **kwargs: Any) -> MemoryRecord:
        """Async :meth:`update`, run in a worker thread."""
        return await asyncio.to_thread(self.update, id, text, **kwargs)

    async def adelete(self, id: str) -> None:
        """Async :meth:`delete`, run in a worker thread."""
        await asyncio.to_thread(self.delete, id)

    async def adelete_namespace(self, namespace: NamespaceLike) -> int:
        """Async :meth:`delete_namespace`, run in a worker thread."""
        return await asyncio.to_thread(self.delete_namespace, namespace)

    async def aassociate(self, a: str, b: str, weight: float = 1.0) -> None:
        """Async :meth:`associate`, run in a worker thread."""
        await asyncio.to_thread(self.associate, a, b, weight)

    async def alist(self, namespace: NamespaceLike = (), **kwargs: Any) -> list[MemoryRecord]:
        """Async :meth:`list`, run in a worker thread."""
        return await asyncio.to_thread(self.list, namespace, **kwargs)

    async def anamespaces(self) -> list[Namespace]:
        """Async :meth:`namespaces`, run in a worker thread."""
        return await asyncio.to_thread(self.namespaces)

    async def aclear(self) -> None:
        """Async :meth:`clear`, run in a worker thread."""
        await asyncio.to_thread(self.clear)

    # ------------------------------------------------------------------ stats

    def nbytes(self) -> int:
        """Approximate bytes of the in-memory indexes (cue vectors, codes, links)."""
        with self._lock:
            return sum(p.nbytes() for p in self._partitions.values())

    def association_nbytes(self) -> int:
        """Approximate bytes of the factored association matrices alone."""
        with self._lock:
            return sum(p.association.nbytes() for p in self._partitions.values())


# ---------------------------------------------------------------------- helpers


def _copy_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of JSON metadata, so callers never hold the stored dictionary."""
    return json.loads(json.dumps(metadata)) if metadata else {}


def _logsumexp(values: np.ndarray) -> float:
    peak = float(values.max())
    return peak + float(np.log(np.exp(values - peak).sum()))


def _without_subjects(
    query: torch.Tensor,
    partitions: Sequence[Partition],
    query_words: list[str],
    projection: float,
    subject_vector: Callable[[str], np.ndarray],
) -> torch.Tensor | None:
    """Return the unit query with the direction of each subject it names removed,
    or ``None`` when nothing changes (see ``MemoryConfig.subject_projection``).

    How common a subject is counts over all the namespaces searched, so that
    they score by one query and their scores compare. ``subject_vector`` must
    return unit vectors.
    """
    named: set[str] = set()
    for partition in partitions:
        named |= partition.entities.subjects_named(query_words)
    if not named:
        return None
    total = sum(len(partition.entities) for partition in partitions)
    projected = None
    for subject in sorted(named):
        about = sum(partition.entities.about_count(subject) for partition in partitions)
        strength = projection * EntityIndex.commonness(about, total)
        if strength <= 0:
            continue
        if projected is None:
            projected = query.detach().to("cpu", torch.float32).numpy().copy()
        direction = subject_vector(subject)
        projected -= np.float32(strength * float(projected @ direction)) * direction
    if projected is None:
        return None
    norm = float(np.linalg.norm(projected))
    if not norm > 1e-6:
        return None
    return torch.from_numpy(projected / np.float32(norm)).to(query.device, query.dtype)


def _rare_word_limit(memory_count: int) -> int:
    """How many memories may share a name for it to still link them.

    Measured on the quality benchmark: names shared by very few memories link
    them well, and widening the limit adds more noise than recall. The cap keeps
    a hop cheap in large namespaces.
    """
    return max(2, min(_RARE_WORD_CAP, memory_count // 800))


# Maximum number of memories that may share a name for it to link them, in any namespace.
_RARE_WORD_CAP = 8

# Maximum number of subject names whose embeddings a memory keeps (1.5 KB each at 384 dimensions).
_SUBJECT_VECTORS_KEPT = 4096


def _content_of(entry: Entry) -> tuple[str, tuple[str | None, ...]]:
    """Return what update() embeds: the text and the caller's extra cues."""
    return entry.text, tuple(c.text for c in entry.cues if c.kind == "user")


def _as_list(items: Any) -> list[Any]:
    if isinstance(items, (str, bytes, Mapping, MemoryItem)):
        raise InvalidTypeError(
            f"items must be an iterable of memories, got a single {type(items).__name__}; "
            "use add() for one memory"
        )
    try:
        return list(items)
    except TypeError:
        raise InvalidTypeError(f"items must be an iterable, got {type(items).__name__}") from None


def _stored(entry: Entry, vectors: np.ndarray, code: np.ndarray, namespace: Namespace = ()) -> StoredMemory:
    return StoredMemory(
        rowid=entry.rowid or 0, id=entry.id, namespace=namespace, text=entry.text, metadata=entry.metadata,
        timestamp=entry.timestamp, created_at=entry.created_at, session=entry.session,
        content_hash=entry.content_hash,
        cues=[StoredCue(c.kind, c.start, c.end, c.text, v) for c, v in zip(entry.cues, vectors)],
        code=code,
    )


def _record(partition: Partition, slot: int) -> MemoryRecord:
    entry = partition.entries[slot]
    assert entry is not None
    return MemoryRecord(
        id=entry.id,
        text=entry.text,
        namespace=partition.namespace,
        metadata=_copy_metadata(entry.metadata),
        timestamp=entry.timestamp,
        created_at=entry.created_at,
        session=entry.session,
        cues=tuple(c.resolve(entry.text) for c in entry.cues),
    )


def _reads_english_only(embedder: Embedder) -> bool:
    flag = getattr(embedder, "english_only", None)
    if isinstance(flag, bool):
        return flag
    return embedder.name in ENGLISH_ONLY_MODELS


def _is_latin(character: str) -> bool:
    # Basic Latin to Latin Extended-B, and Latin Extended Additional.
    code = ord(character)
    return code < 0x250 or 0x1E00 <= code <= 0x1EFF


def _is_counted(character: str) -> bool:
    # Letters and other symbols (emoji); digits, punctuation and spaces are neutral.
    return character.isalpha() or unicodedata.category(character) == "So"


@functools.lru_cache(maxsize=8192)
def unfamiliar_share(text: str) -> float:
    """Return the share of a text's letters and symbols outside the Latin script.

    Chinese, Cyrillic, Arabic or emoji count; digits, punctuation and spaces do
    not. A text of none of the counted characters gives 0.
    """
    counted = 0
    foreign = 0
    for character in text:
        if _is_counted(character):
            counted += 1
            if not _is_latin(character):
                foreign += 1
    return foreign / counted if counted else 0.0


def character_features(text: str) -> frozenset[str]:
    """Return the character bigrams of a text's runs of letters, digits and symbols.

    The text is NFKC-normalised and case-folded first. A run of one character
    gives that character, and every symbol (an emoji) is a feature on its own
    too, so "🍕" matches "great 🍕🎉".
    """
    normalized = unicodedata.normalize("NFKC", text).casefold()
    features: set[str] = set()
    run: list[str] = []
    for character in normalized + " ":
        if unicodedata.category(character) == "So":
            features.add(character)
            run.append(character)
            continue
        if character.isalnum():
            run.append(character)
            continue
        if len(run) == 1:
            features.add(run[0])
        features.update(a + b for a, b in zip(run, run[1:]))
        run = []
    return frozenset(features)


def character_overlap(query_features: frozenset[str], text: str) -> float:
    """Return the share of ``query_features`` found in ``text``; 0 for a query without any."""
    if not query_features:
        return 0.0
    return len(query_features & _cached_features(text)) / len(query_features)


@functools.lru_cache(maxsize=8192)
def _cached_features(text: str) -> frozenset[str]:
    return character_features(text)


def content_hash(text: str) -> str:
    """Hash of a text used to find duplicates: NFC with white space folded."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def check_text(value: Any, name: str = "text") -> str:
    """Return ``value`` if it is a non-blank string that can be stored; raise otherwise."""
    if not isinstance(value, str):
        raise InvalidTypeError(f"{name} must be a str, got {type(value).__name__}: {_preview(value)}")
    if not value.strip():
        raise InvalidInputError(f"{name} must not be empty or blank, got {value!r}")
    if "\x00" in value:
        raise InvalidInputError(f"{name} must not contain NUL characters")
    _check_encodable(value, name)
    return value


def check_query(value: Any) -> str:
    """Return a query string; blank is allowed (recall returns ``[]``), other types raise."""
    if not isinstance(value, str):
        raise InvalidTypeError(f"query must be a str, got {type(value).__name__}: {_preview(value)}")
    _check_encodable(value, "query")
    return value


def check_id(value: Any) -> str:
    """Return ``value`` if it is a valid memory id: a non-blank string."""
    if not isinstance(value, str):
        raise InvalidTypeError(f"id must be a str, got {type(value).__name__}: {_preview(value)}")
    if not value.strip():
        raise InvalidInputError(f"id must not be empty or blank, got {value!r}")
    _check_encodable(value, "id")
    return value


def check_label(value: Any, name: str) -> str:
    """Return ``value`` if it is a string that can be stored (a session name)."""
    if not isinstance(value, str):
        raise InvalidTypeError(f"{name} must be a str, got {type(value).__name__}: {_preview(value)}")
    _check_encodable(value, name)
    return value


def check_cues(value: Any) -> list[str]:
    """Return the extra cues as a list if ``value`` is a sequence of non-blank strings."""
    if isinstance(value, str):
        raise InvalidTypeError(f"cues must be a list of str, got a single str {_preview(value)}; wrap it in a list")
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise InvalidTypeError(f"cues must be a list of str, got {type(value).__name__}: {_preview(value)}")
    return [check_text(cue, f"cues[{i}]") for i, cue in enumerate(value)]


def check_k(value: Any, name: str = "k") -> int:
    """Return ``value`` if it is an int >= 0."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be an int, got {type(value).__name__}: {_preview(value)}")
    if value < 0:
        raise InvalidInputError(f"{name} must be >= 0, got {value}")
    return int(value)


def check_hops(value: Any) -> int:
    """Return ``value`` if it is an int >= 1."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise InvalidTypeError(f"hops must be an int, got {type(value).__name__}: {_preview(value)}")
    if value < 1:
        raise InvalidInputError(f"hops must be >= 1 (1 is single-hop recall), got {value}")
    return int(value)


def check_metadata(value: Any) -> dict[str, Any]:
    """Return a JSON round-tripped copy of ``value`` if it is a JSON-serialisable mapping.

    ``None`` gives ``{}``. Values must be JSON types: str, int, float, bool,
    ``None``, lists and dicts of them; floats must be finite.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidTypeError(f"metadata must be a mapping, got {type(value).__name__}: {_preview(value)}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidTypeError(f"metadata keys must be strings, got {type(key).__name__}: {key!r}")
        _check_encodable(key, "metadata key")
        try:
            encoded = json.dumps(item, allow_nan=False, ensure_ascii=False)
        except TypeError as error:
            raise InvalidTypeError(
                f"metadata[{key!r}] must contain only JSON types (str, int, float, bool, None, "
                f"lists and dicts of them): {error}"
            ) from None
        except ValueError as error:
            raise InvalidInputError(
                f"metadata[{key!r}] cannot be stored as JSON (NaN, infinity or a circular reference): {error}"
            ) from None
        _check_encodable(encoded, f"metadata[{key!r}]")
    return json.loads(json.dumps(dict(value), allow_nan=False))


def parse_timestamp(value: Any) -> float | None:
    """Return POSIX seconds from seconds, a ``datetime`` or an ISO 8601 string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidTypeError(f"timestamp must be a number, datetime or ISO string, got {value!r}")
    if isinstance(value, numbers.Real):
        if not math.isfinite(value):
            raise InvalidInputError(f"timestamp must be finite, got {value!r}")
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(
                f"timestamp string must be ISO 8601 (for example 2023-05-08T13:56), got {value!r}"
            ) from None
        return parse_timestamp(parsed)
    raise InvalidTypeError(
        f"timestamp must be a number, datetime or ISO string, got {type(value).__name__}"
    )


def normalize_namespace(value: Any, allow_empty: bool = True) -> Namespace:
    """Return a namespace tuple from a string or a sequence of strings.

    Raises:
        NamespaceTypeError: for a namespace or label that is not a str.
        NamespaceError: for an empty label, or an empty namespace when
            ``allow_empty`` is false.
    """
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        raise NamespaceTypeError(
            f"namespace must be a str or a tuple of str, got {type(value).__name__}: {_preview(value)}"
        )
    for label in value:
        if not isinstance(label, str):
            raise NamespaceTypeError(
                f"namespace labels must be str, got {type(label).__name__} {_preview(label)} in {_preview(tuple(value))}"
            )
        if not label:
            raise NamespaceError(f"namespace labels must not be empty, got {tuple(value)!r}")
        _check_encodable(label, "namespace label")
    if not value and not allow_empty:
        raise NamespaceError("namespace must not be empty")
    return tuple(value)


def _check_encodable(value: str, name: str) -> None:
    """Raise unless ``value`` can be written as UTF-8 (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidInputError(
            f"{name} contains an unpaired surrogate {value[error.start]!r} at index {error.start}; "
            "only valid Unicode text can be stored"
        ) from None


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
