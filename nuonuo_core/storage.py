"""Persistence of memories, cues, associations and configuration in one SQLite file.

The file is opened in write-ahead-log mode with ``synchronous=FULL``: a write
that has returned is in the log on disk and survives a crash of the process or
the machine. Every public write is one transaction.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nuonuo_core.errors import FormatVersionError, StorageError

logger = logging.getLogger(__name__)

# "NuNu" in ASCII, written to the SQLite header so that other files are recognised.
APPLICATION_ID = 0x4E754E75
FORMAT_VERSION = 1
_SQLITE_MAGIC = b"SQLite format 3\x00"

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
    content_hash TEXT NOT NULL
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
    """A memory row with its cues."""

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


def encode_namespace(namespace: tuple[str, ...]) -> str:
    """Serialise a namespace for the ``namespace`` column."""
    return json.dumps(list(namespace), ensure_ascii=False)


def decode_namespace(value: str) -> tuple[str, ...]:
    """Inverse of :func:`encode_namespace`."""
    return tuple(json.loads(value))


class Storage:
    """One SQLite memory file.

    Opening checks, before anything is written, that the file is a SQLite
    database made by NuoNuo in a format version this code reads, or is new.
    Another program's database, a damaged file or a newer format raise
    :class:`StorageError` and leave the file untouched.

    Not thread-safe; the memory that owns it serialises access.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        is_new = not self.path.exists() or self.path.stat().st_size == 0
        if not is_new:
            _check_header(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
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
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise StorageError(
                f"{str(self.path)!r} is not a readable NuoNuo memory file: {error}"
            ) from error
        except StorageError:
            self._db.close()
            raise

    # ------------------------------------------------------------------ open

    def _create(self) -> None:
        # Must precede the first table: lets deletes hand pages back to the file system.
        self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._db.execute(f"PRAGMA user_version = {FORMAT_VERSION}")

    def _check_existing(self) -> None:
        application_id = self._db.execute("PRAGMA application_id").fetchone()[0]
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if application_id != APPLICATION_ID:
            raise StorageError(
                f"{str(self.path)!r} is a SQLite database of another program "
                f"(application_id {application_id:#x}, expected {APPLICATION_ID:#x}); "
                "it was left unchanged. Give a new path for the memory file."
            )
        if version > FORMAT_VERSION:
            raise FormatVersionError(
                f"{str(self.path)!r} was written in format version {version}, but this "
                f"version of nuonuo reads up to {FORMAT_VERSION}; it was left unchanged. "
                "Upgrade nuonuo to open it."
            )
        if version < 1:
            raise StorageError(f"{str(self.path)!r} has an invalid format version {version}")
        result = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise StorageError(f"{str(self.path)!r} is damaged: {result}")

    def close(self) -> None:
        """Close the file. Further calls raise :class:`StorageError`."""
        try:
            self._db.close()
        except sqlite3.Error as error:
            logger.warning("Closing memory file %s failed: %s", self.path, error)

    # ------------------------------------------------------------------ writes

    class _Transaction:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
            if kind is None:
                self.db.execute("COMMIT")
            else:
                self.db.execute("ROLLBACK")

    def transaction(self) -> Storage._Transaction:
        """Context manager that commits on success and rolls back on an exception."""
        return Storage._Transaction(self._db)

    def set_meta(self, key: str, value: str) -> None:
        """Store a configuration value; call inside :meth:`transaction`."""
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def get_meta(self, key: str) -> str | None:
        """Return a configuration value, or ``None`` when unset."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def insert_memory(self, memory: StoredMemory) -> int:
        """Insert a memory and its cues; returns its rowid. Call inside :meth:`transaction`."""
        cursor = self._db.execute(
            "INSERT INTO memories (id, namespace, text, metadata, timestamp, created_at, "
            "session, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                memory.id,
                encode_namespace(memory.namespace),
                memory.text,
                json.dumps(memory.metadata, ensure_ascii=False),
                memory.timestamp,
                memory.created_at,
                memory.session,
                memory.content_hash,
            ),
        )
        rowid = int(cursor.lastrowid)
        self.insert_cues(rowid, memory.cues)
        return rowid

    def insert_cues(self, rowid: int, cues: Iterable[StoredCue]) -> None:
        """Insert cues of the memory with ``rowid``. Call inside :meth:`transaction`."""
        self._db.executemany(
            "INSERT INTO cues (memory, kind, start, end, text, embedding) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (rowid, c.kind, c.start, c.end, c.text, np.ascontiguousarray(c.embedding, "<f4").tobytes())
                for c in cues
            ],
        )

    def replace_memory_content(self, rowid: int, text: str, metadata: dict[str, Any], content_hash: str, cues: list[StoredCue]) -> None:
        """Replace text, metadata and cues of a memory. Call inside :meth:`transaction`."""
        self._db.execute(
            "UPDATE memories SET text = ?, metadata = ?, content_hash = ? WHERE rowid = ?",
            (text, json.dumps(metadata, ensure_ascii=False), content_hash, rowid),
        )
        self._db.execute("DELETE FROM cues WHERE memory = ?", (rowid,))
        self.insert_cues(rowid, cues)

    def update_metadata(self, rowid: int, metadata: dict[str, Any]) -> None:
        """Replace the metadata of a memory. Call inside :meth:`transaction`."""
        self._db.execute(
            "UPDATE memories SET metadata = ? WHERE rowid = ?",
            (json.dumps(metadata, ensure_ascii=False), rowid),
        )

    def delete_memories(self, rowids: list[int]) -> None:
        """Delete memories with their cues and associations. Call inside :meth:`transaction`."""
        self._db.executemany("DELETE FROM memories WHERE rowid = ?", [(r,) for r in rowids])

    def add_association(self, source: int, target: int, kind: str, weight: float) -> None:
        """Add ``weight`` to the link of ``kind`` from ``source`` to ``target``.

        Call inside :meth:`transaction`.
        """
        self._db.execute(
            "INSERT INTO associations (source, target, kind, weight) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (source, target, kind) DO UPDATE SET weight = weight + excluded.weight",
            (source, target, kind, weight),
        )

    def delete_association(self, source: int, target: int, kind: str | None) -> None:
        """Delete the link of ``kind`` (every kind when ``None``) in both directions."""
        if kind is None:
            self._db.execute(
                "DELETE FROM associations WHERE (source = ? AND target = ?) OR (source = ? AND target = ?)",
                (source, target, target, source),
            )
        else:
            self._db.execute(
                "DELETE FROM associations WHERE kind = ? AND "
                "((source = ? AND target = ?) OR (source = ? AND target = ?))",
                (kind, source, target, target, source),
            )

    def reclaim_space(self) -> None:
        """Return the pages freed by deletes to the file system."""
        self._db.execute("PRAGMA incremental_vacuum")

    # ------------------------------------------------------------------ reads

    def load_memories(self) -> Iterator[StoredMemory]:
        """Yield every memory with its cues, in insertion order."""
        cues: dict[int, list[StoredCue]] = {}
        for memory, kind, start, end, text, blob in self._db.execute(
            "SELECT memory, kind, start, end, text, embedding FROM cues ORDER BY rowid"
        ):
            cues.setdefault(memory, []).append(
                StoredCue(kind, start, end, text, np.frombuffer(blob, dtype="<f4").astype(np.float32))
            )
        for row in self._db.execute(
            "SELECT rowid, id, namespace, text, metadata, timestamp, created_at, session, "
            "content_hash FROM memories ORDER BY rowid"
        ):
            rowid = row[0]
            yield StoredMemory(
                rowid=rowid,
                id=row[1],
                namespace=decode_namespace(row[2]),
                text=row[3],
                metadata=json.loads(row[4]),
                timestamp=row[5],
                created_at=row[6],
                session=row[7],
                content_hash=row[8],
                cues=cues.pop(rowid, []),
            )

    def load_associations(self) -> Iterator[tuple[int, int, str, float]]:
        """Yield every stored link as ``(source, target, kind, weight)``."""
        yield from self._db.execute("SELECT source, target, kind, weight FROM associations")


def _check_header(path: Path) -> None:
    """Raise unless ``path`` starts like a SQLite database; reads 16 bytes only."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(_SQLITE_MAGIC))
    except OSError as error:
        raise StorageError(f"cannot read memory file {str(path)!r}: {error}") from error
    if header != _SQLITE_MAGIC:
        raise StorageError(
            f"{str(path)!r} is not a SQLite database, so not a NuoNuo memory file; "
            "it was left unchanged. Give a new path for the memory file."
        )


def default_memory_path() -> Path:
    """Return the default memory file of the command-line tool.

    ``$NUONUO_HOME/memory.db`` when set, else ``$XDG_DATA_HOME/nuonuo/memory.db``,
    else ``~/.local/share/nuonuo/memory.db``.
    """
    home = os.environ.get("NUONUO_HOME")
    if home:
        return Path(home).expanduser() / "memory.db"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser() / "nuonuo" / "memory.db"
