"""Namespaces: recall, links, filters, updates and deletes never cross users."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nuonuo_core import (
    AssociativeMemory,
    HashingEmbedder,
    InvalidInputError,
    MemoryConfig,
    MemoryNotFoundError,
)

SMALL = MemoryConfig(code_dim=1024, k=16, hopfield_candidates=8, device="cpu")


def new_memory(path: Path | None = None, **changes) -> AssociativeMemory:
    return AssociativeMemory(path, config=SMALL.replace(**changes), embedder=HashingEmbedder(dim=64))


class AsyncCalls:
    """The memory's async twins, called through ``asyncio.run`` with the sync signatures."""

    def __init__(self, memory: AssociativeMemory) -> None:
        self.memory = memory

    def add(self, *args, **kwargs):
        return asyncio.run(self.memory.aadd(*args, **kwargs))

    def add_many(self, *args, **kwargs):
        return asyncio.run(self.memory.aadd_many(*args, **kwargs))

    def recall(self, *args, **kwargs):
        return asyncio.run(self.memory.arecall(*args, **kwargs))

    def update(self, *args, **kwargs):
        return asyncio.run(self.memory.aupdate(*args, **kwargs))

    def delete(self, *args, **kwargs):
        return asyncio.run(self.memory.adelete(*args, **kwargs))

    def delete_namespace(self, *args, **kwargs):
        return asyncio.run(self.memory.adelete_namespace(*args, **kwargs))

    def associate(self, *args, **kwargs):
        return asyncio.run(self.memory.aassociate(*args, **kwargs))

    def get(self, *args, **kwargs):
        return asyncio.run(self.memory.aget(*args, **kwargs))


def calls(memory: AssociativeMemory, mode: str):
    """The memory itself for ``"sync"``, its async twins for ``"async"``."""
    return AsyncCalls(memory) if mode == "async" else memory


def assert_within(memory: AssociativeMemory, results, namespace: tuple[str, ...]) -> None:
    """Every result and every id on every path belongs to ``namespace`` and is live."""
    for result in results:
        assert result.namespace == namespace
        for memory_id in result.path:
            assert memory.get(memory_id).namespace == namespace


# ---------------------------------------------------------------------- recall


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("on_file", [False, True], ids=["ram", "file"])
def test_recall_stays_in_namespace(tmp_path, mode, on_file):
    path = tmp_path / "memory.db" if on_file else None
    memory = new_memory(path)
    api = calls(memory, mode)
    users = [("alice",), ("alice", "work"), ("bob",), ()]
    texts = ["my dog is called Max", "Max loves the beach", "the beach is in Porto", "Porto has a bridge"]
    for user in users:
        # The same texts and the same session name in every namespace, linked in a chain.
        ids = api.add_many(texts, namespace=user, session="shared-session")
        api.associate(ids[0], ids[3])
    if on_file:
        memory.close()
        memory = new_memory(path)
        api = calls(memory, mode)

    for user in users:
        for hops in (1, 2, 3):
            results = api.recall("dog Max beach Porto bridge", k=10, hops=hops, namespace=user)
            assert len(results) == 4
            assert_within(memory, results, user)
        for query in texts:
            assert_within(memory, api.recall(query, k=10, hops=3, namespace=user), user)

    by_prefix = api.recall("dog", k=20, hops=2, namespace_prefix=("alice",))
    assert {r.namespace for r in by_prefix} == {("alice",), ("alice", "work")}
    memory.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_associate_across_namespaces_rejected(tmp_path, mode):
    path = tmp_path / "memory.db"
    memory = new_memory(path)
    api = calls(memory, mode)
    alice = api.add("alice keeps bees", namespace="alice")
    bob = api.add("bob keeps bees", namespace="bob")
    work = api.add("alice at work", namespace=("alice", "work"))

    for a, b in ((alice, bob), (bob, alice), (alice, work)):
        with pytest.raises(InvalidInputError, match="different namespaces"):
            api.associate(a, b)

    assert memory.links(alice) == {}
    assert memory.links(bob) == {}
    assert memory.links(work) == {}
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM associations").fetchone() == (0,)
    assert [r.id for r in api.recall("bees", k=5, hops=3, namespace="alice")] == [alice]
    memory.close()


