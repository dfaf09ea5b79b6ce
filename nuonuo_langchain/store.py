"""A LangGraph store whose search recalls items by association."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    get_text_at_path,
    tokenize_path,
)

# NOTE: these two are private in langgraph.store.base (checked with langgraph
# 1.2). They are imported so that batch() rejects a namespace with exactly the
# error that BaseStore.put() and the other public methods raise.
from langgraph.store.base import _validate_namespace, _validate_namespace_labels

from nuonuo_core import (
    AssociativeMemory,
    ConfigError,
    Embedder,
    InvalidInputError,
    InvalidTypeError,
    MemoryConfig,
    MemoryItem,
    MemoryNotFoundError,
    MemoryRecord,
    RecallResult,
)
from nuonuo_core.filters import matches_filter, validate_filter
from nuonuo_langchain._common import check_hops, normalize_namespace, open_memory

logger = logging.getLogger(__name__)

DEFAULT_ROOT_NAMESPACE: tuple[str, ...] = ("langgraph_store",)
"""Core namespace under which store namespaces are kept."""

DEFAULT_INDEX_FIELDS: tuple[str, ...] = ("$",)
"""Fields embedded when the store is built without ``index``: the whole value."""

# Bookkeeping kept in each memory's metadata beside the item's value. Value
# keys and filter keys that start with the prefix are rejected.
_RESERVED_PREFIX = "__nuonuo_"
_KEY_FIELD = "__nuonuo_key__"
_INDEXED_FIELD = "__nuonuo_indexed__"
_TIMES_FIELD = "__nuonuo_times__"

_ID_PREFIX = "lgstore-"

_IGNORED_INDEX_KEYS = ("dims", "embed")
_KNOWN_INDEX_KEYS = ("fields", *_IGNORED_INDEX_KEYS)


class NuoNuoStore(BaseStore):
    """LangGraph store backed by an associative memory.

    Drop-in for ``InMemoryStore`` and the database stores, for example in
    ``create_agent(model, tools, store=NuoNuoStore())``. Items are JSON dicts
    under a namespace and a key. ``search(namespace_prefix, query=...)`` recalls
    the best matching items of every namespace under the prefix, ranked by the
    recall score (``SearchItem.score``, a share of the attention that links or a
    named speaker can lift above 1); with ``hops`` > 1 it also
    returns items linked to the direct hits, such as items that name the same
    rare word. Without a query, ``search`` lists items in namespace order, then
    in the order they were first put.

    Each item is one memory in the core namespace ``root_namespace + namespace``,
    with a stable id derived from the namespace and key, so putting an existing
    key updates the item in place. The value is kept in the memory's metadata
    and the embedded text is the memory's text.

    Which text is embedded follows LangGraph's index configuration:
    ``index={"fields": [...]}`` at construction sets the default paths, and
    ``put(..., index=[...])`` or ``index=False`` overrides them per item. Paths
    use LangGraph's syntax (``"text"``, ``"a.b"``, ``"items[*].name"``), and
    ``"$"`` embeds the whole value as JSON. ``fields: []`` embeds nothing unless
    a put opts in. Unlike ``InMemoryStore``, a store built without ``index``
    embeds the whole value, so search by meaning works out of the box. Items
    with no embedded text are stored, returned by ``get`` and by ``search``
    without a query, but never by a search with a query. ``index["embed"]`` and
    ``index["dims"]`` are ignored: the memory's own embedder is used.

    TTL is not supported (``supports_ttl`` is False), as in ``InMemoryStore``.
    Without ``path`` or ``memory`` everything is kept in RAM and lost when the
    process exits.

    Args:
        memory: An open associative memory to keep the items in. It must have
            ``config.deduplicate`` off, because two keys may hold the same text.
        path: SQLite file of a memory built here; excludes ``memory``.
        config: Configuration of a memory built here; ``deduplicate`` is turned
            off. Excludes ``memory``.
        embedder: Embedder of a memory built here; the packaged all-MiniLM-L6-v2
            when ``None``. Excludes ``memory``.
        index: LangGraph index configuration; only ``fields`` is used.
        root_namespace: Core namespace that contains the store's namespaces, so
            the store can share a memory with other adapters.
        hops: Hops of search with a query; ``None`` uses ``config.hops``.

    Example:
        >>> from nuonuo_core import HashingEmbedder
        >>> store = NuoNuoStore(embedder=HashingEmbedder(), index={"fields": ["text"]})
        >>> store.put(("users", "alice"), "pet", {"text": "My dog is called Max."})
        >>> [item.key for item in store.search(("users",), query="dog")]
        ['pet']
    """

    supports_ttl = False

    def __init__(
        self,
        *,
        memory: AssociativeMemory | None = None,
        path: str | os.PathLike[str] | None = None,
        config: MemoryConfig | None = None,
        embedder: Embedder | None = None,
        index: IndexConfig | None = None,
        root_namespace: str | Sequence[str] = DEFAULT_ROOT_NAMESPACE,
        hops: int | None = None,
    ) -> None:
        self.root_namespace: tuple[str, ...] = normalize_namespace(root_namespace)
        """Core namespace under which store namespaces are kept."""

        self.hops: int | None = None if hops is None else check_hops(hops)
        """Hops of search with a query; ``None`` uses the memory's ``config.hops``."""

        self.index_config: IndexConfig = _normalize_index(index)
        """The index configuration, with ``fields`` filled in."""

        self.memory: AssociativeMemory = _open_store_memory(memory, path, config, embedder)
        """The associative memory that stores the items."""

        # Serialises writes, so that two batches cannot both add the same new key.
        self._write_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"NuoNuoStore(root_namespace={self.root_namespace!r}, "
            f"fields={self.index_config['fields']!r}, items={self._item_count()})"
        )

    # ------------------------------------------------------------------ batch

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run operations and return one result per operation, in order.

        Every operation is checked first, so a bad one raises before anything is
        written. As in ``InMemoryStore``, reads see the state before the batch's
        writes, and of several puts to one key the last wins.
        """
        ops = list(ops)
        for op in ops:
            self._validate_op(op)

        results: list[Result] = [None] * len(ops)
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for position, op in enumerate(ops):
            if isinstance(op, GetOp):
                results[position] = self._get(op)
            elif isinstance(op, SearchOp):
                results[position] = self._search(op)
            elif isinstance(op, ListNamespacesOp):
                results[position] = self._list_namespaces(op)
            else:
                target = (tuple(op.namespace), op.key)
                puts.pop(target, None)
                puts[target] = op
        if puts:
            self._apply_puts(list(puts.values()))
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async :meth:`batch`, run in a worker thread so it does not block the event loop."""
        return await asyncio.to_thread(self.batch, list(ops))

    # ------------------------------------------------------------------ checks

    def _validate_op(self, op: Any) -> None:
        """Raise unless ``op`` is an operation that :meth:`batch` can run."""
        if isinstance(op, GetOp):
            _check_namespace_type(op.namespace)
            _validate_namespace_labels(tuple(op.namespace))
            _check_key(op.key)
        elif isinstance(op, SearchOp):
            _check_namespace_type(op.namespace_prefix)
            _validate_namespace_labels(tuple(op.namespace_prefix))
            _check_count(op.limit, "limit")
            _check_count(op.offset, "offset")
            if op.query is not None and not isinstance(op.query, str):
                raise InvalidTypeError(f"query must be a str or None, got {type(op.query).__name__}")
            _split_filter(op.filter)
        elif isinstance(op, ListNamespacesOp):
            for condition in op.match_conditions or ():
                _check_match_condition(condition)
            if op.max_depth is not None:
                _check_count(op.max_depth, "max_depth")
            _check_count(op.limit, "limit")
            _check_count(op.offset, "offset")
        elif isinstance(op, PutOp):
            _check_namespace_type(op.namespace)
            if op.value is None:
                _validate_namespace_labels(tuple(op.namespace))
            else:
                _validate_namespace(tuple(op.namespace))
                _check_value(op.value)
                self._embedded_texts(op)
            _check_key(op.key)
            if op.ttl is not None:
                raise NotImplementedError(
                    f"TTL is not supported by {type(self).__name__}; put with ttl=None"
                )
        else:
            raise InvalidTypeError(
                f"operation must be a GetOp, SearchOp, PutOp or ListNamespacesOp, "
                f"got {type(op).__name__}"
            )

    # ------------------------------------------------------------------ reads

    def _get(self, op: GetOp) -> Item | None:
        namespace = tuple(op.namespace)
        try:
            record = self.memory.get(self._item_id(namespace, op.key))
        except MemoryNotFoundError:
            return None
        if record.namespace != self._core_namespace(namespace):
            return None
        return self._item(record.namespace, record.metadata)

    def _search(self, op: SearchOp) -> list[SearchItem]:
        end = op.offset + op.limit
        if end == 0:
            return []
        prefix = self.root_namespace + tuple(op.namespace_prefix)
        pushed, local = _split_filter(op.filter)

        # Without a query: list every item under the prefix.
        if op.query is None or not op.query.strip():
            return self._listed(prefix, pushed, local)[op.offset:end]

        # With a query: recall among embedded items only. Conditions that the
        # core filter cannot express are turned into a list of allowed keys.
        core_filter = dict(pushed)
        core_filter[_INDEXED_FIELD] = True
        allowed: set[tuple[tuple[str, ...], str]] | None = None
        if local:
            listed = self._listed(prefix, pushed, local)
            if not listed:
                return []
            allowed = {(item.namespace, item.key) for item in listed}
            core_filter[_KEY_FIELD] = {"$in": sorted({item.key for item in listed})}
        results = self.memory.recall(
            op.query, end, hops=self.hops, namespace_prefix=prefix, filter=core_filter
        )
        items = [self._search_item(result) for result in results]
        if allowed is not None:
            items = [item for item in items if (item.namespace, item.key) in allowed]
        return items[op.offset:]

    def _listed(
        self, prefix: tuple[str, ...], pushed: dict[str, Any], local: dict[str, Any]
    ) -> list[SearchItem]:
        items = []
        for namespace in self.memory.namespaces():
            if namespace[: len(prefix)] != prefix or len(namespace) <= len(self.root_namespace):
                continue
            for record in self.memory.list(namespace, filter=pushed or None):
                if _KEY_FIELD not in record.metadata:
                    continue
                item = self._item(record.namespace, record.metadata)
                if _matches_local(item.value, local):
                    items.append(_as_search_item(item, None))
        return items

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        depth = len(self.root_namespace)
        namespaces = [
            namespace[depth:] for namespace in self.memory.namespaces()
            if namespace[:depth] == self.root_namespace and len(namespace) > depth
        ]
        for condition in op.match_conditions or ():
            namespaces = [ns for ns in namespaces if _matches_condition(ns, condition)]
        if op.max_depth is not None:
            namespaces = list({ns[: op.max_depth] for ns in namespaces})
        namespaces.sort()
        return namespaces[op.offset: op.offset + op.limit]

    def _item(self, core_namespace: tuple[str, ...], metadata: Mapping[str, Any]) -> Item:
        created_at, updated_at = metadata[_TIMES_FIELD]
        return Item(
            value={k: v for k, v in metadata.items() if not k.startswith(_RESERVED_PREFIX)},
            key=metadata[_KEY_FIELD],
            namespace=core_namespace[len(self.root_namespace):],
            created_at=_datetime(created_at),
            updated_at=_datetime(updated_at),
        )

    def _search_item(self, result: RecallResult) -> SearchItem:
        return _as_search_item(self._item(result.namespace, result.metadata), result.score)

    def _item_count(self) -> int:
        depth = len(self.root_namespace)
        return sum(
            self.memory.count(namespace) for namespace in self.memory.namespaces()
            if namespace[:depth] == self.root_namespace
        )

    # ------------------------------------------------------------------ writes

    def _apply_puts(self, puts: list[PutOp]) -> None:
        """Delete, update and add the items of ``puts``, which are already checked."""
        memory = self.memory
        now = time.time()
        with self._write_lock:
            new_items: dict[tuple[str, ...], list[MemoryItem]] = {}
            for op in puts:
                namespace = tuple(op.namespace)
                memory_id = self._item_id(namespace, op.key)
                existing = _get_or_none(memory, memory_id)

                # A None value deletes the item.
                if op.value is None:
                    if existing is not None:
                        memory.delete(memory_id)
                    continue

                texts = self._embedded_texts(op)
                text = "\n".join(texts) if texts else _placeholder_text(op.key)
                cues = texts if len(texts) > 1 else []
                created_at = existing.metadata[_TIMES_FIELD][0] if existing is not None else now
                metadata = dict(op.value)
                metadata[_KEY_FIELD] = op.key
                metadata[_INDEXED_FIELD] = bool(texts)
                metadata[_TIMES_FIELD] = [created_at, now]

                if existing is not None:
                    memory.update(memory_id, text, metadata=metadata, cues=cues)
                else:
                    new_items.setdefault(self._core_namespace(namespace), []).append(
                        MemoryItem(text=text, id=memory_id, metadata=metadata, cues=tuple(cues))
                    )
            for core_namespace, items in new_items.items():
                memory.add_many(items, namespace=core_namespace)

    def _embedded_texts(self, op: PutOp) -> list[str]:
        """Return the texts of ``op.value`` to embed, by ``op.index`` or the default fields."""
        if op.index is False:
            return []
        if op.index is None:
            paths = list(self.index_config["fields"])
        else:
            paths = _check_index_paths(op.index, "index")
        texts: list[str] = []
        for path in paths:
            field = path if path == "$" else tokenize_path(path)
            for text in get_text_at_path(op.value, field):
                # NUL cannot be stored in a memory's text and carries no meaning.
                text = text.replace("\x00", "")
                if text.strip() and text not in texts:
                    texts.append(text)
        return texts

    # ------------------------------------------------------------------ ids

    def _core_namespace(self, namespace: tuple[str, ...]) -> tuple[str, ...]:
        return self.root_namespace + namespace

    def _item_id(self, namespace: tuple[str, ...], key: str) -> str:
        """Return the memory id of an item: a hash of its core namespace and key."""
        address = json.dumps([list(self._core_namespace(namespace)), key], ensure_ascii=False)
        return _ID_PREFIX + hashlib.sha256(address.encode("utf-8")).hexdigest()[:40]


