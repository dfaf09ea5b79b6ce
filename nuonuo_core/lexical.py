"""An incremental BM25 index over the words of memories, by slot."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import numpy as np

from nuonuo_core.text import content_words

# Standard BM25 constants (Robertson and Zaragoza, 2009).
BM25_K1 = 1.2
BM25_B = 0.75

# Maximum number of memories that may mention a subject, or be about it, for the
# subject to still link them, in a namespace of any size. A subject of hundreds of
# memories does not tell them apart, and linking them all makes a hop cost that many lookups.
SUBJECT_LINK_CAP = 50

# A one-word name is a common noun when at least this many memories write it in
# lower case for every memory that mentions it capitalised ("river", "district",
# "oblast"). Measured on the quality benchmark: 0 to 0.25 gave the same
# recall, and 0.5 let "oblast" link the rivers and districts of unrelated regions.
# NOTE: chosen on two English data sets with well-cased text. In chat typed in
# lower case, one-word names may stop linking sooner than they should.
COMMON_NOUN_SHARE = 0.25


class LexicalIndex:
    """Word postings of the memories of one namespace.

    Scores follow Okapi BM25 with ``idf = log(1 + (n - df + 0.5) / (df + 0.5))``.
    The same postings give the rare words that link memories (see
    :meth:`rare_neighbours`). Not thread-safe; its owner serialises access.
    """

    def __init__(self) -> None:
        self._postings: dict[str, dict[int, int]] = {}
        self._terms: dict[int, Counter[str]] = {}
        # Token count of each slot, an array so that whole postings score at once.
        self._length_of = np.zeros(64, dtype=np.float64)
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._terms)

    def add(self, slot: int, tokens: list[str]) -> None:
        """Index the tokens of ``slot``, replacing what it had."""
        self.remove(slot)
        counts = Counter(tokens)
        self._terms[slot] = counts
        if slot >= self._length_of.shape[0]:
            grown = np.zeros(max(2 * self._length_of.shape[0], slot + 1), dtype=np.float64)
            grown[: self._length_of.shape[0]] = self._length_of
            self._length_of = grown
        self._length_of[slot] = len(tokens)
        self._total_length += len(tokens)
        for term, count in counts.items():
            self._postings.setdefault(term, {})[slot] = count

    def remove(self, slot: int) -> None:
        """Drop ``slot`` from the index; nothing happens if it is not there."""
        counts = self._terms.pop(slot, None)
        if counts is None:
            return
        self._total_length -= int(self._length_of[slot])
        self._length_of[slot] = 0
        for term in counts:
            posting = self._postings[term]
            posting.pop(slot, None)
            if not posting:
                del self._postings[term]

    def document_frequency(self, term: str) -> int:
        """Number of memories that contain ``term``."""
        return len(self._postings.get(term, ()))

    def idf(self, term: str) -> float:
        """BM25 inverse document frequency of ``term``."""
        df = self.document_frequency(term)
        n = len(self._terms)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def score(self, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Score every memory that shares a word with the query.

        Returns:
            ``(slots, scores)``, int64 and float64, unordered.
        """
        n = len(self._terms)
        if n == 0 or not tokens:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        average_length = self._total_length / n
        found_slots: list[np.ndarray] = []
        found_scores: list[np.ndarray] = []
        for term in set(tokens):
            posting = self._postings.get(term)
            if not posting:
                continue
            slots = np.fromiter(posting.keys(), dtype=np.int64, count=len(posting))
            tf = np.fromiter(posting.values(), dtype=np.float64, count=len(posting))
            norm = tf + BM25_K1 * (1 - BM25_B + BM25_B * self._length_of[slots] / average_length)
            found_slots.append(slots)
            found_scores.append(self.idf(term) * tf * (BM25_K1 + 1) / norm)
        if not found_slots:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        if len(found_slots) == 1:
            return found_slots[0], found_scores[0]
        # Sum each memory's terms: a dense sum over slots, then the slots touched.
        slots = np.concatenate(found_slots)
        totals = np.bincount(slots, weights=np.concatenate(found_scores))
        touched = np.flatnonzero(np.bincount(slots))
        return touched, totals[touched]

    def rare_neighbours(self, slot: int, max_df: int) -> dict[int, float]:
        """Memories that share a rare word with ``slot``, weighted by the words' idf.

        A word is rare when at most ``max_df`` memories contain it.
        """
        counts = self._terms.get(slot)
        if not counts:
            return {}
        neighbours: dict[int, float] = {}
        for term in counts:
            posting = self._postings[term]
            if len(posting) < 2 or len(posting) > max_df:
                continue
            weight = self.idf(term)
            for other in posting:
                if other != slot:
                    neighbours[other] = neighbours.get(other, 0.0) + weight
        return neighbours


