"""Durability: acknowledged writes survive SIGKILL, failed writes leave no trace."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest

from nuonuo_core import AssociativeMemory, HashingEmbedder, MemoryConfig, StorageError

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = MemoryConfig(code_dim=2048, k=16, device="cpu")
# Acknowledged operations the parent waits for before it kills the writer.
ACKNOWLEDGED_BEFORE_KILL = 60
# The writer is killed after this many seconds even if it stalls.
WATCHDOG_SECONDS = 120

# The writer: a deterministic stream of operations on one file, each printed
# with its number once the call has returned. Updates change memories of
# operations 0, 10, 20...; deletes remove those of operations 3, 13, 23...
WRITER = '''
import asyncio, sys
from nuonuo_core import AssociativeMemory, HashingEmbedder, MemoryConfig

path, mode = sys.argv[1], sys.argv[2]
memory = AssociativeMemory(path, config=MemoryConfig(code_dim=2048, k=16, device="cpu"),
                           embedder=HashingEmbedder(dim=64))

def call(name, *args, **kwargs):
    if mode == "async":
        return asyncio.run(getattr(memory, "a" + name)(*args, **kwargs))
    return getattr(memory, name)(*args, **kwargs)

number = 0
while True:
    kind = number % 10
    if kind == 7 and number >= 10:
        call("update", f"m{number - 7}", f"updated text {number}")
    elif kind == 8 and number >= 10:
        call("delete", f"m{number - 5}")
    elif kind == 9:
        items = [{"text": f"batch {number} item {j}", "id": f"b{number}-{j}"} for j in range(5)]
        call("add_many", items, session="s")
    else:
        call("add", f"memory {number} with a few words", id=f"m{number}", session="s")
    print(number, flush=True)
    number += 1
'''


def expected_state(acknowledged: int) -> dict[str, str]:
    """Id -> text after the first ``acknowledged`` operations of the writer."""
    state: dict[str, str] = {}
    for number in range(acknowledged):
        kind = number % 10
        if kind == 7 and number >= 10:
            state[f"m{number - 7}"] = f"updated text {number}"
        elif kind == 8 and number >= 10:
            del state[f"m{number - 5}"]
        elif kind == 9:
            for j in range(5):
                state[f"b{number}-{j}"] = f"batch {number} item {j}"
        else:
            state[f"m{number}"] = f"memory {number} with a few words"
    return state


def run_writer_and_kill(path: Path, mode: str) -> int:
    """Start the writer, SIGKILL it mid-stream; returns the number of acknowledged operations."""
    script = path.parent / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    child = subprocess.Popen(
        [sys.executable, str(script), str(path), mode],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    watchdog = threading.Timer(WATCHDOG_SECONDS, child.kill)
    watchdog.start()
    acknowledged = 0
    try:
        for line in child.stdout:  # type: ignore[union-attr]
            assert int(line) == acknowledged
            acknowledged += 1
            if acknowledged >= ACKNOWLEDGED_BEFORE_KILL:
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        child.kill()
        # read(), not communicate(): communicate() reads the pipe itself and would
        # miss lines that the loop above already buffered but did not yield.
        rest = child.stdout.read()  # type: ignore[union-attr]
        errors = child.stderr.read()  # type: ignore[union-attr]
        child.wait(timeout=60)
    assert acknowledged >= ACKNOWLEDGED_BEFORE_KILL, f"the writer stopped early:\n{errors}"
    assert child.returncode == -signal.SIGKILL

    # Lines printed before the kill landed but not read yet are acknowledged too.
    for line in rest.splitlines():
        assert int(line) == acknowledged
        acknowledged += 1
    return acknowledged


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sigkill_keeps_acknowledged_writes(tmp_path, mode):
    path = tmp_path / "memory.db"
    acknowledged = run_writer_and_kill(path, mode)

    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    # The operation in flight when the kill came may or may not have committed,
    # but only as a whole: a batch is one transaction.
    possible = [expected_state(acknowledged), expected_state(acknowledged + 1)]
    with AssociativeMemory(path, embedder=HashingEmbedder(dim=64)) as memory:
        stored = {record.id: record.text for record in memory.list()}
        assert stored in possible
        for memory_id, text in stored.items():
            assert memory.get(memory_id).text == text
        first_live = next(iter(possible[0]))
        assert memory.recall(possible[0][first_live], k=1)[0].id == first_live

        # The file keeps working after the crash.
        memory.add("written after the crash", id="after")
    with AssociativeMemory(path, embedder=HashingEmbedder(dim=64)) as memory:
        assert memory.get("after").text == "written after the crash"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_returned_write_is_committed(tmp_path, mode):
    path = tmp_path / "memory.db"
    memory = AssociativeMemory(path, config=SMALL, embedder=HashingEmbedder(dim=64))
    try:
        if mode == "async":
            memory_id = asyncio.run(memory.aadd("committed before add returns"))
        else:
            memory_id = memory.add("committed before add returns")

        # Another connection reads the row while the memory is still open.
        with closing(sqlite3.connect(path)) as db:
            rows = db.execute("SELECT id, text FROM memories").fetchall()
        assert rows == [(memory_id, "committed before add returns")]
    finally:
        memory.close()


class FailingInserts:
    """Wraps ``Storage.insert_memory`` so that the ``fail_at``-th call raises an I/O error."""

    def __init__(self, storage, fail_at: int) -> None:
        self.original = storage.insert_memory
        self.fail_at = fail_at
        self.calls = 0

    def __call__(self, stored):
        self.calls += 1
        if self.calls == self.fail_at:
            raise sqlite3.OperationalError("disk I/O error")
        return self.original(stored)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_failed_write_stores_nothing(tmp_path, mode):
    path = tmp_path / "memory.db"
    memory = AssociativeMemory(path, config=SMALL, embedder=HashingEmbedder(dim=64))
    kept = memory.add("kept from before", session="s")
    memory._storage.insert_memory = FailingInserts(memory._storage, fail_at=3)  # type: ignore[union-attr]

    batch = ["first of the batch", "second of the batch", "third fails", "fourth of the batch"]
    with pytest.raises(StorageError, match="rolled back"):
        if mode == "async":
            asyncio.run(memory.aadd_many(batch, session="s"))
        else:
            memory.add_many(batch, session="s")

    assert [r.text for r in memory.list()] == ["kept from before"]
    assert memory.recall("second of the batch", k=5)[0].id == kept
    assert memory.links(kept) == {}
    memory.add("written after the failure")
    memory.close()

    with AssociativeMemory(path, embedder=HashingEmbedder(dim=64)) as reopened:
        assert sorted(r.text for r in reopened.list()) == ["kept from before", "written after the failure"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_every_change_survives_reopen(tmp_path, mode):
    path = tmp_path / "memory.db"

    async def changes(memory: AssociativeMemory) -> dict[str, str]:
        ids = {}
        ids["a"] = await memory.aadd("alpha note", namespace=("alice",), metadata={"n": 1}, session="s")
        ids["b"] = await memory.aadd("beta note", namespace=("alice",), session="s")
        ids["c"] = await memory.aadd("gamma note", namespace=("alice", "work"))
        ids["d"] = await memory.aadd("delta note", namespace=("bob",))
        ids["e"] = await memory.aadd("epsilon note", namespace=("bob",))
        await memory.aupdate(ids["b"], "beta note, changed", metadata={"n": 2}, cues=["second letter"])
        await memory.aassociate(ids["d"], ids["e"], 2.5)
        await memory.adelete(ids["a"])
        await memory.adelete_namespace(("alice", "work"))
        return ids

    with AssociativeMemory(path, config=SMALL, embedder=HashingEmbedder(dim=64)) as memory:
        if mode == "async":
            ids = asyncio.run(changes(memory))
        else:
            ids = {}
            ids["a"] = memory.add("alpha note", namespace=("alice",), metadata={"n": 1}, session="s")
            ids["b"] = memory.add("beta note", namespace=("alice",), session="s")
            ids["c"] = memory.add("gamma note", namespace=("alice", "work"))
            ids["d"] = memory.add("delta note", namespace=("bob",))
            ids["e"] = memory.add("epsilon note", namespace=("bob",))
            memory.update(ids["b"], "beta note, changed", metadata={"n": 2}, cues=["second letter"])
            memory.associate(ids["d"], ids["e"], 2.5)
            memory.delete(ids["a"])
            memory.delete_namespace(("alice", "work"))
        before = {r.id: r for ns in memory.namespaces() for r in memory.list(ns)}

    with AssociativeMemory(path, embedder=HashingEmbedder(dim=64)) as reopened:
        after = {r.id: r for ns in reopened.namespaces() for r in reopened.list(ns)}
        assert after == before
        assert sorted(after) == sorted([ids["b"], ids["d"], ids["e"]])
        assert after[ids["b"]].namespace == ("alice",)
        assert after[ids["b"]].text == "beta note, changed"
        assert after[ids["b"]].metadata == {"n": 2}
        assert "second letter" in after[ids["b"]].cues
        assert after[ids["d"]].namespace == ("bob",)
        assert reopened.links(ids["d"]) == {ids["e"]: {"explicit": 2.5}}
        assert reopened.links(ids["b"]) == {}
        assert reopened.namespaces() == [("alice",), ("bob",)]
        assert reopened.recall("second letter", k=1, namespace=("alice",))[0].id == ids["b"]