# ---------------------------------------------------------------------- helpers


def _open_store_memory(
    memory: AssociativeMemory | None,
    path: str | os.PathLike[str] | None,
    config: MemoryConfig | None,
    embedder: Embedder | None,
) -> AssociativeMemory:
    """Open the store's memory, with deduplication off."""
    if memory is not None:
        memory = open_memory(memory, path, config, embedder)
        if memory.config.deduplicate:
            raise ConfigError(
                "NuoNuoStore needs a memory with deduplication off, because two keys may hold "
                "the same text; build it with MemoryConfig(deduplicate=False)"
            )
        return memory
    if config is not None:
        if config.deduplicate:
            logger.warning("NuoNuoStore turns config.deduplicate off: two keys may hold the same text")
        return AssociativeMemory(path=path, config=config.replace(deduplicate=False), embedder=embedder)

    # Without a configuration an existing file keeps its own; reopen it once with
    # deduplication off, which is then saved in the file.
    opened = AssociativeMemory(path=path, embedder=embedder)
    if not opened.config.deduplicate:
        return opened
    opened.close()
    return AssociativeMemory(path=path, config=opened.config.replace(deduplicate=False), embedder=embedder)


def _normalize_index(index: Any) -> IndexConfig:
    if index is None:
        return {"fields": list(DEFAULT_INDEX_FIELDS)}
    if not isinstance(index, Mapping):
        raise InvalidTypeError(f"index must be a dict such as {{'fields': ['text']}}, got {type(index).__name__}")
    unknown = sorted(set(index) - set(_KNOWN_INDEX_KEYS))
    if unknown:
        raise InvalidInputError(
            f"unknown index settings {unknown}; valid: {', '.join(_KNOWN_INDEX_KEYS)}"
        )
    ignored = [key for key in _IGNORED_INDEX_KEYS if key in index]
    if ignored:
        logger.warning(
            "NuoNuoStore ignores index settings %s: items are embedded by the memory's own embedder",
            ", ".join(ignored),
        )
    fields = index.get("fields")
    normalized: IndexConfig = dict(index)  # type: ignore[assignment]
    normalized["fields"] = list(DEFAULT_INDEX_FIELDS) if fields is None else _check_index_paths(fields, "index['fields']")
    return normalized


