"""Behaviour of AssociativeMemory: recall, chains, persistence and bad input."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
import torch

from nuonuo_core import (
    AssociativeMemory,
    InvalidInputError,
    InvalidTypeError,
    MemoryConfig,
    MemoryNotFoundError,
)

NAMES = ["Ana", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hina", "Ivo", "Jun"]
ACTIVITIES = [
    "baked sourdough bread", "repaired a bicycle", "planted tomatoes", "painted a mural",
    "ran a half marathon", "learned to play the cello", "visited a glacier", "adopted a kitten",
    "wrote a short story", "built a bookshelf", "tasted durian", "fixed a leaking tap",
]
PLACES = ["in Oslo", "near the harbour", "at the community garden", "in a mountain hut",
          "at the old library", "on a rainy Sunday", "in the basement", "with a neighbour",
          "after work", "during the festival"]


def synthetic_sentences(count: int) -> list[str]:
    """Distinct, plausible sentences built from names, activities and places."""
    sentences = [
        f"{name} {activity} {place}."
        for name, activity, place in itertools.product(NAMES, ACTIVITIES, PLACES)
    ]
    assert len(sentences) >= count
    return sentences[:count]


@pytest.fixture(scope="module")
def large_memory(request):
    embedder = request.getfixturevalue("real_embedder")
    memory = AssociativeMemory(embedder=embedder, config=MemoryConfig(device="cpu"))
    texts = synthetic_sentences(1200)
    ids = memory.add_many(texts)
    return memory, texts, ids


def corrupt(vector: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Replace ``fraction`` of the coordinates with Gaussian noise of the same scale."""
    rng = np.random.default_rng(seed)
    corrupted = vector.copy()
    positions = rng.choice(vector.shape[0], int(round(fraction * vector.shape[0])), replace=False)
    corrupted[positions] = rng.normal(0.0, float(vector.std()), positions.shape[0])
    return corrupted / np.linalg.norm(corrupted)


def test_recall_from_corrupted_cue(large_memory, real_embedder):
    memory, texts, ids = large_memory
    assert len(memory) >= 1000
    targets = range(0, 1200, 60)
    for seed, index in enumerate(targets):
        clean = real_embedder.encode([texts[index]])[0]
        cue = corrupt(clean, 0.20, seed)
        results = memory.recall_by_vector(torch.from_numpy(cue), k=1)
        assert results[0].id == ids[index], f"cue of {texts[index]!r} recalled {results[0].text!r}"


def test_recall_reworded_query(large_memory):
    memory, texts, ids = large_memory
    results = memory.recall("Which person grew tomato plants at the shared garden?", k=5)
    assert any("planted tomatoes at the community garden" in r.text for r in results)


def test_six_hop_chain_followed_exactly(real_embedder):
    memory = AssociativeMemory(embedder=real_embedder, config=MemoryConfig(device="cpu"))
    memory.add_many(synthetic_sentences(300))
    # Unrelated statements, so that only the links lead from one to the next.
    chain_texts = [
        "The red key opens the lighthouse door.",
        "Quarterly tax forms are due at the end of April.",
        "Photosynthesis turns sunlight into chemical energy.",
        "My cousin collects vintage typewriters.",
        "The train to Vienna leaves from platform nine.",
        "Saffron is harvested by hand from crocus flowers.",
        "The almanac belonged to the harbour master's grandmother.",
    ]
    chain = memory.add_many(chain_texts)
    for a, b in zip(chain, chain[1:]):
        memory.associate(a, b)

    results = memory.recall(chain_texts[0], k=10, hops=7)
    by_id = {r.id: r for r in results}
    assert chain[-1] in by_id, "the end of the chain was not recalled"
    end = by_id[chain[-1]]
    assert end.path == tuple(chain)
    assert end.hops == 6
    for depth, memory_id in enumerate(chain):
        assert by_id[memory_id].path == tuple(chain[: depth + 1])


def test_single_hop_returns_no_associative_results(hashing_embedder):
    memory = AssociativeMemory(embedder=hashing_embedder)
    a = memory.add("apples grow on trees")
    b = memory.add("the orchard is by the river")
    memory.associate(a, b)
    results = memory.recall("apples", k=5, hops=1)
    assert all(r.hops == 0 and r.path == (r.id,) for r in results)


