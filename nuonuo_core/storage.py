"""Persistence of memories, cues, codes, associations and configuration in one SQLite file.

The file is opened in write-ahead-log mode with ``synchronous=FULL``: a write
that has returned is in the log on disk and survives a crash of the process or
the machine. Every public write is one transaction.

One :class:`Storage` at a time may have a file open. A second opener, in this
process or another, gets :class:`StorageError`, because each open memory keeps
its own in-memory indexes and two of them would drift apart (duplicates, deleted
memories still recalled). The lock between processes is an advisory
``flock``, so it holds on local file systems of POSIX systems only.

Format versions:

1. memories, cues with their embeddings, associations, meta.
2. adds ``memories.code``, the sparse code of each memory, so that reopening
   does not recompute every code. Version 1 files are upgraded when opened.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nuonuo_core.errors import FormatVersionError, StorageError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks between processes
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

# "NuNu" in ASCII, written to the SQLite header so that other files are recognised.
APPLICATION_ID = 0x4E754E75
FORMAT_VERSION = 2
_SQLITE_MAGIC = b"SQLite format 3\x00"
# Byte offsets of big-endian 32-bit fields in the 100-byte SQLite file header
# (https://www.sqlite.org/fileformat2.html#the_database_header).
_HEADER_SIZE = 100
_USER_VERSION_OFFSET = 60
_APPLICATION_ID_OFFSET = 68
# The write-ahead log is truncated back to this size after a checkpoint, so one
# large transaction does not leave a large log file behind.
_JOURNAL_SIZE_LIMIT = 64 * 2**20
# Rows fetched at a time while loading cue embeddings.
_LOAD_CHUNK = 8192
# Busy timeout in seconds, for a reader outside NuoNuo (the sqlite3 shell).
_BUSY_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE memories (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    namespace TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    timestamp REAL,
    created_at REAL NOT NULL,
    session TEXT,
    content_hash TEXT NOT NULL,
    code BLOB
);
CREATE INDEX memories_namespace_hash ON memories (namespace, content_hash);
CREATE TABLE cues (
    rowid INTEGER PRIMARY KEY,
    memory INTEGER NOT NULL REFERENCES memories (rowid) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    start INTEGER,
    end INTEGER,
    text TEXT,
    embedding BLOB NOT NULL
);
CREATE INDEX cues_memory ON cues (memory);
CREATE TABLE associations (
    source INTEGER NOT NULL REFERENCES memories (rowid) ON DELETE CASCADE,
    target INTEGER NOT NULL REFERENCES memories (rowid) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    weight REAL NOT NULL,
    PRIMARY KEY (source, target, kind)
) WITHOUT ROWID;
CREATE INDEX associations_target ON associations (target);
"""

# Files opened by a live Storage of this process, by real path.
_OPEN_FILES: weakref.WeakValueDictionary[str, Storage] = weakref.WeakValueDictionary()
# Reentrant, because Storage.__del__ may run while this thread holds it.
_OPEN_FILES_LOCK = threading.RLock()


@dataclass
class StoredCue:
    """A cue row: its kind, its text (or span of the memory text), its embedding."""

    kind: str
    start: int | None
    end: int | None
    text: str | None
    embedding: np.ndarray


@dataclass
class StoredMemory:
    """A memory row with its cues and, from format version 2, its sparse code."""

    rowid: int
    id: str
    namespace: tuple[str, ...]
    text: str
    metadata: dict[str, Any]
    timestamp: float | None
    created_at: float
    session: str | None
    content_hash: str
    cues: list[StoredCue]
    code: np.ndarray | None = None


@dataclass
class LoadedMemories:
    """Every memory of a file as columns, in insertion order: what reopening reads.

    Memory ``i`` owns the cue rows ``cue_offsets[i]`` to ``cue_offsets[i + 1]``,
    its text cue first.
    """

    rowids: list[int]
    ids: list[str]
    namespaces: list[tuple[str, ...]]
    texts: list[str]
    metadata: list[dict[str, Any]]
    timestamps: list[float | None]
    created_at: list[float]
    sessions: list[str | None]
    content_hashes: list[str]
    codes: list[bytes | None]
    """Raw ``code`` column: ``k`` little-endian int32 unit indices, or ``None``."""
    cue_offsets: np.ndarray
    """Shape ``(len(ids) + 1,)``, int64."""
    cue_kinds: list[str]
    cue_starts: list[int | None]
    cue_ends: list[int | None]
    cue_texts: list[str | None]
    embeddings: np.ndarray
    """Shape ``(cues, dim)``, float32, as stored (unit rows unless damaged)."""

    def __len__(self) -> int:
        return len(self.ids)


