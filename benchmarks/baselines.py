"""The retrievers a user would otherwise pick, run beside NuoNuo on the same data.

- Flat cosine search, as a vector store does it: one matrix product of the
  query embedding with every stored embedding, ranked by score.
- BM25 from ``bm25s`` with its default parameters (Lucene variant, ``k1`` 1.5,
  ``b`` 0.75) and its default tokenizer with English stopwords: lower-cased
  tokens of two or more word characters (regex ``\\b\\w\\w+\\b``), no stemming.
- Reciprocal-rank fusion of the two: ``score(d) = sum over rankings of
  1 / (60 + rank of d)``, ranks counted from 1, over the top
  :data:`FUSION_DEPTH` of each ranking.

Each retriever keeps one index per corpus, so questions are answered only from
their own conversation or passage collection, as NuoNuo does with namespaces.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from benchmarks.datasets import Document
from nuonuo_core.embedding import Embedder

RRF_K = 60
"""The constant ``k`` of reciprocal-rank fusion."""

FUSION_DEPTH = 100
"""How many results of each ranking reciprocal-rank fusion reads."""

BM25_TOKENIZER = (
    "bm25s.tokenize defaults: lower-cased, regex \\b\\w\\w+\\b, English stopwords, no stemming"
)


class Retriever(Protocol):
    """A retrieval system under test."""

    name: str
    """Name printed in tables and reports."""

    def index(self, corpus: str, documents: Sequence[Document]) -> None:
        """Index the documents of one corpus; indexing a corpus twice is a no-op."""
        ...

    def search(self, corpus: str, query: str, k: int) -> list[str]:
        """Return the ids of the best ``k`` documents of ``corpus``, best first."""
        ...

    def drop(self, corpus: str) -> None:
        """Forget a corpus and free its index."""
        ...


class FlatCosineIndex:
    """Exact cosine search over fixed embeddings.

    Args:
        ids: Id of each row.
        vectors: Unit-length embeddings. Shape ``(len(ids), dim)``, float32.
    """

    def __init__(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        if len(ids) != vectors.shape[0]:
            raise ValueError(f"got {len(ids)} ids for {vectors.shape[0]} vectors")
        self.ids = list(ids)
        self.matrix = np.ascontiguousarray(vectors, dtype=np.float32)

    def rank(self, query: np.ndarray, depth: int) -> list[str]:
        """Return the ids of the ``depth`` rows most similar to ``query``, best first.

        Ties keep row order. Shape: ``query`` is ``(dim,)``.
        """
        scores = self.matrix @ np.asarray(query, dtype=np.float32)
        order = np.argsort(-scores, kind="stable")[:depth]
        return [self.ids[i] for i in order]


class BM25Index:
    """Okapi BM25 over the texts of one corpus, with ``bm25s``'s defaults.

    Documents that share no token with the query get no score and are left out
    of the ranking, so a ranking can be shorter than asked for.
    """

    def __init__(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        import bm25s

        # bm25s sets its own logger to DEBUG, which floods the terminal.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        if len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        self._bm25s = bm25s
        self.ids = list(ids)
        tokens = self._tokenize(texts)
        self._retriever = bm25s.BM25()
        self._retriever.index(tokens, show_progress=False)
        self._vocabulary = set(self._retriever.vocab_dict)

    def _tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        return self._bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)

    def rank(self, query: str, depth: int) -> list[str]:
        """Return the ids of the best ``depth`` documents with a positive score, best first."""
        # bm25s raises on an empty token list, and unknown tokens add nothing.
        tokens = [t for t in self._tokenize([query])[0] if t in self._vocabulary]
        if not tokens:
            return []
        scores = self._retriever.get_scores(tokens)
        order = np.argsort(-scores, kind="stable")[:depth]
        return [self.ids[i] for i in order if scores[i] > 0]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = RRF_K) -> list[str]:
    """Fuse rankings by ``sum(1 / (k + rank))``, ranks from 1; returns every id, best first.

    Ties keep the order in which ids were first seen, ranking by ranking.
    """
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda item: -scores[item])


class FlatCosineRetriever:
    """Flat cosine search over the embedder's vectors, one index per corpus."""

    name = "flat cosine"

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._indexes: dict[str, FlatCosineIndex] = {}

    def index(self, corpus: str, documents: Sequence[Document]) -> None:
        if corpus in self._indexes:
            return
        vectors = self.embedder.encode([d.text for d in documents])
        self._indexes[corpus] = FlatCosineIndex([d.id for d in documents], _unit_rows(vectors))

    def search(self, corpus: str, query: str, k: int) -> list[str]:
        vector = _unit_rows(self.embedder.encode([query]))[0]
        return self._indexes[corpus].rank(vector, k)

    def drop(self, corpus: str) -> None:
        self._indexes.pop(corpus, None)


class BM25Retriever:
    """BM25 with ``bm25s``'s defaults, one index per corpus."""

    name = "BM25"

    def __init__(self) -> None:
        self._indexes: dict[str, BM25Index] = {}

    def index(self, corpus: str, documents: Sequence[Document]) -> None:
        if corpus in self._indexes:
            return
        self._indexes[corpus] = BM25Index([d.id for d in documents], [d.text for d in documents])

    def search(self, corpus: str, query: str, k: int) -> list[str]:
        return self._indexes[corpus].rank(query, k)

    def drop(self, corpus: str) -> None:
        self._indexes.pop(corpus, None)


class FusionRetriever:
    """Reciprocal-rank fusion of flat cosine search and BM25."""

    name = "RRF(flat, BM25)"

    def __init__(self, embedder: Embedder, depth: int = FUSION_DEPTH) -> None:
        self.depth = depth
        self.flat = FlatCosineRetriever(embedder)
        self.bm25 = BM25Retriever()

    def index(self, corpus: str, documents: Sequence[Document]) -> None:
        self.flat.index(corpus, documents)
        self.bm25.index(corpus, documents)

    def search(self, corpus: str, query: str, k: int) -> list[str]:
        depth = max(self.depth, k)
        rankings = [self.flat.search(corpus, query, depth), self.bm25.search(corpus, query, depth)]
        return reciprocal_rank_fusion(rankings)[:k]

    def drop(self, corpus: str) -> None:
        self.flat.drop(corpus)
        self.bm25.drop(corpus)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)