def _check_index_paths(paths: Any, name: str) -> list[str]:
    if isinstance(paths, str) or not isinstance(paths, (list, tuple)):
        raise InvalidTypeError(
            f"{name} must be a list of field paths such as ['text', 'items[*].name'], "
            f"False or None, got {paths!r}"
        )
    for path in paths:
        if not isinstance(path, str) or not path.strip():
            raise InvalidInputError(f"{name} must hold non-empty field paths, got {path!r}")
    return list(paths)


def _check_namespace_type(namespace: Any) -> None:
    if not isinstance(namespace, (tuple, list)):
        raise InvalidNamespaceError(
            f"Namespace must be a tuple of strings, got {type(namespace).__name__}: {namespace!r}"
        )


def _check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise InvalidTypeError(f"key must be a str, got {type(key).__name__}: {key!r}")


def _check_count(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 0:
        raise InvalidInputError(f"{name} must be >= 0, got {value}")


def _check_match_condition(condition: Any) -> None:
    if not isinstance(condition, MatchCondition):
        raise InvalidTypeError(f"match condition must be a MatchCondition, got {type(condition).__name__}")
    if condition.match_type not in ("prefix", "suffix"):
        raise InvalidInputError(
            f"match_type must be 'prefix' or 'suffix', got {condition.match_type!r}"
        )
    _check_namespace_type(condition.path)
    _validate_namespace_labels(tuple(condition.path))


def _check_value(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise InvalidTypeError(f"value must be a dict, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidTypeError(f"value keys must be strings, got {key!r}")
        if key.startswith(_RESERVED_PREFIX):
            raise InvalidInputError(
                f"value key {key!r} is reserved: keys starting with {_RESERVED_PREFIX!r} "
                "hold the store's bookkeeping"
            )
    try:
        json.dumps(dict(value), allow_nan=False)
    except TypeError as error:
        raise InvalidTypeError(f"value must contain only JSON types: {error}") from error
    except ValueError as error:
        raise InvalidInputError(f"value must be JSON-serialisable: {error}") from error


def _split_filter(filter: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a LangGraph filter into conditions the core filter evaluates alike and the rest.

    The core compares a key to a value, or applies ``$`` operators to it. LangGraph
    also matches a nested dict against part of a nested value and takes a missing
    key as ``None``; those conditions are evaluated here instead.
    """
    if filter is None:
        return {}, {}
    if not isinstance(filter, Mapping):
        raise InvalidTypeError(f"filter must be a dict, got {type(filter).__name__}")
    pushed: dict[str, Any] = {}
    local: dict[str, Any] = {}
    for key, condition in filter.items():
        if not isinstance(key, str):
            raise InvalidTypeError(f"filter keys must be strings, got {key!r}")
        if key.startswith(_RESERVED_PREFIX):
            raise InvalidInputError(f"filter key {key!r} is reserved for the store's bookkeeping")
        if isinstance(condition, Mapping) and not _is_operator_dict(condition):
            local[key] = condition
        elif condition is None:
            local[key] = condition
        else:
            pushed[key] = condition
    validate_filter(pushed)
    return pushed, local


def _is_operator_dict(condition: Mapping[str, Any]) -> bool:
    return bool(condition) and all(isinstance(op, str) and op.startswith("$") for op in condition)


def _matches_local(value: Mapping[str, Any], conditions: Mapping[str, Any]) -> bool:
    return all(_value_matches(value.get(key), condition) for key, condition in conditions.items())


def _value_matches(actual: Any, condition: Any) -> bool:
    """Match one value against a LangGraph filter condition."""
    if isinstance(condition, Mapping):
        if _is_operator_dict(condition):
            present = {} if actual is None else {"value": actual}
            return matches_filter(present, validate_filter({"value": condition}))
        if not isinstance(actual, Mapping):
            return False
        return all(_value_matches(actual.get(k), c) for k, c in condition.items())
    if isinstance(condition, (list, tuple)):
        return (
            isinstance(actual, (list, tuple))
            and len(actual) == len(condition)
            and all(_value_matches(a, c) for a, c in zip(actual, condition))
        )
    return actual == condition


def _matches_condition(namespace: tuple[str, ...], condition: MatchCondition) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    labels = namespace[: len(path)] if condition.match_type == "prefix" else namespace[len(namespace) - len(path):]
    return all(wanted == "*" or wanted == label for wanted, label in zip(path, labels))


def _placeholder_text(key: str) -> str:
    # A memory needs a non-blank text, so items with nothing to embed get their
    # key, JSON-quoted so that it is never blank and any NUL is escaped. The
    # indexed flag keeps them out of recall.
    return json.dumps(key, ensure_ascii=False)


def _get_or_none(memory: AssociativeMemory, memory_id: str) -> MemoryRecord | None:
    try:
        return memory.get(memory_id)
    except MemoryNotFoundError:
        return None


def _datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def _as_search_item(item: Item, score: float | None) -> SearchItem:
    return SearchItem(
        namespace=item.namespace, key=item.key, value=item.value,
        created_at=item.created_at, updated_at=item.updated_at, score=score,
    )
