"""The memory file: format checks, files left untouched, locking, space, codes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from nuonuo_core import (
    AssociativeMemory,
    ConfigError,
    FormatVersionError,
    HashingEmbedder,
    MemoryConfig,
    StorageError,
)
from nuonuo_core import memory as memory_module
from nuonuo_core.storage import APPLICATION_ID, FORMAT_VERSION, Storage, default_memory_path

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = MemoryConfig(code_dim=2048, k=16, device="cpu")


def new_memory(path: Path, config: MemoryConfig = SMALL) -> AssociativeMemory:
    return AssociativeMemory(path, config=config, embedder=HashingEmbedder(dim=64))


def sentences(count: int, start: int = 0) -> list[str]:
    """Distinct texts of three sentences each, so each memory has four cues."""
    return [
        f"Note {i} is about the harbour. Boats number {i} arrived late. "
        f"The crew of boat {i} unloaded fish."
        for i in range(start, start + count)
    ]


def snapshot(path: Path) -> tuple[str, frozenset[str]]:
    """Hash of the file's bytes and the names of every file beside it."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest, frozenset(p.name for p in path.parent.iterdir())


def sql(path: Path, statement: str, *args: object) -> list[tuple]:
    """Run one statement on the file through a separate connection."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        return db.execute(statement, args).fetchall()


def apply(mode: str, coroutine_factory, function, *args, **kwargs):
    """Call ``function`` directly, or its async twin through asyncio.run."""
    if mode == "async":
        return asyncio.run(coroutine_factory(*args, **kwargs))
    return function(*args, **kwargs)


# ---------------------------------------------------------------------- format


def test_new_file_settings(tmp_path):
    path = tmp_path / "memory.db"
    storage = Storage(path)
    try:
        connection = storage._connection()
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
        assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert connection.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert storage.format_version() == FORMAT_VERSION
    finally:
        storage.close()


def test_default_path_outside_temp(monkeypatch):
    monkeypatch.delenv("NUONUO_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", "/home/tester")

    path = default_memory_path()

    assert path == Path("/home/tester/.local/share/nuonuo/memory.db")
    assert not path.is_relative_to(tempfile.gettempdir())
    assert not path.is_relative_to("/tmp")


def test_default_path_variables(monkeypatch, tmp_path):
    monkeypatch.delenv("NUONUO_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_memory_path() == tmp_path / "data" / "nuonuo" / "memory.db"

    monkeypatch.setenv("NUONUO_HOME", str(tmp_path / "home"))
    assert default_memory_path() == tmp_path / "home" / "memory.db"


def test_cli_opens_default_path(monkeypatch, tmp_path):
    from nuonuo_core import cli

    monkeypatch.setenv("NUONUO_HOME", str(tmp_path))
    with new_memory(tmp_path / "memory.db") as memory:
        memory.add("stored through the default path")

    opened, target = cli._open_memory(None)
    with opened:
        assert target == tmp_path / "memory.db"
        assert [r.text for r in opened.list()] == ["stored through the default path"]


# ---------------------------------------------------------------------- rejected files


def make_nuonuo_file(path: Path, count: int = 200) -> list[str]:
    with new_memory(path) as memory:
        return memory.add_many(sentences(count), session="s")


def other_program_rollback(path: Path) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN")
        db.execute("CREATE TABLE invoices (number INTEGER PRIMARY KEY, total REAL)")
        db.executemany("INSERT INTO invoices (total) VALUES (?)", [(i * 1.5,) for i in range(500)])
        db.execute("COMMIT")


def other_program_wal(path: Path) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN")
        db.execute("CREATE TABLE memories (id TEXT, text TEXT)")
        db.executemany("INSERT INTO memories VALUES (?, ?)", [(str(i), f"row {i}") for i in range(500)])
        db.execute("COMMIT")


def not_sqlite(path: Path) -> None:
    path.write_text("This is a plain text file, not a database.\n" * 200, encoding="utf-8")


def short_garbage(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + b"\x01" * 20)


def newer_version(path: Path) -> None:
    make_nuonuo_file(path, 20)
    sql(path, f"PRAGMA user_version = {FORMAT_VERSION + 1}")


def zeroed_header(path: Path) -> None:
    make_nuonuo_file(path, 20)
    data = bytearray(path.read_bytes())
    data[:100] = bytes(100)
    path.write_bytes(bytes(data))


def damaged_pages(path: Path) -> None:
    make_nuonuo_file(path)
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    rng = np.random.default_rng(7)
    for page in (5, 9, 14):
        data[page * page_size : (page + 1) * page_size] = rng.integers(0, 256, page_size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def truncated(path: Path) -> None:
    make_nuonuo_file(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def nan_embedding(path: Path) -> None:
    make_nuonuo_file(path, 20)
    blob = np.full(64, np.nan, dtype="<f4").tobytes()
    sql(path, "UPDATE cues SET embedding = ? WHERE rowid = 3", blob)


def missing_table(path: Path) -> None:
    make_nuonuo_file(path, 20)
    sql(path, "DROP TABLE associations")


REJECTED = {
    "other program's database": (other_program_rollback, StorageError, "another program"),
    "other program's database in WAL mode": (other_program_wal, StorageError, "another program"),
    "text file": (not_sqlite, StorageError, "not a SQLite database"),
    "short garbage": (short_garbage, StorageError, "not a SQLite database"),
    "newer format version": (newer_version, FormatVersionError, "Upgrade nuonuo"),
    "zeroed header": (zeroed_header, StorageError, "not a SQLite database"),
    "damaged pages": (damaged_pages, StorageError, "damaged|malformed|not a readable"),
    "truncated": (truncated, StorageError, "damaged|malformed|not a readable"),
    "NaN embedding": (nan_embedding, StorageError, "NaN"),
    "missing table": (missing_table, StorageError, "missing"),
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_rejected_file_left_untouched(tmp_path, case):
    make, error_type, message = REJECTED[case]
    path = tmp_path / "memory.db"
    make(path)
    before = snapshot(path)

    with pytest.raises(error_type, match=message):
        new_memory(path)

    assert snapshot(path) == before
    # A failed open must not keep the file locked either.
    with pytest.raises(error_type, match=message):
        new_memory(path)


def test_other_embedder_rejected_untouched(tmp_path):
    path = tmp_path / "memory.db"
    make_nuonuo_file(path, 10)
    before = snapshot(path)

    with pytest.raises(ConfigError, match="embedding model"):
        AssociativeMemory(path, embedder=HashingEmbedder(dim=64, name="hashing:other"))
    with pytest.raises(ConfigError, match="64-dimensional"):
        AssociativeMemory(path, embedder=HashingEmbedder(dim=32))

    assert snapshot(path) == before


# ---------------------------------------------------------------------- reopening


def test_reopen_never_loses_memories(tmp_path):
    path = tmp_path / "memory.db"
    ids = make_nuonuo_file(path, 50)

    # Reopen with another configuration, with the stored one, and with no embedder.
    with new_memory(path, MemoryConfig(code_dim=1024, k=8, device="cpu")) as memory:
        assert sorted(r.id for r in memory.list()) == sorted(ids)
    with AssociativeMemory(path) as memory:
        assert memory.config.code_dim == 1024
        assert sorted(r.id for r in memory.list()) == sorted(ids)
        assert memory.recall("crew of boat 7", k=1)[0].id == ids[7]
    assert sql(path, "SELECT count(*) FROM memories") == [(50,)]


def test_second_open_in_process_rejected(tmp_path):
    path = tmp_path / "memory.db"
    first = new_memory(path)
    first.add("kept")

    with pytest.raises(StorageError, match="already open in this process"):
        new_memory(path)
    first.add("still writable")
    first.close()

    with new_memory(path) as second:
        assert len(second) == 2


def test_dropped_memory_releases_file(tmp_path):
    path = tmp_path / "memory.db"
    memory = new_memory(path)
    memory.add("written before the reference is dropped")
    del memory

    with new_memory(path) as reopened:
        assert len(reopened) == 1


def test_second_open_other_process_rejected(tmp_path):
    path = tmp_path / "memory.db"
    make_nuonuo_file(path, 5)
    script = textwrap.dedent(
        f"""
        import sys
        from nuonuo_core import AssociativeMemory, HashingEmbedder
        memory = AssociativeMemory({str(path)!r}, embedder=HashingEmbedder(dim=64))
        print("open", flush=True)
        sys.stdin.readline()
        memory.close()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "open"
        with pytest.raises(StorageError, match="open in another process"):
            new_memory(path)
    finally:
        child.communicate("done\n", timeout=60)

    with new_memory(path) as memory:
        assert len(memory) == 5