def test_foreign_link_in_file_ignored(tmp_path):
    path = tmp_path / "memory.db"
    with new_memory(path) as memory:
        alice = memory.add("alice keeps bees", namespace="alice")
        other = memory.add("alice grows peas", namespace="alice")
        bob = memory.add("bob has a secret", namespace="bob")
    # A link between namespaces that only a damaged or hand-edited file can hold.
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        rowid = {memory_id: r for r, memory_id in db.execute("SELECT rowid, id FROM memories")}
        db.execute(
            "INSERT INTO associations VALUES (?, ?, 'explicit', 5.0)", (rowid[alice], rowid[bob])
        )

    with new_memory(path) as memory:
        assert memory.links(alice) == {}
        assert memory.links(other) == {}
        results = memory.recall("bees", k=5, hops=3, namespace="alice")
        assert_within(memory, results, ("alice",))


# ---------------------------------------------------------------------- filters


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_filter_with_several_keys(mode):
    memory = new_memory()
    api = calls(memory, mode)
    expected = set()
    for user in ("ana", "ben"):
        for topic in ("food", "travel"):
            for year in (2019, 2021, 2023):
                for flag in (True, False):
                    memory_id = api.add(
                        f"{user} wrote about {topic} in {year} {flag}",
                        metadata={"user": user, "topic": topic, "year": year, "flag": flag},
                        namespace="shared",
                    )
                    if user == "ana" and topic == "food" and year >= 2021 and flag is True:
                        expected.add(memory_id)
    conditions = {"user": "ana", "topic": {"$in": ["food"]}, "year": {"$gte": 2021}, "flag": True}

    recalled = api.recall("wrote about food", k=100, hops=2, namespace="shared", filter=conditions)
    listed = memory.list("shared", filter=conditions)

    assert {r.id for r in recalled} == expected
    assert {r.id for r in listed} == expected
    assert len(expected) == 2
    # JSON types: the number 1 is not the boolean true.
    assert memory.list("shared", filter={"flag": 1}) == []
    assert memory.list("shared", filter={"flag": {"$in": [1]}}) == []


@pytest.mark.parametrize("hops", [1, 3])
def test_filter_matching_nothing_recalls_nothing(hops):
    memory = new_memory()
    for text in ("the kettle is in the kitchen", "the bike is in the shed"):
        memory.add(text, metadata={"room": "house"})
    assert memory.recall("where is the kettle", k=5, hops=hops, filter={"room": "garden"}) == []


