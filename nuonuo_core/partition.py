"""The in-memory index of one namespace: cue vectors, codes, links and words.

A partition knows nothing of other namespaces, so recall that runs inside one
cannot return or pass through another namespace's memories.
"""

from __future__ import annotations

import atexit
import functools
import heapq
import logging
import threading
import time

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nuonuo_core import _scan
from nuonuo_core.association import Association
from nuonuo_core.config import MemoryConfig
from nuonuo_core.filters import matches_filter
from nuonuo_core.functional import hopfield_settle
from nuonuo_core.lexical import COMMON_NOUN_SHARE, EntityIndex, LexicalIndex
from nuonuo_core.text import (
    STOPWORDS,
    entity_phrases,
    fold_word,
    lexical_terms,
    memory_subject,
    plain_words,
    words,
)
from nuonuo_core.types import Namespace

logger = logging.getLogger(__name__)

_INITIAL_CUE_CAPACITY = 64
_CUE_DTYPE = torch.float16
# Bound on the error of a half-precision cue score against float32: both unit
# vectors are rounded to 11 significant bits (at most 2 * 2**-11 * |q| |x|), and
# the product is rounded once more; with room to spare.
SCAN_ERROR = 2e-3

# Whether recall on the CPU scans the 8-bit copy of the cue rows
# (nuonuo_core._scan) instead of the half-precision rows: None until first
# asked, then whether Numba is there. Tests set it to compare both scans.
_QUANTIZED_SCAN: bool | None = None


def _quantized_scan() -> bool:
    global _QUANTIZED_SCAN
    if _QUANTIZED_SCAN is None:
        _QUANTIZED_SCAN = _scan.AVAILABLE
    return _QUANTIZED_SCAN


# The approximate first stage: product quantization with 4-bit codes, one
# sub-quantizer per two dimensions, searched with FAISS's fast-scan kernels,
# then the returned rows rescored exactly. It was chosen over HNSW by
# measurement (benchmarks.speed): on a million random unit vectors it reached
# recall@10 0.98 against exact search, with 1-hop recall in about 5 ms on two
# cores. HNSW with 16 links and ef 128 reached 0.02 there, and built about
# forty times slower.
_PQ_DIMS_PER_CODE = 2
# Rows the quantized scan returns per Hopfield candidate, to be rescored exactly.
_PQ_ROWS_PER_CANDIDATE = 16
# Rows the codebooks are trained on: every n-th cue row up to this many.
_PQ_TRAINING_ROWS = 65_536
# Below this many cue rows the exact scan is fast and the codebooks would be
# trained on too few rows, so no index is built.
_PQ_MIN_ROWS = 4_096
# Rows per faiss add call of a background build, so that an exiting process
# stops the build between two calls.
_ANN_BUILD_CHUNK = 65_536

# Background builds, stopped and waited for at exit: a daemon thread still
# inside faiss when the interpreter shuts down aborts the process.
_STOP_BUILDS = threading.Event()
_BUILDS: set[threading.Thread] = set()
_BUILDS_LOCK = threading.Lock()


def _stop_builds() -> None:
    _STOP_BUILDS.set()
    with _BUILDS_LOCK:
        threads = list(_BUILDS)
    for thread in threads:
        thread.join()


atexit.register(_stop_builds)

_warned_no_faiss = False


def _warn_no_faiss() -> None:
    global _warned_no_faiss
    if not _warned_no_faiss:
        _warned_no_faiss = True
        logger.warning(
            "faiss is not installed, so large namespaces are searched exactly, which is slow; "
            "install it with: pip install 'nuonuo[ann]'"
        )