# ---------------------------------------------------------------------- codes


def test_reopen_uses_stored_codes(tmp_path, monkeypatch):
    path = tmp_path / "memory.db"
    ids = make_nuonuo_file(path, 30)

    def fail(*args, **kwargs):
        raise AssertionError("codes were computed again on reopen")

    monkeypatch.setattr(memory_module, "winner_take_all", fail)
    with new_memory(path) as memory:
        assert memory.recall("crew of boat 12", k=1)[0].id == ids[12]


def test_codes_follow_configuration(tmp_path):
    path = tmp_path / "memory.db"
    texts = sentences(40)
    make_nuonuo_file(path, 0)
    with new_memory(path) as memory:
        memory.add_many(texts)
    other = MemoryConfig(code_dim=1024, k=8, seed=3, device="cpu")

    with new_memory(path, other) as reopened:
        fresh = AssociativeMemory(config=other, embedder=HashingEmbedder(dim=64))
        fresh.add_many(texts)
        for query in ("boat 3 arrived", "fish unloaded by the crew of boat 30"):
            got = [(r.text, r.hops) for r in reopened.recall(query, k=5, hops=2)]
            expected = [(r.text, r.hops) for r in fresh.recall(query, k=5, hops=2)]
            assert got == expected
    stored = sql(path, "SELECT code FROM memories")
    assert all(len(code) == 4 * 8 for (code,) in stored)