# ---------------------------------------------------------------------- update and delete


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_deleted_memory_never_recalled(mode):
    memory = new_memory()
    api = calls(memory, mode)
    # Unrelated words, so only the links lead from one memory to the next.
    a = api.add("violin lessons on tuesday", namespace="u")
    b = api.add("granite quarry tour", namespace="u")
    c = api.add("saffron harvest festival", namespace="u")
    api.associate(a, b)
    api.associate(b, c)
    assert {r.id for r in api.recall("violin lessons", k=5, hops=3, namespace="u")} == {a, b, c}

    api.delete(b)

    results = api.recall("violin lessons", k=5, hops=3, namespace="u")
    assert [r.id for r in results] != []
    assert all(b not in r.path for r in results)
    assert c not in {r.id for r in results if r.hops > 0}
    assert b not in {r.id for r in api.recall("granite quarry tour", k=5, hops=3, namespace="u")}
    assert memory.links(a) == {}
    with pytest.raises(MemoryNotFoundError):
        api.get(b)
    with pytest.raises(MemoryNotFoundError):
        api.delete(b)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_update_keeps_id_and_links(mode):
    memory = new_memory()
    api = calls(memory, mode)
    a = api.add("violin lessons on tuesday", namespace="u")
    b = api.add("granite quarry tour", namespace="u")
    api.associate(a, b)

    record = api.update(b, "kayak trip on the fjord")

    assert record.id == b
    assert api.get(b).text == "kayak trip on the fjord"
    assert memory.links(a) == {b: {"explicit": 1.0}}
    assert api.recall("kayak fjord", k=1, namespace="u")[0].id == b
    assert all(r.id != b or r.hops > 0 for r in api.recall("granite quarry", k=5, hops=2, namespace="u"))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_delete_namespace_is_exact(mode):
    memory = new_memory()
    api = calls(memory, mode)
    api.add("alice home note", namespace="alice")
    kept = [
        api.add("alice work note", namespace=("alice", "work")),
        api.add("bob note", namespace="bob"),
        api.add("default note"),
    ]

    assert api.delete_namespace("alice") == 1
    assert api.delete_namespace("alice") == 0

    assert memory.namespaces() == [(), ("alice", "work"), ("bob",)]
    assert sorted(r.id for ns in memory.namespaces() for r in memory.list(ns)) == sorted(kept)
    assert api.recall("alice home note", k=5, namespace="alice") == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_same_text_kept_once_per_namespace(mode):
    memory = new_memory()
    api = calls(memory, mode)
    first = api.add("the same text", namespace="alice")
    assert api.add("the  same\ntext", namespace="alice") == first
    assert api.add_many(["the same text", "the same text"], namespace="alice") == [first, first]
    other = api.add("the same text", namespace="bob")

    assert other != first
    assert memory.count("alice") == 1
    assert memory.count("bob") == 1

    kept_twice = new_memory(deduplicate=False)
    api = calls(kept_twice, mode)
    assert api.add("the same text") != api.add("the same text")
    assert kept_twice.count() == 2


# ---------------------------------------------------------------------- property


NAMESPACES = [(), ("alice",), ("alice", "work"), ("bob",)]
WORDS = ["apple", "river", "piano", "garden", "rocket", "winter", "coffee", "tiger"]

texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join)
namespace_index = st.integers(0, len(NAMESPACES) - 1)
pick = st.integers(0, 10_000)
use_async = st.booleans()
operations_in_ram = [
    st.tuples(st.just("add"), namespace_index, texts, st.sampled_from([None, "s1", "s2"]), use_async),
    st.tuples(st.just("add_many"), namespace_index, st.lists(texts, min_size=1, max_size=4), use_async),
    st.tuples(st.just("associate"), pick, pick, use_async),
    st.tuples(st.just("recall"), namespace_index, texts, st.integers(1, 3), st.integers(0, 6), use_async),
    st.tuples(st.just("update"), pick, texts, use_async),
    st.tuples(st.just("delete"), pick, use_async),
    st.tuples(st.just("delete_namespace"), namespace_index, use_async),
]
operation_in_ram = st.one_of(*operations_in_ram)
operation_on_file = st.one_of(*operations_in_ram, st.tuples(st.just("reopen")))


class Model:
    """The expected state: live id -> (namespace, text), and every id handed out."""

    def __init__(self) -> None:
        self.live: dict[str, tuple[tuple[str, ...], str]] = {}
        self.issued: list[str] = []

    def pick(self, number: int) -> str | None:
        return self.issued[number % len(self.issued)] if self.issued else None

    def ids_with_text(self, namespace: tuple[str, ...], text: str) -> set[str]:
        return {i for i, (ns, t) in self.live.items() if ns == namespace and t == text}

    def record_add(self, namespace: tuple[str, ...], text: str, returned: str) -> None:
        existing = self.ids_with_text(namespace, text)
        if existing:
            assert returned in existing, "a duplicate text was stored twice"
            return
        assert returned not in self.live
        self.live[returned] = (namespace, text)
        self.issued.append(returned)