def new_approximate_index(rows: np.ndarray) -> Any:
    """Return an empty FAISS fast-scan product-quantization index trained on ``rows``.

    Inner-product metric, 4-bit codes, one sub-quantizer per
    ``_PQ_DIMS_PER_CODE`` dimensions (per dimension when the dimension is odd).
    The codebooks learn from at most ``_PQ_TRAINING_ROWS`` rows spread evenly
    over ``rows``.

    Shape:
        rows: ``(n, dim)``, float32, C-contiguous.
    """
    import faiss

    dim = rows.shape[1]
    codes = dim // _PQ_DIMS_PER_CODE if dim % _PQ_DIMS_PER_CODE == 0 else dim
    index = faiss.IndexPQFastScan(dim, codes, 4, faiss.METRIC_INNER_PRODUCT)
    step = max(1, rows.shape[0] // _PQ_TRAINING_ROWS)
    index.train(np.ascontiguousarray(rows[::step][:_PQ_TRAINING_ROWS]))
    return index


@functools.lru_cache(maxsize=1 << 16)
def _name_words(name: str) -> tuple[str, ...]:
    """Return the folded content words of a name, folded as a query's words are."""
    return tuple(fold_word(w) for w in words(name) if w not in STOPWORDS)


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


@dataclass
class CueInfo:
    """Where a cue's text comes from: a span of the memory text, or its own text."""

    kind: str
    start: int | None = None
    end: int | None = None
    text: str | None = None

    def resolve(self, memory_text: str) -> str:
        """Return the cue text."""
        if self.text is not None:
            return self.text
        if self.start is not None and self.end is not None:
            return memory_text[self.start : self.end]
        return memory_text


@dataclass
class Entry:
    """What a partition keeps about one memory."""

    id: str
    rowid: int | None
    text: str
    metadata: dict[str, Any]
    timestamp: float | None
    created_at: float
    session: str | None
    content_hash: str
    cues: list[CueInfo]
    cue_rows: list[int] = field(default_factory=list)


@dataclass
class CueLayout:
    """Live memories and their cue rows, arranged for vectorised scoring."""

    slots: np.ndarray
    """Live slots, ascending."""
    text_rows: np.ndarray
    """Text cue row of each slot in ``slots``."""
    chunked: np.ndarray
    """Whether each slot in ``slots`` is a chunked long text."""
    extra_rows: np.ndarray
    """Rows of the other cues, grouped by memory."""
    group_starts: np.ndarray
    """Start of each memory's group in ``extra_rows``."""
    group_lengths: np.ndarray
    """Length of each group."""
    group_positions: np.ndarray
    """Position in ``slots`` of each group's memory."""
    slot_group_starts: np.ndarray
    """Start in ``extra_rows`` of each slot's group, indexed by slot."""
    slot_group_lengths: np.ndarray
    """Length of each slot's group, indexed by slot; 0 for a memory with only a text cue."""


@dataclass
class DirectHits:
    """Stage 1 of recall in one partition: every allowed memory's scores and the top ones."""

    slots: np.ndarray
    scores: np.ndarray
    similarity: np.ndarray
    rows: np.ndarray
    top: np.ndarray
    """Positions in ``slots`` of the candidates, best first."""
    allowed: np.ndarray | None
    query: torch.Tensor | None = None
    """The query vector the memories were scored by, where it differs from
    the one given (see ``MemoryConfig.subject_projection``)."""

    def top_scores(self) -> np.ndarray:
        """Scores of the candidates, best first."""
        return self.scores[self.top]


@dataclass(slots=True)
class Candidate:
    """A memory scored by recall inside one partition."""

    slot: int
    score: float
    """Activation: Hopfield attention for direct hits, spread attention for the others."""
    similarity: float
    """Cosine similarity of the memory's best cue to the query."""
    hops: int
    path: tuple[int, ...]
    cue_row: int


class Partition:
    """Cue vectors, association and lexical index of the memories of one namespace.

    Memories are addressed by slot; a deleted memory's slot is reused. Not
    thread-safe: :class:`~nuonuo_core.memory.AssociativeMemory` holds its lock
    around every call.
    """

    def __init__(self, namespace: Namespace, config: MemoryConfig, dim: int, device: torch.device) -> None:
        self.namespace = namespace
        self.config = config
        self.dim = dim
        self.device = device
        self.entries: list[Entry | None] = []
        self.free_slots: list[int] = []
        self.slot_of: dict[str, int] = {}
        self.slot_of_hash: dict[str, int] = {}
        self.last_in_session: dict[str, int] = {}
        # Half precision halves the bytes that every query scans; candidates near
        # the top are rescored in float32 (see direct_hits).
        self.cue_vectors = torch.zeros(_INITIAL_CUE_CAPACITY, dim, dtype=_CUE_DTYPE, device=device)
        self.cue_owner = np.full(_INITIAL_CUE_CAPACITY, -1, dtype=np.int64)
        # On the CPU the scan reads an 8-bit copy of the rows, half the bytes again.
        self.quantized = (
            _scan.QuantizedRows(dim, _INITIAL_CUE_CAPACITY) if device.type == "cpu" and _quantized_scan() else None
        )
        # Row of each slot's text cue (-1 for a free slot), and whether the
        # memory is split into chunks because the model reads only its beginning.
        self.text_row = np.full(0, -1, dtype=np.int64)
        self.chunked = np.zeros(0, dtype=bool)
        self._layout: CueLayout | None = None
        self._ann: Any = None
        self._ann_count = 0
        self._ann_generation = -1
        self._ann_building = False
        # Bumped whenever cue rows move, which invalidates the approximate index.
        self._generation = 0
        self.cue_count = 0
        self.dead_cues = 0
        self.association = Association(
            config.code_dim, config.k, {"explicit": config.links.explicit, "session": config.links.session}
        )
        self.lexical = LexicalIndex()
        self.entities = EntityIndex(common_noun_share=None if config.link_common_nouns else COMMON_NOUN_SHARE)
        # Query context of name links during one recall (MemoryConfig.bridge_names):
        # names the query contains, and the direct hits that bridge through less rare names.
        self._bridge_skip: frozenset[str] = frozenset()
        self._bridge_seeds: frozenset[int] = frozenset()
        # The hop gate of the recall in progress (recalls hold the memory's lock).
        self._gate_buffer = np.empty(0, dtype=np.float32)

    # ------------------------------------------------------------------ size

    def __len__(self) -> int:
        return len(self.slot_of)

    def live_slots(self) -> list[int]:
        """Slots of live memories in insertion order of their slots."""
        return [slot for slot, entry in enumerate(self.entries) if entry is not None]

    def nbytes(self) -> int:
        """Approximate bytes of tensors and arrays held by the partition."""
        return (
            self.cue_vectors.element_size() * self.cue_vectors.nelement()
            + self.cue_owner.nbytes
            + (self.quantized.nbytes if self.quantized is not None else 0)
            + self.association.nbytes()
        )

    # ------------------------------------------------------------------ writes

    def add(self, entry: Entry, vectors: np.ndarray, code: np.ndarray) -> int:
        """Store a memory whose cue vectors and code are already computed; returns its slot.

        Shape:
            vectors: ``(len(entry.cues), dim)``, float32 unit rows, text cue first.
            code: ``(k,)``, the memory's code.
        """
        slot = self.free_slots.pop() if self.free_slots else len(self.entries)
        if slot == len(self.entries):
            self.entries.append(entry)
        else:
            self.entries[slot] = entry
        self.slot_of[entry.id] = slot
        self.slot_of_hash.setdefault(entry.content_hash, slot)
        entry.cue_rows = self._append_cues(slot, vectors)
        self._set_text_rows([slot], [entry])
        self.association.set_codes(np.array([slot]), code[None, :])
        self._index_words(slot, entry)
        if entry.session is not None:
            self.last_in_session[entry.session] = slot
        return slot

    def add_many(self, entries: list[Entry], vectors: list[np.ndarray], codes: np.ndarray) -> list[int]:
        """Store several memories at once; the batch form of :meth:`add`."""
        slots = []
        for entry in entries:
            slot = self.free_slots.pop() if self.free_slots else len(self.entries)
            if slot == len(self.entries):
                self.entries.append(entry)
            else:
                self.entries[slot] = entry
            self.slot_of[entry.id] = slot
            self.slot_of_hash.setdefault(entry.content_hash, slot)
            slots.append(slot)
        all_vectors = np.concatenate(vectors) if vectors else np.zeros((0, self.dim), np.float32)
        owners = np.repeat(np.asarray(slots, dtype=np.int64), [v.shape[0] for v in vectors])
        rows = self._append_cue_rows(owners, all_vectors)
        start = 0
        for entry, block in zip(entries, vectors):
            entry.cue_rows = rows[start : start + block.shape[0]]
            start += block.shape[0]
        self._set_text_rows(slots, entries)
        self.association.set_codes(np.asarray(slots, dtype=np.int64), codes)
        for slot, entry in zip(slots, entries):
            self._index_words(slot, entry)
            if entry.session is not None:
                self.last_in_session[entry.session] = slot
        return slots

    def replace_content(self, slot: int, entry: Entry, vectors: np.ndarray, code: np.ndarray) -> None:
        """Swap the text, cues and code of a memory, keeping its slot and links."""
        old = self.entries[slot]
        assert old is not None
        self._kill_cues(old.cue_rows)
        self.entities.remove(slot, plain_words(old.text))
        if self.slot_of_hash.get(old.content_hash) == slot:
            del self.slot_of_hash[old.content_hash]
        self.entries[slot] = entry
        self.slot_of_hash.setdefault(entry.content_hash, slot)
        entry.cue_rows = self._append_cues(slot, vectors)
        self._set_text_rows([slot], [entry])
        self.association.set_codes(np.array([slot]), code[None, :])
        self._index_words(slot, entry)
        self.compact_if_sparse()

    def _set_text_rows(self, slots: list[int], entries: list[Entry]) -> None:
        self._layout = None
        if len(self.entries) > self.text_row.shape[0]:
            grown = np.full(max(len(self.entries), 2 * self.text_row.shape[0]), -1, dtype=np.int64)
            grown[: self.text_row.shape[0]] = self.text_row
            self.text_row = grown
            chunked = np.zeros(grown.shape[0], dtype=bool)
            chunked[: self.chunked.shape[0]] = self.chunked
            self.chunked = chunked
        for slot, entry in zip(slots, entries):
            self.text_row[slot] = entry.cue_rows[0]
            self.chunked[slot] = any(cue.kind == "chunk" for cue in entry.cues)

    def _index_words(self, slot: int, entry: Entry) -> None:
        self.association.forget_cached_links()
        names = entity_phrases(entry.text)
        self.lexical.add(slot, lexical_terms(entry.text, names))
        self.entities.add(slot, names, memory_subject(entry.text), plain_words(entry.text))

    def remove(self, slot: int) -> Entry:
        """Delete the memory in ``slot`` with its cues, code and links; returns its entry."""
        entry = self.entries[slot]
        assert entry is not None
        self._kill_cues(entry.cue_rows)
        self.association.kill(slot)
        self.lexical.remove(slot)
        self.entities.remove(slot, plain_words(entry.text))
        self.association.forget_cached_links()
        del self.slot_of[entry.id]
        if self.slot_of_hash.get(entry.content_hash) == slot:
            del self.slot_of_hash[entry.content_hash]
            # Another memory with the same text (deduplication off) takes over.
            for other, other_entry in enumerate(self.entries):
                if other != slot and other_entry is not None and other_entry.content_hash == entry.content_hash:
                    self.slot_of_hash[entry.content_hash] = other
                    break
        if entry.session is not None and self.last_in_session.get(entry.session) == slot:
            del self.last_in_session[entry.session]
        self.entries[slot] = None
        self.text_row[slot] = -1
        self._layout = None
        self.free_slots.append(slot)
        self.compact_if_sparse()
        return entry

    def compact_if_sparse(self) -> None:
        """Move live cue rows together once dead rows are the majority."""
        if self.dead_cues > max(1024, self.cue_count // 2):
            self._compact_cues()

    def _append_cues(self, slot: int, vectors: np.ndarray) -> list[int]:
        owners = np.full(vectors.shape[0], slot, dtype=np.int64)
        return self._append_cue_rows(owners, vectors)

    def _append_cue_rows(self, owners: np.ndarray, vectors: np.ndarray) -> list[int]:
        self._layout = None
        count = vectors.shape[0]
        needed = self.cue_count + count
        if needed > self.cue_vectors.shape[0]:
            capacity = max(needed, 2 * self.cue_vectors.shape[0])
            grown = torch.zeros(capacity, self.dim, dtype=_CUE_DTYPE, device=self.device)
            grown[: self.cue_count] = self.cue_vectors[: self.cue_count]
            self.cue_vectors = grown
            owner = np.full(capacity, -1, dtype=np.int64)
            owner[: self.cue_count] = self.cue_owner[: self.cue_count]
            self.cue_owner = owner
            if self.quantized is not None:
                self.quantized.grow(capacity, self.cue_count)
        start = self.cue_count
        self.cue_vectors[start:needed] = torch.from_numpy(vectors).to(self.device, _CUE_DTYPE)
        self.cue_owner[start:needed] = owners
        if self.quantized is not None:
            # Quantized from the stored half-precision rows, which rescoring reads.
            self.quantized.write(start, self.cue_vectors[start:needed].float().numpy())
        self.cue_count = needed
        return list(range(start, needed))

    def _kill_cues(self, rows: list[int]) -> None:
        self._layout = None
        for row in rows:
            self.cue_owner[row] = -1
            self.cue_vectors[row] = 0.0
        if self.quantized is not None:
            self.quantized.clear(rows)
        self.dead_cues += len(rows)

    def _compact_cues(self) -> None:
        self._layout = None
        # Rows move, so the approximate index is rebuilt on the next query.
        self._generation += 1
        keep = np.nonzero(self.cue_owner[: self.cue_count] >= 0)[0]
        new_row = np.full(self.cue_count, -1, dtype=np.int64)
        new_row[keep] = np.arange(keep.shape[0])
        self.cue_vectors[: keep.shape[0]] = self.cue_vectors[torch.from_numpy(keep).to(self.device)]
        self.cue_vectors[keep.shape[0] : self.cue_count] = 0.0
        self.cue_owner[: keep.shape[0]] = self.cue_owner[keep]
        self.cue_owner[keep.shape[0] : self.cue_count] = -1
        if self.quantized is not None:
            self.quantized.compact(keep, self.cue_count)
        self.cue_count = int(keep.shape[0])
        self.dead_cues = 0
        for slot, entry in enumerate(self.entries):
            if entry is not None:
                entry.cue_rows = [int(new_row[r]) for r in entry.cue_rows]
                self.text_row[slot] = entry.cue_rows[0]

    # ------------------------------------------------------------------ recall

    def memory_vectors(self, slots: list[int]) -> torch.Tensor:
        """Return the text-cue vector of each slot. Shape ``(len(slots), dim)``."""
        rows = [self.entries[s].cue_rows[0] for s in slots]  # type: ignore[union-attr]
        return self.cue_vectors[torch.tensor(rows, dtype=torch.long, device=self.device)].float()

    def direct_scores(
        self, query: torch.Tensor, query_words: list[str], allowed: np.ndarray | None, count: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Score every live memory against the query by its cues.

        Returns:
            ``(slots, scores, similarity, cue_rows, exact)`` of every live, allowed
            memory: the score used for ranking (text cue raised toward the best
            other cue, plus the weighted lexical score), the cosine of the best
            cue, and that cue's row; ``exact`` are the positions whose values were
            computed in float32, a superset of the top ``count``.
            Other positions hold the scanned values of :meth:`cue_scores`, and
            their row is the text cue's.
        """
        if self.cue_count - self.dead_cues >= self.config.ann_threshold and allowed is None:
            approximate = self._approximate_scores(query, query_words)
            if approximate is not None:
                return approximate
        layout = self._cue_layout()
        if layout.slots.size == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, np.zeros(0, np.float32), np.zeros(0, np.float32), empty, empty
        all_scores, scan_error = self.cue_scores(query)
        text_similarity = all_scores[layout.text_rows]
        similarity = text_similarity
        if layout.extra_rows.size:
            # The best of each memory's other cues, where it beats the text cue.
            group_max = np.maximum.reduceat(all_scores[layout.extra_rows], layout.group_starts)
            similarity = text_similarity.copy()
            positions = layout.group_positions
            similarity[positions] = np.maximum(similarity[positions], group_max)
        slots = layout.slots
        chunked = layout.chunked
        rows = layout.text_rows.copy()

        if allowed is not None:
            keep = allowed[slots]
            slots, similarity, rows = slots[keep], similarity[keep], rows[keep]
            text_similarity, chunked = text_similarity[keep], chunked[keep]

        # A memory scores by its text cue, raised part of the way toward its best
        # other cue: a matching sentence helps without outweighing the whole text.
        # A chunked text scores by its best chunk, since its text cue sees only
        # the beginning.
        if similarity is text_similarity:
            dense = text_similarity.copy()
        else:
            weight = np.where(chunked, np.float32(1.0), np.float32(self.config.sentence_cue_weight))
            dense = text_similarity + weight * np.maximum(np.float32(0.0), similarity - text_similarity)
        scores = dense
        if self.config.lexical_weight > 0 and query_words:
            lex_slots, lex_scores = self.lexical.score(query_words)
            if lex_scores.size:
                lexical = np.zeros(len(self.entries), dtype=np.float32)
                lexical[lex_slots] = lex_scores / lex_scores.max()
                scores = dense + np.float32(self.config.lexical_weight) * lexical[slots]
        if scores is dense:
            scores = dense.copy()
        if similarity is text_similarity:
            similarity = similarity.copy()
        exact = self._rescore_near_top(query, slots, scores, dense, similarity, rows, scan_error, count)
        return slots, scores, similarity, rows, exact

    def _rescore_near_top(
        self,
        query: torch.Tensor,
        slots: np.ndarray,
        scores: np.ndarray,
        dense: np.ndarray,
        similarity: np.ndarray,
        rows: np.ndarray,
        scan_error: float,
        count: int,
    ) -> np.ndarray:
        """Recompute in float32, in place, every memory that may rank among the candidates.

        Scanned cue scores are within ``scan_error`` of float32 ones, and a
        memory's score moves by at most that much, so every memory within twice
        that of the ``count``-th best is rescored; the top ``count`` are then
        exactly those of a float32 scan. Returns the rescored positions.
        """
        n = min(count, scores.shape[0])
        if n == 0:
            return np.empty(0, dtype=np.int64)
        # The n-th largest score. On 20K scores np.partition took a third of the
        # time of torch.topk on two threads (one timing on an AVX2 CPU).
        nth = float(np.partition(scores, scores.shape[0] - n)[scores.shape[0] - n])
        cutoff = nth - 2 * scan_error
        near = np.flatnonzero(scores >= cutoff)
        near_slots = slots[near]
        text_similarity, best, best_rows = self._best_cues(near_slots, query)
        weight = np.where(self.chunked[near_slots], np.float32(1.0), np.float32(self.config.sentence_cue_weight))
        lexical_part = scores[near] - dense[near]
        similarity[near] = best
        rows[near] = best_rows
        scores[near] = text_similarity + weight * np.maximum(np.float32(0.0), best - text_similarity) + lexical_part
        return near

    def _best_cues(self, slots: np.ndarray, query: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score every cue of the memories in ``slots`` in float32 and return, per memory,
        its text cue's similarity, its best cue's similarity and that cue's row.

        On a tie the first cue wins, and the text cue comes first.
        """
        layout = self._cue_layout()
        text_rows = self.text_row[slots]
        lengths = layout.slot_group_lengths[slots]
        total = int(lengths.sum())
        if total == 0:
            text_similarity = self.exact_cue_scores(text_rows, query)
            return text_similarity, text_similarity.copy(), text_rows.copy()
        # The other cues of every memory, one group after another.
        ends = np.cumsum(lengths)
        within = np.arange(total) - np.repeat(ends - lengths, lengths)
        extra_rows = layout.extra_rows[np.repeat(layout.slot_group_starts[slots], lengths) + within]
        exact = self.exact_cue_scores(np.concatenate((text_rows, extra_rows)), query)
        text_similarity, extra = exact[: slots.shape[0]], exact[slots.shape[0] :]
        grouped = np.flatnonzero(lengths)
        group_best = np.maximum.reduceat(extra, (ends - lengths)[grouped])
        # The first cue of each group that reaches the group's best.
        hits = np.flatnonzero(extra == np.repeat(group_best, lengths[grouped]))
        _, first = np.unique(np.repeat(grouped, lengths[grouped])[hits], return_index=True)
        best, best_rows = text_similarity.copy(), text_rows.copy()
        better = group_best > text_similarity[grouped]
        best[grouped[better]] = group_best[better]
        best_rows[grouped[better]] = extra_rows[hits[first]][better]
        return text_similarity, best, best_rows

    def _approximate_scores(
        self, query: torch.Tensor, query_words: list[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Stage 1 for a large namespace: candidates from a quantized index, scored exactly.

        The index returns the cue rows nearest to the query by their quantized
        codes. Their memories and the best lexical matches are then scored
        exactly, as :meth:`direct_scores` scores every memory. Returns ``None``
        (exact scan) when faiss is missing or the index is not ready.
        """
        index = self._approximate_index()
        if index is None:
            return None
        query_array = query.to("cpu").numpy().astype(np.float32)[None, :]
        # NOTE: sized for hopfield_candidates, not direct_candidates (40). The
        # rows usually cover many more memories than that, but this is not checked.
        row_count = _PQ_ROWS_PER_CANDIDATE * max(self.config.hopfield_candidates, 10)
        _, found = index.search(query_array, row_count)
        rows = found[0][found[0] >= 0]
        owners = self.cue_owner[rows]
        candidates = [owners[owners >= 0]]
        lexical = None
        if self.config.lexical_weight > 0 and query_words:
            lex_slots, lex_values = self.lexical.score(query_words)
            if lex_values.size:
                lexical = np.zeros(len(self.entries), dtype=np.float64)
                lexical[lex_slots] = lex_values / lex_values.max()
                best = min(self.config.hopfield_candidates, lex_values.shape[0])
                candidates.append(lex_slots[np.argpartition(-lex_values, best - 1)[:best]])
        slots = np.unique(np.concatenate(candidates))
        if slots.size == 0:
            return None

        text_similarity, similarity, best_rows = self._best_cues(slots, query)
        weight = np.where(self.chunked[slots], 1.0, self.config.sentence_cue_weight)
        scores = text_similarity + weight * np.maximum(0.0, similarity - text_similarity)
        if lexical is not None:
            scores = scores + self.config.lexical_weight * lexical[slots]
        return slots, scores, similarity, best_rows, np.arange(slots.shape[0])

    def _approximate_index(self) -> Any:
        """Return the quantized index over cue rows, brought up to date; ``None`` while it is not ready.

        The first call starts building the index in a background thread from the
        rows present then, and recall scans exactly until it is done; a build that
        finishes after the rows were moved by compaction is thrown away. Below
        ``_PQ_MIN_ROWS`` cue rows no index is built.
        """
        if self._ann is not None and self._ann_generation == self._generation:
            if self._ann_count < self.cue_count:
                # Rows added since: dead rows stay in the index, marked dead by their owner.
                new_rows = self.cue_vectors[self._ann_count : self.cue_count].to("cpu").float().numpy()
                self._ann.add(np.ascontiguousarray(new_rows, dtype=np.float32))
                self._ann_count = self.cue_count
            return self._ann
        if self._ann_building:
            return None
        try:
            import faiss
        except ImportError:
            _warn_no_faiss()
            return None
        count = self.cue_count
        if count < _PQ_MIN_ROWS:
            return None
        rows = np.ascontiguousarray(self.cue_vectors[:count].to("cpu").float().numpy(), dtype=np.float32)
        generation = self._generation
        self._ann_building = True

        def build() -> None:
            try:
                index = new_approximate_index(rows)
                # Added in chunks, so that a process that exits stops the build
                # between two of them instead of aborting inside faiss.
                for start in range(0, count, _ANN_BUILD_CHUNK):
                    if _STOP_BUILDS.is_set():
                        return
                    index.add(rows[start : start + _ANN_BUILD_CHUNK])
                self._ann, self._ann_count, self._ann_generation = index, count, generation
                logger.info("Built the approximate index of namespace %r over %d cues", self.namespace, count)
            except Exception:  # noqa: BLE001 - a failed build only means exact scans
                logger.exception("Building the approximate index of namespace %r failed", self.namespace)
            finally:
                self._ann_building = False
                with _BUILDS_LOCK:
                    _BUILDS.discard(threading.current_thread())

        thread = threading.Thread(target=build, name="nuonuo-ann", daemon=True)
        with _BUILDS_LOCK:
            _BUILDS.add(thread)
        thread.start()
        return None

    def build_approximate_index(self) -> None:
        """Build the approximate index now and wait for it; for benchmarks and warm-up."""
        self._approximate_index()
        while self._ann_building:
            time.sleep(0.01)

    def cue_scores(self, query: torch.Tensor) -> tuple[np.ndarray, float]:
        """Approximate cosine similarity of every cue row to the query, and its error bound.

        On the CPU the 8-bit copy of the rows is scanned (see
        :mod:`nuonuo_core._scan`), elsewhere the half-precision rows. Each score
        is within the returned bound of the float32 score of the stored row.

        Returns:
            ``(scores, bound)``; ``scores`` has shape ``(cue_count,)``, float32,
            and is valid until the next call.
        """
        if self.quantized is not None:
            return self.quantized.scan(query.numpy(), self.cue_count, torch.get_num_threads())
        with torch.no_grad():
            scores = torch.mv(self.cue_vectors[: self.cue_count], query.to(_CUE_DTYPE))
            return scores.to("cpu").float().numpy(), SCAN_ERROR

    def exact_cue_scores(self, rows: np.ndarray, query: torch.Tensor) -> np.ndarray:
        """Cosine similarity of the given cue rows to the query in float32. Shape ``(len(rows),)``."""
        with torch.no_grad():
            vectors = self.cue_vectors.index_select(0, torch.from_numpy(rows).to(self.device)).float()
            return (vectors @ query.float()).to("cpu").numpy()

    def _cue_layout(self) -> CueLayout:
        """Which cue rows belong to which memory, rebuilt after any change to the cues."""
        if self._layout is not None:
            return self._layout
        count = len(self.entries)
        slots = np.nonzero(self.text_row[:count] >= 0)[0]
        text_rows = self.text_row[slots]
        owners = self.cue_owner[: self.cue_count]
        rows = np.arange(self.cue_count)
        live = owners >= 0
        extra = rows[live & (self.text_row[np.maximum(owners, 0)] != rows)]
        order = np.argsort(owners[extra], kind="stable")
        extra_rows = extra[order]
        extra_owners = owners[extra_rows]
        if extra_rows.size:
            starts = np.flatnonzero(np.r_[True, extra_owners[1:] != extra_owners[:-1]])
            lengths = np.diff(np.r_[starts, extra_rows.size])
            positions = np.searchsorted(slots, extra_owners[starts])
        else:
            starts = lengths = positions = np.zeros(0, dtype=np.int64)
        slot_starts = np.zeros(count, dtype=np.int64)
        slot_lengths = np.zeros(count, dtype=np.int64)
        slot_starts[extra_owners[starts]] = starts
        slot_lengths[extra_owners[starts]] = lengths
        self._layout = CueLayout(
            slots, text_rows, self.chunked[slots], extra_rows, starts, lengths, positions, slot_starts, slot_lengths
        )
        return self._layout

    def allowed_mask(self, filter: dict[str, Any] | None) -> np.ndarray | None:
        """Boolean mask over slots of the memories that match ``filter``; ``None`` for no filter."""
        if not filter:
            return None
        mask = np.zeros(max(len(self.entries), 1), dtype=bool)
        for slot, entry in enumerate(self.entries):
            if entry is not None and matches_filter(entry.metadata, filter):
                mask[slot] = True
        return mask

    def direct_hits(
        self,
        query: torch.Tensor,
        query_words: list[str],
        k: int,
        filter: dict[str, Any] | None,
        scored_query: torch.Tensor | None = None,
    ) -> DirectHits | None:
        """Stage 1 of recall: score every allowed memory and keep the top candidates.

        Keeps the best ``direct_candidates`` (at least ``hopfield_candidates``
        and ``k``) whose best cue reaches ``min_score``, and returns ``None``
        when there are none.

        Args:
            scored_query: The unit vector to score the memories by, when it
                differs from ``query`` (see ``MemoryConfig.subject_projection``).
        """
        config = self.config
        allowed = self.allowed_mask(filter)
        candidate_count = config.ranked_candidates(k)
        if scored_query is not None:
            query = scored_query
        slots, scores, similarity, rows, exact = self.direct_scores(query, query_words, allowed, candidate_count)
        if slots.size == 0:
            return None
        n = min(candidate_count, slots.shape[0])
        # The top n are among the exactly scored positions.
        pool = exact
        if n < pool.shape[0]:
            top = pool[np.argpartition(-scores[pool], n - 1)[:n]]
        else:
            top = pool
        top = top[np.argsort(-scores[top], kind="stable")]
        top = top[similarity[top] >= config.min_score]
        if top.size == 0:
            return None
        return DirectHits(slots, scores, similarity, rows, top, allowed, scored_query)

    def recall(
        self,
        query: torch.Tensor,
        query_words: list[str],
        k: int,
        hops: int,
        filter: dict[str, Any] | None,
        hits: DirectHits | None = None,
        log_normalizer: float | None = None,
        scored_query: torch.Tensor | None = None,
    ) -> list[Candidate]:
        """Run the full recall inside this partition and return the best ``k`` candidates.

        Stage 1 (:meth:`direct_hits`) scores every memory by its cues and keeps
        the top candidates. Stage 2 gives each of them the softmax attention
        ``softmax(beta * score)`` of the query state, blended with the attention
        at the state the query settles to. With ``hops > 1`` the association then
        spreads that attention, hop by hop, to linked memories. Candidates are
        ranked by attention.

        Args:
            hits: Stage 1 already computed for this query, if any.
            log_normalizer: ``log(sum(exp(beta * score)))`` over the candidates of
                every namespace searched together, so that attention is shared
                among all of them; ``None`` normalises within this partition.
            scored_query: See :meth:`direct_hits`.
        """
        config = self.config
        if hits is None:
            hits = self.direct_hits(query, query_words, k, filter, scored_query)
        if hits is None:
            return []
        # Every similarity returned is to the query as given.
        given_query = query
        if hits.query is not None:
            query = hits.query
        slots, scores, similarity, rows, allowed = hits.slots, hits.scores, hits.similarity, hits.rows, hits.allowed
        top = hits.top
        cand_slots = slots[top]
        cand_scores = scores[top]
        cand_similarity = similarity[top]
        cand_rows = rows[top]

        # Stage 2: Hopfield attention of the query state, optionally blended with
        # the attention at the fixed point the query settles to.
        if log_normalizer is None:
            attention = _softmax(config.beta * cand_scores)
        else:
            attention = np.exp(config.beta * cand_scores - log_normalizer)
        if config.settle_weight > 0:
            patterns = self.cue_vectors[torch.from_numpy(cand_rows).to(self.device)].float()
            settled = hopfield_settle(
                query, patterns, config.beta, config.settle_steps_max, config.settle_eps
            )
            settled_attention = settled.attention.to("cpu").numpy().astype(np.float64)
            attention = (1 - config.settle_weight) * attention + config.settle_weight * settled_attention

        candidates = {
            int(s): Candidate(int(s), float(a), float(v), 0, (int(s),), int(r))
            for s, a, v, r in zip(cand_slots, attention, cand_similarity, cand_rows)
        }
        about = self._subjects_in_query(query_words)
        if hops <= 1 and about:
            subject_of = self.entities.subject_of
            for slot, candidate in candidates.items():
                if subject_of(slot) in about:
                    candidate.score *= config.subject_factor
        if hops > 1:
            # Only the first hopfield_candidates spread, so that asking for more
            # results does not change the scores of the first ones.
            seeds = {int(slot) for slot in cand_slots[: config.hopfield_candidates]}
            if config.bridge_names:
                self._bridge_skip = self._names_in_query(cand_slots, query_words)
                self._bridge_seeds = frozenset(int(s) for s in cand_slots[: config.bridge_seeds])
                try:
                    with self.association.query_context(self._bridge_affects):
                        self._spread(candidates, k, hops, allowed, slots, similarity, scores, seeds, about)
                finally:
                    self._bridge_skip = frozenset()
                    self._bridge_seeds = frozenset()
            else:
                self._spread(candidates, k, hops, allowed, slots, similarity, scores, seeds, about)
        ranked = list(candidates.values())
        if len(ranked) > k:
            # Only candidates that reach the k-th best score can rank; sorting
            # hundreds of them after many hops costs more than finding it.
            kth = heapq.nlargest(k, [c.score for c in ranked])[-1]
            ranked = [c for c in ranked if c.score >= kth]
        ranked.sort(key=lambda c: (-c.score, c.hops, c.slot))
        ranked = ranked[:k]
        # A memory reached only through links has the first stage's approximate
        # similarity, and with a changed query every memory has its similarity to
        # that query. The ones returned get their best cue's, to the query as given.
        stale = ranked if hits.query is not None else [c for c in ranked if c.hops > 0]
        if stale:
            _, best, _ = self._best_cues(np.array([c.slot for c in stale], dtype=np.int64), given_query)
            for candidate, value in zip(stale, best.tolist()):
                candidate.similarity = value
        return ranked

    def _subjects_in_query(self, query_words: list[str]) -> frozenset[str]:
        """Return the subjects (speakers, headings) that the query names; see
        ``MemoryConfig.subject_factor``."""
        if self.config.subject_factor == 1.0 or not query_words:
            return frozenset()
        return frozenset(self.entities.subjects_named(query_words))

    def _bridge_affects(self, slot: int) -> bool:
        """Return whether the query context of name links changes the links of
        ``slot``: true for a bridge seed and for a memory that mentions or is
        about a name of the query."""
        if slot in self._bridge_seeds:
            return True
        skip = self._bridge_skip
        if not skip:
            return False
        return self.entities.subject_of(slot) in skip or not skip.isdisjoint(self.entities.names_of(slot))

    def _names_in_query(self, slots: np.ndarray, query_words: list[str]) -> frozenset[str]:
        """Return the names mentioned by the memories in ``slots`` whose every word
        is among the query's words. The query finds their memories directly, so
        those names need not carry activation."""
        query_set = set(query_words)
        if not query_set:
            return frozenset()
        found = set()
        for slot in slots.tolist():
            for name in self.entities.names_of(slot):
                name_words = _name_words(name)
                if name_words and query_set.issuperset(name_words):
                    found.add(name)
        return frozenset(found)

    def _spread(
        self,
        candidates: dict[int, Candidate],
        k: int,
        hops: int,
        allowed: np.ndarray | None,
        scored_slots: np.ndarray,
        similarity: np.ndarray,
        scores: np.ndarray,
        seeds: set[int],
        about: frozenset[str] = frozenset(),
    ) -> None:
        """Spread the seeds' attention through the association, in place.

        The activation after ``hops - 1`` steps is the truncated series
        ``a = a0 + d S(a0) + d S(d S(a0)) + ...``, where ``a0`` is the attention of
        the direct hits, ``S`` one step of :meth:`Association.spread` and ``d`` is
        ``hop_decay``: a random walk with restart, cut after ``hops - 1`` steps.
        A memory's score is its total activation, so direct hits that are linked
        to other hits rise, and memories that no cue matched can enter. Its path is
        the route that carried the most activation to it in a single term. After
        each hop only the ``2 * hopfield_candidates`` strongest memories of the
        new term spread further. At the end the total of a memory about a subject
        in ``about`` (which the query names) is multiplied by
        ``subject_factor``. Only the memories whose total can rank among the
        best ``k`` get a candidate or an updated one.
        """
        decay = self.config.hop_decay
        beam = 2 * self.config.hopfield_candidates
        gate_beta = self.config.hop_gate
        # In place, in a buffer kept between recalls: over 20K scores this took
        # 37 µs against 64 µs with new arrays, in one timing on one core.
        if self._gate_buffer.shape[0] < scores.shape[0]:
            self._gate_buffer = np.empty(2 * scores.shape[0], dtype=np.float32)
        scored_gate = self._gate_buffer[: scores.shape[0]]
        np.subtract(scores, scores.max(), out=scored_gate)
        scored_gate *= np.float32(gate_beta)
        np.exp(scored_gate, out=scored_gate)
        if scored_slots.shape[0] == len(self.entries):
            # Every slot was scored, in order (scored slots ascend): no scatter needed.
            similarity_of, gate = similarity, scored_gate
        else:
            similarity_of = np.zeros(len(self.entries), dtype=np.float32)
            similarity_of[scored_slots] = similarity
            # With the approximate first stage only candidates were scored; the
            # others count as no better than the weakest candidate.
            floor = float(scored_gate.min()) if scored_slots.shape[0] < len(self) else 0.0
            gate = np.full(len(self.entries), floor, dtype=np.float32)
            gate[scored_slots] = scored_gate
        total = {slot: c.score for slot, c in candidates.items()}
        best = {slot: (c.score, c.path, 0) for slot, c in candidates.items()}
        term = {slot: c.score for slot, c in candidates.items() if c.score > 0 and slot in seeds}
        term_path = {slot: c.path for slot, c in candidates.items()}
        for hop in range(1, hops):
            if not term:
                break
            # A memory may not pass activation back along its own path.
            blocked = {slot: term_path[slot] for slot in term}
            step = self.association.spread(
                term,
                blocked=blocked,
                gate=gate if gate_beta > 0 else None,
                by_kind=self.config.spread_by_kind,
            )
            next_term: dict[int, float] = {}
            next_path: dict[int, tuple[int, ...]] = {}
            for slot, activation, source in zip(
                step.slots.tolist(), step.activation.tolist(), step.predecessor.tolist()
            ):
                if allowed is not None and not allowed[slot]:
                    continue
                mass = decay * activation
                if mass <= 0.0:
                    continue
                path = term_path[source] + (slot,)
                next_term[slot] = mass
                next_path[slot] = path
                total[slot] = total.get(slot, 0.0) + mass
                if mass > best.get(slot, (0.0, (), 0))[0]:
                    best[slot] = (mass, path, hop)
            if len(next_term) > beam:
                # Only the strongest memories spread on; the tail carries little
                # activation, and following it would cost a hop per memory.
                kept = sorted(next_term, key=next_term.__getitem__, reverse=True)[:beam]
                next_term = {slot: next_term[slot] for slot in kept}
            term, term_path = next_term, next_path

        if about:
            # A memory about a subject that the query names is likely what it looks for.
            factor = self.config.subject_factor
            subject_of = self.entities.subject_of
            for slot in total:
                if subject_of(slot) in about:
                    total[slot] *= factor
        if len(total) > k:
            # Only memories that reach the k-th best total can be returned; the
            # others keep their candidate, whose score is no higher than their total.
            kth = heapq.nlargest(k, total.values())[-1]
            total = {slot: score for slot, score in total.items() if score >= kth}
        reached = np.fromiter(total, dtype=np.int64, count=len(total))
        for slot, found_similarity in zip(reached.tolist(), similarity_of[reached].tolist()):
            _, path, hop = best[slot]
            origin = candidates[path[0]]
            candidates[slot] = Candidate(slot, total[slot], found_similarity, hop, path, origin.cue_row)

    def set_entity_links(
        self, weight: float, max_df: Callable[[int], int], word_weight: float = 0.0, bridge_df: int = 0
    ) -> None:
        """Link memories that share rare names or rare words, derived on demand
        from the entity and lexical indexes.

        ``bridge_df`` is the largest number of memories that may share a name
        for it to link a bridge seed (see ``MemoryConfig.bridge_names``)."""
        self.association.kind_weights["entity"] = weight

        def entity_neighbours(slot: int) -> dict[int, float]:
            if not self.entities.mentions_names(slot):
                return {}
            limit = max_df(len(self.entities))
            if slot in self._bridge_seeds:
                limit = max(limit, bridge_df)
            return self.entities.neighbours(slot, limit, self._bridge_skip)

        self.association.derived["entity"] = entity_neighbours
        if self.config.bridge_names:
            self.association.volatile.add("entity")
        self.association.kind_weights["word"] = word_weight
        self.association.derived["word"] = lambda slot: self.lexical.rare_neighbours(
            slot, max_df(len(self.lexical))
        )