def test_version_one_file_upgraded(tmp_path):
    path = tmp_path / "memory.db"
    ids = make_nuonuo_file(path, 25)
    # Turn the file into what format version 1 wrote: no code column. The table
    # is copied because DROP COLUMN needs SQLite 3.35.
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(
            """
            BEGIN;
            CREATE TABLE memories_v1 (
                rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, namespace TEXT NOT NULL,
                text TEXT NOT NULL, metadata TEXT NOT NULL, timestamp REAL, created_at REAL NOT NULL,
                session TEXT, content_hash TEXT NOT NULL
            );
            INSERT INTO memories_v1 SELECT rowid, id, namespace, text, metadata, timestamp,
                created_at, session, content_hash FROM memories;
            DROP TABLE memories;
            ALTER TABLE memories_v1 RENAME TO memories;
            CREATE INDEX memories_namespace_hash ON memories (namespace, content_hash);
            DELETE FROM meta WHERE key = 'code_params';
            PRAGMA user_version = 1;
            COMMIT;
            """
        )
    assert "code" not in [row[1] for row in sql(path, "PRAGMA table_info(memories)")]

    with new_memory(path) as memory:
        assert memory.recall("crew of boat 4", k=1)[0].id == ids[4]

    assert sql(path, "PRAGMA user_version") == [(FORMAT_VERSION,)]
    assert sql(path, "SELECT count(*) FROM memories WHERE length(code) = 64") == [(25,)]


# ---------------------------------------------------------------------- space


def page_stats(path: Path) -> tuple[int, int]:
    """``(page_count, freelist_count)`` of the file, through a separate connection."""
    return sql(path, "PRAGMA page_count")[0][0], sql(path, "PRAGMA freelist_count")[0][0]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_delete_reclaims_pages(tmp_path, mode):
    path = tmp_path / "memory.db"
    with new_memory(path) as memory:
        ids = memory.add_many(sentences(300))
        full_pages, _ = page_stats(path)

        for memory_id in ids[:250]:
            apply(mode, memory.adelete, memory.delete, memory_id)
        pages, free = page_stats(path)

        assert free == 0
        assert pages < full_pages / 2
        assert sql(path, "SELECT count(*) FROM cues") == [(4 * 50,)]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_delete_namespace_reclaims_pages(tmp_path, mode):
    path = tmp_path / "memory.db"
    with new_memory(path) as memory:
        memory.add_many(sentences(20), namespace="keep")
        memory.add_many(sentences(300, start=100), namespace="drop", session="s")
        full_pages, _ = page_stats(path)

        assert apply(mode, memory.adelete_namespace, memory.delete_namespace, "drop") == 300
        pages, free = page_stats(path)

        assert free == 0
        assert pages < full_pages / 4
        assert sql(path, "SELECT count(*) FROM memories") == [(20,)]
        assert sql(path, "SELECT count(*) FROM associations") == [(0,)]


def test_file_stops_growing_under_churn(tmp_path):
    path = tmp_path / "memory.db"
    sizes = []
    with new_memory(path) as memory:
        for cycle in range(4):
            ids = memory.add_many(sentences(200, start=1000 * cycle), session=f"s{cycle}")
            for memory_id in ids[::2]:
                memory.update(memory_id, f"Replaced note {memory_id}. It is short now. Nothing else.")
            for memory_id in ids:
                memory.delete(memory_id)
            sizes.append(page_stats(path)[0])

    assert sizes[-1] <= sizes[0]


def test_cue_rows_compacted(tmp_path):
    memory = new_memory(tmp_path / "memory.db")
    ids = memory.add_many(sentences(600))
    # Partition internals: live and dead cue rows of the default namespace.
    partition = memory._partitions[()]
    assert partition.cue_count == 4 * 600

    # Dead rows are dropped once they outnumber max(1024, half the rows).
    for memory_id in ids[:500]:
        memory.delete(memory_id)
    assert partition.cue_count - partition.dead_cues == 4 * 100
    assert partition.cue_count < 4 * 600
    assert partition.dead_cues <= max(1024, partition.cue_count // 2)

    for round_number in range(600):
        memory.update(ids[-1], f"Round {round_number} of the test. The text changes again. Its cues change too.")
    assert partition.cue_count - partition.dead_cues == 4 * 100
    assert partition.dead_cues <= max(1024, partition.cue_count // 2)
    memory.close()


@pytest.mark.parametrize(
    ("make_path", "expected"),
    [
        (lambda root: "", "must not be empty"),
        (lambda root: "  ", "must not be empty"),
        (lambda root: root, "is a directory"),
        (lambda root: root / "plain.txt" / "sub" / "memory.db", "cannot create the folder"),
    ],
)
def test_unusable_path_storage_error(tmp_path, make_path, expected):
    (tmp_path / "plain.txt").write_text("not a folder", encoding="utf-8")

    with pytest.raises(StorageError, match=expected):
        new_memory(make_path(tmp_path))