def encode_namespace(namespace: tuple[str, ...]) -> str:
    """Serialise a namespace for the ``namespace`` column."""
    return json.dumps(list(namespace), ensure_ascii=False)


def decode_namespace(value: str) -> tuple[str, ...]:
    """Inverse of :func:`encode_namespace`."""
    return tuple(json.loads(value))


def encode_code(code: np.ndarray) -> bytes:
    """Serialise a sparse code (``k`` unit indices) for the ``code`` column."""
    return np.ascontiguousarray(code, dtype="<i4").tobytes()


class Storage:
    """One SQLite memory file.

    Opening checks, before anything is written, that the file is a SQLite
    database made by NuoNuo in a format version this code reads, or is new.
    Another program's database, a damaged file or a newer format raise
    :class:`StorageError` and leave the file untouched: the header is read with
    plain file I/O first, and a file that fails the later checks is closed
    without a write, with any ``-wal`` and ``-shm`` files that opening created
    removed again.

    Not thread-safe; the memory that owns it serialises access.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not os.fspath(path).strip():
            raise StorageError(f"memory file path must not be empty, got {os.fspath(path)!r}; pass a file path, or None to keep memories in RAM")
        self.path = Path(path).expanduser()
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._key = os.path.realpath(self.path)

        # Reject a file that a live memory of this process has open, before any
        # file descriptor is opened: closing a second descriptor of the file
        # would drop the POSIX locks that SQLite holds through the first one.
        with _OPEN_FILES_LOCK:
            if _OPEN_FILES.get(self._key) is not None:
                raise StorageError(
                    f"memory file {str(self.path)!r} is already open in this process; "
                    "close() the other AssociativeMemory first, or share that one"
                )
            _OPEN_FILES[self._key] = self

        try:
            self._open()
        except BaseException:
            self._release()
            raise

    def _open(self) -> None:
        if self.path.is_dir():
            raise StorageError(f"memory file {str(self.path)!r} is a directory; expected a file path")
        is_new = not self.path.exists() or self.path.stat().st_size == 0
        if is_new:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StorageError(
                    f"cannot create the folder of memory file {str(self.path)!r}: {error}; choose a writable path"
                ) from error
        else:
            application_id, version = _read_header(self.path)
            _check_identity(self.path, application_id, version)
        sidecars_before = {s for s in _sidecars(self.path) if s.exists()}
        self._lock_fd = _lock_exclusively(self.path)
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT
            )
        except sqlite3.Error as error:
            raise StorageError(f"cannot open memory file {str(self.path)!r}: {error}") from error
        try:
            if is_new:
                self._create()
            else:
                self._check_existing()
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
            if not is_new and self.format_version() < FORMAT_VERSION:
                self._upgrade()
        except sqlite3.DatabaseError as error:
            self._abandon(sidecars_before)
            raise StorageError(
                f"{str(self.path)!r} is not a readable NuoNuo memory file: {error}; "
                "it was left unchanged"
            ) from error
        except BaseException:
            self._abandon(sidecars_before)
            raise

    # ------------------------------------------------------------------ open

    def _create(self) -> None:
        assert self._db is not None
        # Must precede the first table: lets deletes hand pages back to the file system.
        self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._db.execute(f"PRAGMA user_version = {FORMAT_VERSION}")

    def _check_existing(self) -> None:
        """Check identity, version and structure through SQLite; writes nothing."""
        assert self._db is not None
        application_id = self._db.execute("PRAGMA application_id").fetchone()[0]
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        _check_identity(self.path, application_id, version)
        result = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise StorageError(f"{str(self.path)!r} is damaged ({result}); it was left unchanged")
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = {"meta", "memories", "cues", "associations"} - tables
        if missing:
            raise StorageError(
                f"{str(self.path)!r} is damaged: tables {sorted(missing)} are missing; it was left unchanged"
            )

    def _upgrade(self) -> None:
        """Bring a file of an older format version up to :data:`FORMAT_VERSION`."""
        assert self._db is not None
        version = self.format_version()
        with self.transaction():
            if version < 2:
                self._db.execute("ALTER TABLE memories ADD COLUMN code BLOB")
            self._db.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        logger.info("Upgraded %s from format version %d to %d", self.path, version, FORMAT_VERSION)

    def _abandon(self, sidecars_before: set[Path]) -> None:
        """Close after a failed open and remove ``-wal``/``-shm`` files that opening created.

        SQLite deletes them itself when the last connection closes; this only
        catches the case where it could not. A log with content is never removed.
        """
        self._close_connection()
        for sidecar in _sidecars(self.path):
            if sidecar in sidecars_before or not sidecar.exists():
                continue
            if sidecar.name.endswith("-wal") and sidecar.stat().st_size > 0:
                logger.warning("Left %s in place because it is not empty", sidecar)
                continue
            try:
                sidecar.unlink()
            except OSError as error:
                logger.warning("Could not remove %s: %s", sidecar, error)

    def format_version(self) -> int:
        """Format version of the open file (``PRAGMA user_version``)."""
        return int(self._connection().execute("PRAGMA user_version").fetchone()[0])

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError(f"memory file {str(self.path)!r} is closed")
        return self._db

    def _close_connection(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error as error:
                logger.warning("Closing memory file %s failed: %s", self.path, error)
            self._db = None

    def _release(self) -> None:
        # The lock descriptor is closed after the SQLite connection, because
        # closing any descriptor of the file drops the process's POSIX locks on it.
        self._close_connection()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        with _OPEN_FILES_LOCK:
            if _OPEN_FILES.get(self._key) is self:
                del _OPEN_FILES[self._key]

    def close(self) -> None:
        """Close the file and release its lock; later calls raise :class:`StorageError`."""
        self._release()

    def __del__(self) -> None:
        # A memory dropped without close() must not keep its file locked.
        if getattr(self, "_lock_fd", None) is None:
            return
        try:
            self._release()
        except Exception:  # interpreter shutdown: module globals may be gone
            pass

    # ------------------------------------------------------------------ writes

    class _Transaction:
        def __init__(self, storage: Storage) -> None:
            self.storage = storage
            self.db = storage._connection()

        def __enter__(self) -> sqlite3.Connection:
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise StorageError(f"cannot write to {str(self.storage.path)!r}: {error}") from error
            return self.db

        def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
            if kind is None:
                try:
                    self.db.execute("COMMIT")
                    return
                except sqlite3.Error as error:
                    self._rollback()
                    raise StorageError(
                        f"writing to {str(self.storage.path)!r} failed and was rolled back: {error}"
                    ) from error
            self._rollback()
            if isinstance(value, sqlite3.Error):
                raise StorageError(
                    f"writing to {str(self.storage.path)!r} failed and was rolled back: {value}"
                ) from value

        def _rollback(self) -> None:
            # SQLite rolls back by itself after some errors (a full disk).
            if self.db.in_transaction:
                try:
                    self.db.execute("ROLLBACK")
                except sqlite3.Error as error:
                    logger.error("Rolling back a write to %s failed: %s", self.storage.path, error)

    def transaction(self) -> Storage._Transaction:
        """Context manager that commits on success and rolls back on an exception.

        A ``sqlite3.Error`` inside it, or a failed commit, is raised as
        :class:`StorageError` after the rollback.
        """
        return Storage._Transaction(self)

    def set_meta(self, key: str, value: str) -> None:
        """Store a configuration value; call inside :meth:`transaction`."""
        self._connection().execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def get_meta(self, key: str) -> str | None:
        """Return a configuration value, or ``None`` when unset."""
        row = self._connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def insert_memory(self, memory: StoredMemory) -> int:
        """Insert a memory and its cues; returns its rowid. Call inside :meth:`transaction`."""
        cursor = self._connection().execute(
            "INSERT INTO memories (id, namespace, text, metadata, timestamp, created_at, "
            "session, content_hash, code) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                memory.id,
                encode_namespace(memory.namespace),
                memory.text,
                json.dumps(memory.metadata, ensure_ascii=False),
                memory.timestamp,
                memory.created_at,
                memory.session,
                memory.content_hash,
                None if memory.code is None else encode_code(memory.code),
            ),
        )
        rowid = int(cursor.lastrowid)  # type: ignore[arg-type]
        self.insert_cues(rowid, memory.cues)
        return rowid

    def insert_cues(self, rowid: int, cues: Iterable[StoredCue]) -> None:
        """Insert cues of the memory with ``rowid``. Call inside :meth:`transaction`."""
        self._connection().executemany(
            "INSERT INTO cues (memory, kind, start, end, text, embedding) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (rowid, c.kind, c.start, c.end, c.text, np.ascontiguousarray(c.embedding, "<f4").tobytes())
                for c in cues
            ],
        )

    def replace_memory_content(
        self,
        rowid: int,
        text: str,
        metadata: dict[str, Any],
        content_hash: str,
        cues: list[StoredCue],
        code: np.ndarray | None = None,
    ) -> None:
        """Replace text, metadata, cues and code of a memory. Call inside :meth:`transaction`."""
        db = self._connection()
        db.execute(
            "UPDATE memories SET text = ?, metadata = ?, content_hash = ?, code = ? WHERE rowid = ?",
            (
                text,
                json.dumps(metadata, ensure_ascii=False),
                content_hash,
                None if code is None else encode_code(code),
                rowid,
            ),
        )
        db.execute("DELETE FROM cues WHERE memory = ?", (rowid,))
        self.insert_cues(rowid, cues)

    def update_metadata(self, rowid: int, metadata: dict[str, Any]) -> None:
        """Replace the metadata of a memory. Call inside :meth:`transaction`."""
        self._connection().execute(
            "UPDATE memories SET metadata = ? WHERE rowid = ?",
            (json.dumps(metadata, ensure_ascii=False), rowid),
        )

    def store_codes(self, rowids: list[int], codes: np.ndarray) -> None:
        """Replace the sparse codes of memories. Call inside :meth:`transaction`.

        Shape:
            codes: ``(len(rowids), k)``, unit indices.
        """
        self._connection().executemany(
            "UPDATE memories SET code = ? WHERE rowid = ?",
            [(encode_code(code), rowid) for rowid, code in zip(rowids, codes)],
        )

    def delete_memories(self, rowids: list[int]) -> None:
        """Delete memories with their cues and associations. Call inside :meth:`transaction`."""
        self._connection().executemany("DELETE FROM memories WHERE rowid = ?", [(r,) for r in rowids])

    def add_association(self, source: int, target: int, kind: str, weight: float) -> None:
        """Add ``weight`` to the link of ``kind`` from ``source`` to ``target``.

        Call inside :meth:`transaction`.
        """
        self._connection().execute(
            "INSERT INTO associations (source, target, kind, weight) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (source, target, kind) DO UPDATE SET weight = weight + excluded.weight",
            (source, target, kind, weight),
        )

    def delete_association(self, source: int, target: int, kind: str | None) -> None:
        """Delete the link of ``kind`` (every kind when ``None``) in both directions."""
        if kind is None:
            self._connection().execute(
                "DELETE FROM associations WHERE (source = ? AND target = ?) OR (source = ? AND target = ?)",
                (source, target, target, source),
            )
        else:
            self._connection().execute(
                "DELETE FROM associations WHERE kind = ? AND "
                "((source = ? AND target = ?) OR (source = ? AND target = ?))",
                (kind, source, target, target, source),
            )

    def reclaim_space(self) -> None:
        """Return every page freed by deletes to the file system; call outside a transaction.

        ``executescript`` steps the pragma to completion, where ``execute`` would
        free a single page.
        """
        try:
            self._connection().executescript("PRAGMA incremental_vacuum;")
        except sqlite3.Error as error:
            raise StorageError(f"cannot reclaim free pages of {str(self.path)!r}: {error}") from error

    # ------------------------------------------------------------------ reads

    def load(self, dim: int | None) -> LoadedMemories:
        """Read every memory with its cues, as columns; see :class:`LoadedMemories`.

        Args:
            dim: Embedding dimension; ``None`` takes it from the first cue.

        Raises:
            StorageError: when rows are missing or malformed: a memory without
                cues, a cue of no memory, an embedding of the wrong size.
        """
        db = self._connection()
        rowids: list[int] = []
        ids: list[str] = []
        namespaces: list[tuple[str, ...]] = []
        texts: list[str] = []
        metadata: list[dict[str, Any]] = []
        timestamps: list[float | None] = []
        created_at: list[float] = []
        sessions: list[str | None] = []
        hashes: list[str] = []
        codes: list[bytes | None] = []
        namespace_of: dict[str, tuple[str, ...]] = {}
        for row in db.execute(
            "SELECT rowid, id, namespace, text, metadata, timestamp, created_at, session, "
            "content_hash, code FROM memories ORDER BY rowid"
        ):
            rowids.append(row[0])
            ids.append(row[1])
            namespace = namespace_of.get(row[2])
            if namespace is None:
                namespace = namespace_of[row[2]] = decode_namespace(row[2])
            namespaces.append(namespace)
            texts.append(row[3])
            metadata.append({} if row[4] == "{}" else json.loads(row[4]))
            timestamps.append(row[5])
            created_at.append(row[6])
            sessions.append(row[7])
            hashes.append(row[8])
            codes.append(row[9])

        cue_count = int(db.execute("SELECT count(*) FROM cues").fetchone()[0])
        if dim is None:
            first = db.execute("SELECT embedding FROM cues LIMIT 1").fetchone()
            dim = 0 if first is None else len(first[0]) // 4
        embeddings = np.empty((cue_count, dim), dtype=np.float32)
        cue_memory = np.empty(cue_count, dtype=np.int64)
        kinds: list[str] = []
        starts: list[int | None] = []
        ends: list[int | None] = []
        cue_texts: list[str | None] = []
        cursor = db.execute("SELECT memory, kind, start, end, text, embedding FROM cues ORDER BY memory, rowid")
        filled = 0
        while True:
            rows = cursor.fetchmany(_LOAD_CHUNK)
            if not rows:
                break
            if filled + len(rows) > cue_count:
                raise StorageError(f"{str(self.path)!r} changed while it was being read")
            blobs = []
            for offset, (memory, kind, start, end, text, blob) in enumerate(rows):
                if not isinstance(blob, bytes) or len(blob) != 4 * dim:
                    raise StorageError(
                        f"{str(self.path)!r} is damaged: cue {filled + offset} of memory row {memory} "
                        f"has an embedding of {len(blob) if isinstance(blob, bytes) else 'no'} bytes, "
                        f"expected {4 * dim}"
                    )
                cue_memory[filled + offset] = memory
                kinds.append(kind)
                starts.append(start)
                ends.append(end)
                cue_texts.append(text)
                blobs.append(blob)
            embeddings[filled : filled + len(rows)] = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(-1, dim)
            filled += len(rows)

        # Each memory's cues are a run of the cue rows, since both are sorted by memory rowid.
        memory_rowids = np.asarray(rowids, dtype=np.int64)
        starts_at = np.searchsorted(cue_memory, memory_rowids, side="left")
        ends_at = np.searchsorted(cue_memory, memory_rowids, side="right")
        if cue_count and (ends_at - starts_at).sum() != cue_count:
            raise StorageError(f"{str(self.path)!r} is damaged: it contains cues of memories that do not exist")
        empty = np.nonzero(ends_at == starts_at)[0]
        if empty.size:
            raise StorageError(f"{str(self.path)!r} is damaged: memory {ids[int(empty[0])]!r} has no cues")
        offsets = np.zeros(len(rowids) + 1, dtype=np.int64)
        offsets[1:] = ends_at
        return LoadedMemories(
            rowids=rowids, ids=ids, namespaces=namespaces, texts=texts, metadata=metadata,
            timestamps=timestamps, created_at=created_at, sessions=sessions, content_hashes=hashes,
            codes=codes, cue_offsets=offsets, cue_kinds=kinds, cue_starts=starts, cue_ends=ends,
            cue_texts=cue_texts, embeddings=embeddings,
        )

    def load_memories(self) -> Iterator[StoredMemory]:
        """Yield every memory with its cues, in insertion order."""
        loaded = self.load(None)
        for i in range(len(loaded)):
            first, last = int(loaded.cue_offsets[i]), int(loaded.cue_offsets[i + 1])
            code = loaded.codes[i]
            yield StoredMemory(
                rowid=loaded.rowids[i],
                id=loaded.ids[i],
                namespace=loaded.namespaces[i],
                text=loaded.texts[i],
                metadata=loaded.metadata[i],
                timestamp=loaded.timestamps[i],
                created_at=loaded.created_at[i],
                session=loaded.sessions[i],
                content_hash=loaded.content_hashes[i],
                cues=[
                    StoredCue(
                        loaded.cue_kinds[c], loaded.cue_starts[c], loaded.cue_ends[c],
                        loaded.cue_texts[c], loaded.embeddings[c].copy(),
                    )
                    for c in range(first, last)
                ],
                code=None if code is None else np.frombuffer(code, dtype="<i4").astype(np.int64),
            )

    def load_associations(self) -> Iterator[tuple[int, int, str, float]]:
        """Yield every stored link as ``(source, target, kind, weight)``."""
        yield from self._connection().execute("SELECT source, target, kind, weight FROM associations")

    def page_stats(self) -> dict[str, int]:
        """Return ``page_size``, ``page_count`` and ``freelist_count`` of the file.

        ``page_size * page_count`` is the size of the database, including pages
        still in the write-ahead log; ``freelist_count`` pages of it are unused.
        """
        db = self._connection()
        return {
            name: int(db.execute(f"PRAGMA {name}").fetchone()[0])
            for name in ("page_size", "page_count", "freelist_count")
        }


def _sidecars(path: Path) -> list[Path]:
    return [Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")]


def _read_header(path: Path) -> tuple[int, int]:
    """Return ``(application_id, user_version)`` from the SQLite header of ``path``.

    Reads the first 100 bytes with plain file I/O, so a file that is not a
    SQLite database is never handed to SQLite.
    """
    try:
        with open(path, "rb") as handle:
            header = handle.read(_HEADER_SIZE)
    except OSError as error:
        raise StorageError(f"cannot read memory file {str(path)!r}: {error}") from error
    if len(header) < _HEADER_SIZE or not header.startswith(_SQLITE_MAGIC):
        raise StorageError(
            f"{str(path)!r} is not a SQLite database, so not a NuoNuo memory file; "
            "it was left unchanged. Give a new path for the memory file."
        )
    user_version = int.from_bytes(header[_USER_VERSION_OFFSET : _USER_VERSION_OFFSET + 4], "big")
    application_id = int.from_bytes(header[_APPLICATION_ID_OFFSET : _APPLICATION_ID_OFFSET + 4], "big")
    return application_id, user_version


def _check_identity(path: Path, application_id: int, version: int) -> None:
    """Raise unless the file is NuoNuo's, in a format version this code reads."""
    if application_id != APPLICATION_ID:
        raise StorageError(
            f"{str(path)!r} is a SQLite database of another program "
            f"(application_id {application_id:#x}, expected {APPLICATION_ID:#x}); "
            "it was left unchanged. Give a new path for the memory file."
        )
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{str(path)!r} was written in format version {version}, but this "
            f"version of nuonuo reads up to {FORMAT_VERSION}; it was left unchanged. "
            "Upgrade nuonuo to open it."
        )
    if version < 1:
        raise StorageError(
            f"{str(path)!r} has an invalid format version {version}; it was left unchanged"
        )


def _lock_exclusively(path: Path) -> int | None:
    """Take an exclusive advisory lock on ``path`` (created if missing); returns the descriptor.

    Returns ``None`` where the platform has no ``flock``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as error:
        raise StorageError(f"cannot open memory file {str(path)!r}: {error}") from error
    if fcntl is None:
        os.close(fd)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageError(
            f"memory file {str(path)!r} is open in another process; close it there first"
        ) from None
    except OSError as error:
        # Some network file systems have no flock; go on without the lock.
        logger.warning("Cannot lock %s (%s); another process could open it too", path, error)
    return fd


def default_memory_path() -> Path:
    """Return the default memory file of the command-line tool.

    ``$NUONUO_HOME/memory.db`` when set, else ``$XDG_DATA_HOME/nuonuo/memory.db``,
    else ``~/.local/share/nuonuo/memory.db``. None of these is a temporary
    folder unless a variable points there, so memories outlive a reboot.
    """
    home = os.environ.get("NUONUO_HOME")
    if home:
        return Path(home).expanduser() / "memory.db"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser() / "nuonuo" / "memory.db"