def test_common_nouns_follow_update_and_delete(hashing_embedder):
    memory = AssociativeMemory(embedder=hashing_embedder)
    memory.add("The Tikhaya Sosna flows through Belgorod Oblast.")
    memory.add("Priozersky District lies in Leningrad Oblast.")
    plain = memory.add("An oblast is a region of Russia.")
    entities = memory._partitions[()].entities
    assert entities.is_common_noun("oblast", 2)
    memory.update(plain, text="A province is a region of Russia.")
    assert not entities.is_common_noun("oblast", 2)
    memory.update(plain, text="An oblast is a region of Russia.")
    assert entities.is_common_noun("oblast", 2)
    memory.delete(plain)
    assert not entities.is_common_noun("oblast", 2)


@pytest.mark.parametrize("hops", [1, 3])
def test_named_subject_ranks_higher(hashing_embedder, hops):
    texts = ["Anna: pottery class today", "Boris: pottery class today, pottery"]
    plain = AssociativeMemory(embedder=hashing_embedder, config=MemoryConfig(subject_factor=1.0, device="cpu"))
    boosted = AssociativeMemory(embedder=hashing_embedder, config=MemoryConfig(device="cpu"))
    for memory in (plain, boosted):
        memory.add_many(texts)
    query = "What pottery does Anna do?"
    plain_scores = {r.text: r.score for r in plain.recall(query, k=2, hops=hops)}
    boosted_scores = {r.text: r.score for r in boosted.recall(query, k=2, hops=hops)}
    factor = MemoryConfig().subject_factor
    assert boosted_scores[texts[0]] == pytest.approx(factor * plain_scores[texts[0]])
    assert boosted_scores[texts[1]] == pytest.approx(plain_scores[texts[1]])


GARDEN_TURNS = [
    "Anna: hello there",
    "Anna: good morning",
    "Anna: thanks a lot",
    "Anna: my garden has roses, tulips, daisies and a pond",
    "Boris: I bought a bike",
]


@pytest.mark.parametrize("hops", [1, 3])
def test_recall_takes_common_named_subject_out(hashing_embedder, hops):
    unprojected = AssociativeMemory(embedder=hashing_embedder, config=MemoryConfig(subject_projection=0.0, device="cpu"))
    taken_out = AssociativeMemory(embedder=hashing_embedder, config=MemoryConfig(device="cpu"))
    for memory in (unprojected, taken_out):
        memory.add_many(GARDEN_TURNS)
    query = "Which flowers does Anna grow in her garden?"
    before = {r.text: r for r in unprojected.recall(query, k=5, hops=hops)}
    after = {r.text: r for r in taken_out.recall(query, k=5, hops=hops)}
    garden, greeting = GARDEN_TURNS[3], GARDEN_TURNS[0]
    # Turns that match the query only by the speaker's name lose ground...
    assert after[greeting].score / after[garden].score < before[greeting].score / before[garden].score
    # ...while each result's similarity is still to the query as given.
    for text, result in after.items():
        assert result.similarity == pytest.approx(before[text].similarity, abs=1e-5)
    # Only the text recall embeds names: recall by vector is unchanged.
    vector = hashing_embedder.encode([query])[0]
    by_vector = [(r.text, r.score) for r in taken_out.recall_by_vector(vector, k=5, hops=hops)]
    assert by_vector == [(r.text, r.score) for r in unprojected.recall_by_vector(vector, k=5, hops=hops)]


def test_namespaces_share_changed_query(hashing_embedder):
    # Without the lexical score, which each namespace normalises on its own,
    # the same memories split over two namespaces score as in one.
    config = MemoryConfig(device="cpu", hops=1, lexical_weight=0.0)
    together = AssociativeMemory(embedder=hashing_embedder, config=config)
    split = AssociativeMemory(embedder=hashing_embedder, config=config)
    together.add_many(GARDEN_TURNS, namespace=("chat",))
    split.add_many(GARDEN_TURNS[:3], namespace=("chat", "a"))
    split.add_many(GARDEN_TURNS[3:], namespace=("chat", "b"))
    query = "Which flowers does Anna grow in her garden?"
    expected = {r.text: r.score for r in together.recall(query, k=5, namespace=("chat",))}
    found = {r.text: r.score for r in split.recall(query, k=5, namespace_prefix=("chat",))}
    assert found.keys() == expected.keys()
    for text, score in found.items():
        assert score == pytest.approx(expected[text], rel=1e-4)