def check_state(memory: AssociativeMemory, model: Model) -> None:
    for namespace in NAMESPACES:
        listed = {r.id: r.text for r in memory.list(namespace)}
        assert listed == {i: t for i, (ns, t) in model.live.items() if ns == namespace}
    assert memory.namespaces() == sorted({ns for ns, _ in model.live.values()})
    for memory_id, (namespace, _) in model.live.items():
        for neighbour in memory.links(memory_id):
            assert model.live[neighbour][0] == namespace


def run_operations(memory: AssociativeMemory, model: Model, steps, reopen) -> AssociativeMemory:
    for step in steps:
        kind, arguments = step[0], step[1:]
        api = calls(memory, "async" if arguments and arguments[-1] is True else "sync")
        if kind == "add":
            namespace, text, session = NAMESPACES[arguments[0]], arguments[1], arguments[2]
            model.record_add(namespace, text, api.add(text, namespace=namespace, session=session))
        elif kind == "add_many":
            namespace, batch = NAMESPACES[arguments[0]], arguments[1]
            for text, returned in zip(batch, api.add_many(batch, namespace=namespace, session="s1")):
                model.record_add(namespace, text, returned)
        elif kind == "associate":
            a, b = model.pick(arguments[0]), model.pick(arguments[1])
            if a is None:
                continue
            if a not in model.live or b not in model.live:
                with pytest.raises(MemoryNotFoundError):
                    api.associate(a, b)
            elif a == b or model.live[a][0] != model.live[b][0]:
                links_before = memory.links(a)
                with pytest.raises(InvalidInputError):
                    api.associate(a, b)
                assert memory.links(a) == links_before
            else:
                api.associate(a, b)
        elif kind == "recall":
            namespace, query, hops, k = NAMESPACES[arguments[0]], arguments[1], arguments[2], arguments[3]
            results = api.recall(query, k=k, hops=hops, namespace=namespace)
            assert len(results) <= k
            assert len({r.id for r in results}) == len(results)
            for result in results:
                assert result.namespace == namespace
                assert model.live[result.id][0] == namespace
                assert result.path[-1] == result.id
                for memory_id in result.path:
                    assert model.live[memory_id][0] == namespace
        elif kind == "update":
            target, text = model.pick(arguments[0]), arguments[1]
            if target is None:
                continue
            if target not in model.live:
                with pytest.raises(MemoryNotFoundError):
                    api.update(target, text)
            else:
                assert api.update(target, text).id == target
                model.live[target] = (model.live[target][0], text)
        elif kind == "delete":
            target = model.pick(arguments[0])
            if target is None:
                continue
            if target not in model.live:
                with pytest.raises(MemoryNotFoundError):
                    api.delete(target)
            else:
                api.delete(target)
                del model.live[target]
        elif kind == "delete_namespace":
            namespace = NAMESPACES[arguments[0]]
            expected = [i for i, (ns, _) in model.live.items() if ns == namespace]
            assert api.delete_namespace(namespace) == len(expected)
            for memory_id in expected:
                del model.live[memory_id]
        elif kind == "reopen":
            memory = reopen(memory)
        check_state(memory, model)
    return memory


PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(steps=st.lists(operation_in_ram, min_size=1, max_size=40))
def test_isolation_property_in_ram(steps):
    memory = new_memory()
    run_operations(memory, Model(), steps, reopen=lambda m: m)


@settings(PROPERTY_SETTINGS, max_examples=60)
@given(steps=st.lists(operation_on_file, min_size=1, max_size=40))
def test_isolation_property_on_file(steps):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "memory.db"

        def reopen(memory: AssociativeMemory) -> AssociativeMemory:
            memory.close()
            return new_memory(path)

        memory = run_operations(new_memory(path), Model(), steps, reopen)
        memory.close()
