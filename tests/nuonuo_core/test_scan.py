"""The compiled scan of the 8-bit cue rows that recall's first stage runs on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from nuonuo_core import AssociativeMemory, HashingEmbedder, MemoryConfig, _scan
from nuonuo_core import partition as partition_module

pytestmark = pytest.mark.skipif(not _scan.AVAILABLE, reason="Numba is not installed")

WORDS = (
    "river harbour lantern violin orchard glacier kitten marathon cello ferry bakery "
    "museum tulip canyon comet meadow pepper quartz saddle thunder velvet walnut"
).split()


def hard_rows(seed: int) -> np.ndarray:
    """Unit rows of several shapes: dense, clustered, one large element, and all zeros."""
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((3000, 384))
    clustered = rng.standard_normal((8, 384))[rng.integers(0, 8, 3000)] + 0.05 * rng.standard_normal((3000, 384))
    spiky = 0.01 * rng.standard_normal((500, 384))
    spiky[:, 7] = 1.0
    rows = np.concatenate((dense, clustered, spiky))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return np.concatenate((rows, np.zeros((1, 384)))).astype(np.float16).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_scan_stays_within_its_bound(seed):
    rows = hard_rows(seed)
    quantized = _scan.QuantizedRows(384, rows.shape[0])
    quantized.write(0, rows)
    rng = np.random.default_rng(seed + 10)
    queries = np.concatenate((rows[rng.integers(0, rows.shape[0] - 1, 20)], rng.standard_normal((20, 384))))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    for query in queries:
        scores, bound = quantized.scan(query, rows.shape[0], threads=2)
        exact = rows.astype(np.float64) @ query.astype(np.float64)
        assert np.abs(scores - exact).max() <= bound
        # Rescoring looks at a window of twice the bound, so it must stay narrow.
        assert bound < 0.05


def test_scan_same_on_any_thread_count():
    rows = hard_rows(2)
    quantized = _scan.QuantizedRows(384, rows.shape[0])
    quantized.write(0, rows)
    query = rows[5]
    single, _ = quantized.scan(query, rows.shape[0], threads=1)
    parallel, _ = quantized.scan(query, rows.shape[0], threads=2)
    assert np.array_equal(single, parallel)


def test_compaction_keeps_rows_and_tightens_the_bound():
    rows = hard_rows(3)
    quantized = _scan.QuantizedRows(384, rows.shape[0])
    quantized.write(0, rows)
    query = rows[10]
    before, wide = quantized.scan(query, rows.shape[0], threads=2)
    # Drop the rows with one large element, which have the largest scales.
    keep = np.arange(6000)
    quantized.compact(keep, rows.shape[0])
    after, narrow = quantized.scan(query, keep.shape[0], threads=2)
    assert np.array_equal(after, before[keep])
    assert narrow < wide
    assert not quantized.codes[keep.shape[0] : rows.shape[0]].any()


def texts(count: int, seed: int) -> list[str]:
    """Texts of two or three short sentences, so that memories carry sentence cues."""
    rng = np.random.default_rng(seed)
    result = []
    for i in range(count):
        sentences = [
            " ".join(rng.choice(WORDS, size=int(rng.integers(4, 8)))).capitalize() + "."
            for _ in range(int(rng.integers(2, 4)))
        ]
        result.append(f"Note {i}. " + " ".join(sentences))
    return result


def queries_of(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=3)) for _ in range(count)]


def memories_by_scan(monkeypatch, stored: list[str], session: str | None = None) -> dict[bool, tuple[AssociativeMemory, list[str]]]:
    """Store ``stored`` twice: with the half-precision scan (key False) and the 8-bit one (True).

    Each value is ``(memory, ids)``.
    """
    config = MemoryConfig(code_dim=1024, k=16)
    memories = {}
    for quantized in (False, True):
        monkeypatch.setattr(partition_module, "_QUANTIZED_SCAN", quantized)
        memory = AssociativeMemory(embedder=HashingEmbedder(dim=384), config=config)
        ids = memory.add_many(stored, session=session, batch_size=256)
        assert (memory._partitions[()].quantized is not None) == quantized
        memories[quantized] = (memory, ids)
    return memories


def assert_same_recall(first: AssociativeMemory, second: AssociativeMemory, queries: list[str], k: int = 10) -> None:
    for query in queries:
        expected, found = second.recall(query, k, hops=1), first.recall(query, k, hops=1)
        assert [r.text for r in found] == [r.text for r in expected]
        # The softmax sums the same candidates in another order.
        assert np.allclose([r.score for r in found], [r.score for r in expected], rtol=0, atol=1e-6)
        assert [r.similarity for r in found] == [r.similarity for r in expected]


def test_recall_ranks_as_with_the_half_precision_scan(monkeypatch):
    memories = memories_by_scan(monkeypatch, texts(800, seed=4))
    queries = queries_of(40, seed=5)
    assert_same_recall(memories[True][0], memories[False][0], queries)
    # More results than Hopfield candidates are rescored as well.
    assert_same_recall(memories[True][0], memories[False][0], queries[:10], k=60)

    # After deletions and a compaction that moves the rows.
    for memory, ids in memories.values():
        for memory_id in ids[::3]:
            memory.delete(memory_id)
        memory._partitions[()]._compact_cues()
    assert_same_recall(memories[True][0], memories[False][0], queries)


def test_linked_results_get_exact_similarity(monkeypatch):
    memories = memories_by_scan(monkeypatch, texts(400, seed=6), session="notes")
    queries = queries_of(20, seed=7)
    found = {
        quantized: {(query, r.text): r.similarity for query in queries for r in memory.recall(query, 10, hops=3)}
        for quantized, (memory, _) in memories.items()
    }
    shared = found[True].keys() & found[False].keys()
    assert len(shared) >= 100
    # Both scans score the same stored rows in float32, whatever the path to a result.
    assert all(found[True][key] == found[False][key] for key in shared)