def test_recall_similarity_uses_given_query(hashing_embedder):
    memory = AssociativeMemory(embedder=hashing_embedder, config=MemoryConfig(device="cpu"))
    memory.add_many(GARDEN_TURNS)
    text = "Anna: my pond has fish"
    memory.add(text, cues=["anna pond"])
    query = "Anna pond"
    vectors = hashing_embedder.encode([query, text, "anna pond"])
    best = max(float(vectors[1] @ vectors[0]), float(vectors[2] @ vectors[0]))
    result = next(r for r in memory.recall(query, k=6) if r.text == text)
    assert result.similarity == pytest.approx(best, abs=2e-3)


def test_recall_keeps_subject_of_one_memory(hashing_embedder):
    texts = ["Anna: my garden has roses", "Boris: I bought a bike", "Chen: good morning"]
    unprojected = AssociativeMemory(embedder=hashing_embedder, config=MemoryConfig(subject_projection=0.0, device="cpu"))
    default = AssociativeMemory(embedder=hashing_embedder, config=MemoryConfig(device="cpu"))
    for memory in (unprojected, default):
        memory.add_many(texts)
    query = "Which flowers does Anna grow?"
    assert [(r.text, r.score) for r in default.recall(query, k=3)] == [(r.text, r.score) for r in unprojected.recall(query, k=3)]


def test_subject_vector_cache_bounded(hashing_embedder, monkeypatch):
    import nuonuo_core.memory as memory_module

    monkeypatch.setattr(memory_module, "_SUBJECT_VECTORS_KEPT", 2)
    memory = AssociativeMemory(embedder=hashing_embedder, config=MemoryConfig(device="cpu"))
    # Each speaker has two turns: the name of a subject of one memory is never embedded.
    memory.add_many([f"{name}: turn {number}" for name in ("Anna", "Boris", "Chen") for number in (1, 2)])
    for name in ("Anna", "Boris", "Chen"):
        memory.recall(f"What did {name} say?", k=1)
    assert len(memory._subject_vectors) == 2
    assert "anna" not in memory._subject_vectors


def test_reopen_gives_identical_recall(tmp_path, real_embedder):
    path = tmp_path / "memory.db"
    queries = ["Who baked bread?", "a kitten adoption", "cello lessons in Oslo"]
    with AssociativeMemory(path, embedder=real_embedder, config=MemoryConfig(device="cpu")) as memory:
        ids = memory.add_many(synthetic_sentences(200), session="s1")
        memory.associate(ids[3], ids[150])
        memory.delete(ids[10])
        before = [memory.recall(q, k=8, hops=h) for q in queries for h in (1, 3)]

    with AssociativeMemory(path, embedder=real_embedder) as reopened:
        after = [reopened.recall(q, k=8, hops=h) for q in queries for h in (1, 3)]
        assert len(reopened) == 199
    for old, new in zip(before, after):
        assert [(r.id, r.path, r.hops) for r in old] == [(r.id, r.path, r.hops) for r in new]
        assert [r.score for r in old] == pytest.approx([r.score for r in new], abs=1e-6)


def test_reopen_keeps_configuration(tmp_path, hashing_embedder):
    path = tmp_path / "memory.db"
    config = MemoryConfig(code_dim=4096, k=20, device="cpu", hops=2)
    with AssociativeMemory(path, config=config, embedder=hashing_embedder) as memory:
        memory.add("hello world")
    with AssociativeMemory(path) as reopened:
        assert reopened.config.code_dim == 4096
        assert reopened.config.hops == 2
        assert reopened.config.embedding_model == "hashing"
        assert reopened.recall("hello", k=1)[0].text == "hello world"


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_blank_text_rejected(hashing_embedder, bad):
    memory = AssociativeMemory(embedder=hashing_embedder)
    with pytest.raises(InvalidInputError, match="text must not be empty or blank"):
        memory.add(bad)
    assert len(memory) == 0


