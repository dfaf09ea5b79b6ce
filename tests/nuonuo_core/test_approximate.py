"""The quantized first stage that large namespaces switch to."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.speed import VectorTable, unit_vectors
from nuonuo_core import AssociativeMemory, MemoryConfig

faiss = pytest.importorskip("faiss")

COUNT = 12_000


def clustered_vectors(count: int, seed: int) -> np.ndarray:
    """Unit vectors around 300 centres, as real embeddings cluster by topic."""
    rng = np.random.default_rng(seed)
    centres = unit_vectors(300, seed=seed + 1)
    noise = rng.standard_normal((count, centres.shape[1])).astype(np.float32) * 0.06
    vectors = centres[rng.integers(0, 300, count)] + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def top_texts(memory: AssociativeMemory, queries: np.ndarray) -> list[list[str]]:
    return [[r.text for r in memory.recall_by_vector(torch.from_numpy(q), 10)] for q in queries]


def test_quantized_stage_matches_exact_scan():
    vectors = clustered_vectors(COUNT, seed=5)
    rng = np.random.default_rng(6)
    queries = vectors[rng.integers(0, COUNT, 40)] + rng.standard_normal((40, vectors.shape[1])).astype(np.float32) * 0.03
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    exact_config = MemoryConfig(code_dim=1024, k=16, device="cpu")
    memory = AssociativeMemory(embedder=VectorTable(vectors), config=exact_config)
    memory.add_many([f"v{i}" for i in range(COUNT)], batch_size=4096)
    exact = top_texts(memory, queries)

    memory.config = exact_config.replace(ann_threshold=1)
    partition = memory._partitions[()]
    partition.config = memory.config
    partition.build_approximate_index()
    assert partition._ann is not None
    approximate = top_texts(memory, queries)

    overlap = np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approximate, exact)])
    assert overlap >= 0.95
    assert [a[0] for a in approximate] == [e[0] for e in exact]


def test_memory_added_after_build_found():
    vectors = clustered_vectors(COUNT + 1, seed=7)
    config = MemoryConfig(code_dim=1024, k=16, device="cpu", ann_threshold=1)
    memory = AssociativeMemory(embedder=VectorTable(vectors), config=config)
    memory.add_many([f"v{i}" for i in range(COUNT)], batch_size=4096)
    memory._partitions[()].build_approximate_index()
    memory.add(f"v{COUNT}")
    found = memory.recall_by_vector(torch.from_numpy(vectors[COUNT]), 1)
    assert found[0].text == f"v{COUNT}"


def test_small_namespace_stays_exact():
    vectors = clustered_vectors(50, seed=8)
    config = MemoryConfig(code_dim=1024, k=16, device="cpu", ann_threshold=1)
    memory = AssociativeMemory(embedder=VectorTable(vectors), config=config)
    memory.add_many([f"v{i}" for i in range(50)])
    memory._partitions[()].build_approximate_index()
    assert memory._partitions[()]._ann is None
    assert memory.recall_by_vector(torch.from_numpy(vectors[3]), 1)[0].text == "v3"