class EntityIndex:
    """Which memories mention which names, for linking memories that share a rare name.

    Not thread-safe; its owner serialises access.
    """

    def __init__(
        self, subject_weight: float = 10.0, common_noun_share: float | None = COMMON_NOUN_SHARE
    ) -> None:
        """Create an empty index. ``common_noun_share`` is described at
        :data:`COMMON_NOUN_SHARE`, and ``None`` lets every one-word name link."""
        self.subject_weight = subject_weight
        self.common_noun_share = common_noun_share
        self._postings: dict[str, set[int]] = {}
        self._names: dict[int, set[str]] = {}
        self._subject_of: dict[int, str] = {}
        self._about: dict[str, set[int]] = {}
        # Content word -> the subjects with that word, each with all its words.
        self._subjects_by_word: dict[str, dict[str, frozenset[str]]] = {}
        # Word -> number of memories that write it in lower case.
        self._plain_uses: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._names)

    def subjects_named(self, query_words: list[str] | set[str]) -> set[str]:
        """Return the subjects (see :meth:`subject_of`) whose every content word,
        folded as :func:`~nuonuo_core.text.content_words` folds them, is among
        ``query_words``. A subject without content words is never named."""
        query_set = set(query_words)
        found: set[str] = set()
        for word in query_set:
            for subject, subject_words in self._subjects_by_word.get(word, {}).items():
                if subject not in found and subject_words <= query_set:
                    found.add(subject)
        return found

    def about_count(self, subject: str) -> int:
        """Return the number of memories about ``subject``."""
        return len(self._about.get(subject, ()))

    @classmethod
    def commonness(cls, df: int, n: int) -> float:
        """Return how little naming a subject that ``df`` of ``n`` memories are
        about separates them: 0 for a subject of one memory, rising toward 1 as
        more of the memories are about it.

        It is ``1 - idf(df) / idf(1)``, with the idf of :meth:`neighbours`."""
        if df == 0 or n == 0:
            return 0.0
        return max(0.0, 1.0 - cls._idf(df, n) / cls._idf(1, n))

    def add(
        self, slot: int, names: set[str], subject: str | None = None, plain: Iterable[str] = ()
    ) -> None:
        """Index the names of ``slot``, what it is about and the words it writes in
        lower case (:func:`~nuonuo_core.text.plain_words`), replacing its names and
        subject. The plain words of a text that ``slot`` had must be dropped with
        :meth:`remove` first."""
        self.remove(slot)
        for word in plain:
            self._plain_uses[word] = self._plain_uses.get(word, 0) + 1
        self._names[slot] = set(names)
        for name in names:
            self._postings.setdefault(name, set()).add(slot)
        if subject:
            self._subject_of[slot] = subject
            if subject not in self._about:
                subject_words = frozenset(content_words(subject))
                for word in subject_words:
                    self._subjects_by_word.setdefault(word, {})[subject] = subject_words
            self._about.setdefault(subject, set()).add(slot)

    def remove(self, slot: int, plain: Iterable[str] = ()) -> None:
        """Drop ``slot`` and the plain words of its text, ``plain``, as passed to
        :meth:`add`. Nothing happens when ``slot`` is not indexed."""
        for word in plain:
            left = self._plain_uses.get(word, 0) - 1
            if left > 0:
                self._plain_uses[word] = left
            else:
                self._plain_uses.pop(word, None)
        for name in self._names.pop(slot, ()):
            posting = self._postings[name]
            posting.discard(slot)
            if not posting:
                del self._postings[name]
        subject = self._subject_of.pop(slot, None)
        if subject is not None:
            about = self._about[subject]
            about.discard(slot)
            if not about:
                del self._about[subject]
                for word in content_words(subject):
                    by_word = self._subjects_by_word.get(word)
                    if by_word is not None:
                        by_word.pop(subject, None)
                        if not by_word:
                            del self._subjects_by_word[word]

    def subject_of(self, slot: int) -> str | None:
        """Return the subject of ``slot`` (see :func:`~nuonuo_core.text.memory_subject`), or ``None``."""
        return self._subject_of.get(slot)

    def names_of(self, slot: int) -> set[str]:
        """Return the names ``slot`` mentions; callers must not modify the result."""
        return self._names.get(slot, set())

    def mentions_names(self, slot: int) -> bool:
        """Return whether ``slot`` mentions any name."""
        return bool(self._names.get(slot))

    def neighbours(
        self, slot: int, max_df: int, skip: frozenset[str] | set[str] = frozenset()
    ) -> dict[int, float]:
        """Memories that share a rare name with ``slot``, weighted by the names' idf.

        A name is rare when at most ``max_df`` memories mention it. When a name
        and a longer name containing it link the same pair, both count. A one-word
        name that is a common noun (see :data:`COMMON_NOUN_SHARE`) links nothing
        as a shared name. Names in ``skip`` link nothing, neither as shared names
        nor as subjects.
        """
        names = self._names.get(slot)
        if not names:
            return {}
        n = len(self._names)
        neighbours: dict[int, float] = {}
        for name in names:
            if name in skip:
                continue
            posting = self._postings[name]
            df = len(posting)
            if 2 <= df <= max_df and not self.is_common_noun(name, df):
                weight = self._idf(df, n)
                for other in posting:
                    if other != slot:
                        neighbours[other] = neighbours.get(other, 0.0) + weight
            # A memory that mentions what another memory is about links to it,
            # unless many memories are about it (the speaker of a conversation).
            about = self._about.get(name)
            if about and len(posting) <= self.subject_limit(n) and len(about) <= self.subject_limit(n):
                weight = self.subject_weight * self._idf(len(posting), n)
                for other in about:
                    if other != slot:
                        neighbours[other] = neighbours.get(other, 0.0) + weight
        # ...and the link runs both ways: memories that mention this one's subject.
        subject = self._subject_of.get(slot)
        if subject is not None and subject not in skip and len(self._about[subject]) <= self.subject_limit(n):
            posting = self._postings.get(subject, set())
            if len(posting) <= self.subject_limit(n):
                weight = self.subject_weight * self._idf(len(posting), n)
                for other in posting:
                    if other != slot:
                        neighbours[other] = neighbours.get(other, 0.0) + weight
        return neighbours

    def is_common_noun(self, name: str, df: int) -> bool:
        """Return whether ``name``, mentioned capitalised by ``df`` memories, is a
        single word that the memories also write in lower case often enough to be
        a common noun (see :data:`COMMON_NOUN_SHARE`). Always false when
        ``common_noun_share`` is ``None``."""
        if self.common_noun_share is None or " " in name:
            return False
        uses = self._plain_uses.get(name, 0)
        return uses > 0 and uses >= self.common_noun_share * df

    @staticmethod
    def subject_limit(count: int) -> int:
        """How many memories may mention a subject for mentions of it to still link."""
        return max(2, min(SUBJECT_LINK_CAP, count // 50))

    @staticmethod
    def _idf(df: int, n: int) -> float:
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))