@pytest.mark.parametrize("bad, type_name", [(None, "NoneType"), (b"bytes", "bytes"), (42, "int"), (3.5, "float")])
def test_non_string_text_rejected(hashing_embedder, bad, type_name):
    memory = AssociativeMemory(embedder=hashing_embedder)
    memory.add("kept")
    with pytest.raises(InvalidTypeError, match=f"text must be a str, got {type_name}"):
        memory.add(bad)
    assert len(memory) == 1


def test_unknown_id_names_the_id(hashing_embedder):
    memory = AssociativeMemory(embedder=hashing_embedder)
    with pytest.raises(MemoryNotFoundError, match="no memory with id 'missing-7'"):
        memory.get("missing-7")
    with pytest.raises(KeyError):
        memory.delete("missing-7")


def test_bad_batch_stores_nothing(hashing_embedder):
    memory = AssociativeMemory(embedder=hashing_embedder)
    with pytest.raises(InvalidTypeError, match="item 1"):
        memory.add_many(["fine", 5, "also fine"])
    assert len(memory) == 0


def test_k_zero_and_negative(hashing_embedder):
    memory = AssociativeMemory(embedder=hashing_embedder)
    memory.add("something to find")
    assert memory.recall("something", k=0) == []
    with pytest.raises(InvalidInputError, match="k must be >= 0, got -1"):
        memory.recall("something", k=-1)


def test_blank_query_returns_nothing(hashing_embedder):
    memory = AssociativeMemory(embedder=hashing_embedder)
    memory.add("something to find")
    assert memory.recall("   ") == []


def test_session_links_consecutive_memories(hashing_embedder):
    memory = AssociativeMemory(embedder=hashing_embedder)
    first = memory.add("my dog is called Max", session="chat")
    second = memory.add("Max loves the beach", session="chat")
    other = memory.add("unrelated note", session="other")
    assert memory.links(first) == {second: {"session": 1.0}}
    assert other not in memory.links(second)


def test_duplicate_text_kept_once(hashing_embedder):
    memory = AssociativeMemory(embedder=hashing_embedder)
    first = memory.add("the same text")
    second = memory.add("the  same text")
    assert first == second
    assert len(memory) == 1


def test_async_matches_sync(hashing_embedder):
    memory = AssociativeMemory(embedder=hashing_embedder)

    async def scenario():
        ids = await memory.aadd_many(["alpha beta", "beta gamma", "gamma delta"], session="s")
        results = await memory.arecall("beta", k=3, hops=2)
        return ids, results

    ids, async_results = asyncio.run(scenario())
    sync_results = memory.recall("beta", k=3, hops=2)
    assert [r.id for r in async_results] == [r.id for r in sync_results]
    assert len(ids) == 3


def test_explicit_id_is_kept_for_duplicate_text(hashing_embedder):
    memory = AssociativeMemory(embedder=hashing_embedder)
    first = memory.add("the same text")
    second = memory.add("the same text", id="mine")
    assert first != second
    assert second == "mine"
    assert memory.get("mine").text == "the same text"


def test_async_list_namespaces_clear(hashing_embedder):
    memory = AssociativeMemory(embedder=hashing_embedder)
    memory.add("one", namespace="a")
    memory.add("two", namespace=("b", "c"))

    async def scenario():
        listed = await memory.alist("a")
        spaces = await memory.anamespaces()
        await memory.aclear()
        return listed, spaces

    listed, spaces = asyncio.run(scenario())
    assert [r.text for r in listed] == ["one"]
    assert spaces == [("a",), ("b", "c")]
    assert len(memory) == 0


def test_exit_during_background_index_build():
    """A process that exits while the HNSW index is being built exits cleanly."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("faiss")
    script = """
import torch
from benchmarks.speed import VectorTable, unit_vectors
from nuonuo_core import AssociativeMemory, MemoryConfig

vectors = unit_vectors(40_000, seed=1)
config = MemoryConfig(code_dim=1024, k=16, ann_threshold=1_000, device="cpu")
memory = AssociativeMemory(embedder=VectorTable(vectors), config=config)
memory.add_many([f"v{i}" for i in range(40_000)], batch_size=4096)
memory.recall_by_vector(torch.from_numpy(vectors[0]), 5)  # starts the build
print("exiting", flush=True)
"""
    root = Path(__file__).resolve().parents[2]
    finished = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300, check=False
    )

    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "exiting" in finished.stdout
