"""Flat cosine search, BM25 and reciprocal-rank fusion used as baselines."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.baselines import (
    BM25Index,
    BM25Retriever,
    FlatCosineIndex,
    FlatCosineRetriever,
    FusionRetriever,
    reciprocal_rank_fusion,
)
from benchmarks.datasets import Document

DOCUMENTS = [
    Document("d0", "The ferry leaves Barreiro every morning at seven."),
    Document("d1", "Biscuit the border collie hides from thunderstorms."),
    Document("d2", "Grilled sardines with roasted peppers for dinner."),
    Document("d3", "The office is next to the ferry terminal in Lisbon."),
]


def test_rrf_hand_computed():
    # a: 1/61 + 1/62 = 0.03252; c: 1/63 + 1/61 = 0.03227; b: 1/62 = 0.01613; d: 1/63 = 0.01587.
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], k=60)
    scores = {
        "a": 1 / 61 + 1 / 62,
        "b": 1 / 62,
        "c": 1 / 63 + 1 / 61,
        "d": 1 / 63,
    }
    assert fused == sorted(scores, key=lambda item: -scores[item])
    assert fused == ["a", "c", "b", "d"]


def test_rrf_ties_keep_first_seen_order():
    assert reciprocal_rank_fusion([["x"], ["y"]]) == ["x", "y"]
    assert reciprocal_rank_fusion([]) == []


def test_flat_index_ranks_by_cosine():
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    index = FlatCosineIndex(["x", "y", "z"], vectors)
    assert index.rank(np.array([0.0, 1.0]), 3) == ["z", "y", "x"]
    assert index.rank(np.array([1.0, 0.0]), 1) == ["x"]


def test_flat_index_rejects_length_mismatch():
    with pytest.raises(ValueError, match="2 ids for 3 vectors"):
        FlatCosineIndex(["a", "b"], np.zeros((3, 2), dtype=np.float32))


def test_bm25_leaves_out_unmatched_documents():
    index = BM25Index([d.id for d in DOCUMENTS], [d.text for d in DOCUMENTS])
    ranking = index.rank("ferry terminal", 10)
    assert ranking == ["d3", "d0"]


def test_bm25_query_without_known_words():
    index = BM25Index([d.id for d in DOCUMENTS], [d.text for d in DOCUMENTS])
    assert index.rank("zebra", 10) == []
    assert index.rank("the of and", 10) == []
    assert index.rank("", 10) == []


def test_retrievers_keep_corpora_apart(hashing_embedder):
    for retriever in (FlatCosineRetriever(hashing_embedder), BM25Retriever(), FusionRetriever(hashing_embedder)):
        retriever.index("first", DOCUMENTS[:2])
        retriever.index("second", DOCUMENTS[2:])
        assert set(retriever.search("first", "ferry morning Barreiro", 5)) <= {"d0", "d1"}, retriever.name
        assert retriever.search("second", "sardines peppers dinner", 1) == ["d2"], retriever.name
        retriever.drop("first")
        with pytest.raises(KeyError):
            retriever.search("first", "ferry", 1)


def test_fusion_combines_both_rankings(hashing_embedder):
    fusion = FusionRetriever(hashing_embedder)
    fusion.index("c", DOCUMENTS)
    query = "ferry terminal"
    expected = reciprocal_rank_fusion(
        [fusion.flat.search("c", query, 100), fusion.bm25.search("c", query, 100)]
    )
    assert fusion.search("c", query, 3) == expected[:3]
