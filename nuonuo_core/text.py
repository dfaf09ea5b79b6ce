"""Text helpers: sentence and chunk cues, and word tokens for lexical matching."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# A sentence ends at ., ! or ? (possibly repeated, possibly followed by a closing
# quote or bracket) before white space, or at a line break; an initial such as
# the "W." of "Harris W. Fawell" does not end one.
_SENTENCE_END = re.compile(r"(?<![\s.][A-Z]\.)(?<=[.!?])[\"')\]]*\s+|\n+")
_WORD = re.compile(r"\w+", re.UNICODE)
# A token of a name or a plain word: letters, digits, apostrophes, hyphens and dots.
_TOKEN = re.compile(r"[\w'’\-.]+")

# Frequent English function words; they carry no lexical evidence.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been
    before being below between both but by can could did do does doing down during each
    few for from further had has have having he her here hers herself him himself his
    how i if in into is it its itself just me more most my myself no nor not now of off
    on once only or other our ours ourselves out over own same she should so some such
    than that the their theirs them themselves then there these they this those through
    to too under until up very was we were what when where which while who whom why will
    with would you your yours yourself yourselves s t d ll m re ve don didn doesn isn
    wasn weren won wouldn couldn shouldn hasn haven hadn aren also yes yeah oh hey hi
    really so ok okay""".split()
)


@dataclass(frozen=True)
class Span:
    """A part of a text, by character offsets."""

    start: int
    end: int


def normalize_text(text: str) -> str:
    """Return the text in Unicode NFC form with runs of white space folded, for hashing."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def sentence_spans(text: str) -> list[Span]:
    """Split a text into sentences; returns their spans, blank ones left out."""
    if not any(mark in text for mark in ".!?\n"):
        stripped = _strip(text, Span(0, len(text)))
        return [stripped] if stripped.start < stripped.end else []
    spans = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        spans.append(Span(start, match.start()))
        start = match.end()
    spans.append(Span(start, len(text)))
    return [_strip(text, span) for span in spans if text[span.start : span.end].strip()]


def _strip(text: str, span: Span) -> Span:
    start, end = span.start, span.end
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(start, end)


def word_count(text: str) -> int:
    """Number of white-space separated words."""
    return len(text.split())


def chunk_spans(text: str, max_words: int) -> list[Span]:
    """Group consecutive sentences into chunks of at most ``max_words`` words.

    A single sentence longer than ``max_words`` is cut at word boundaries.
    """
    chunks: list[Span] = []
    current: Span | None = None
    current_words = 0
    for sentence in sentence_spans(text):
        for piece in _cut_long(text, sentence, max_words):
            words = word_count(text[piece.start : piece.end])
            if current is not None and current_words + words <= max_words:
                current = Span(current.start, piece.end)
                current_words += words
            else:
                if current is not None:
                    chunks.append(current)
                current, current_words = piece, words
    if current is not None:
        chunks.append(current)
    return chunks


def _cut_long(text: str, span: Span, max_words: int) -> list[Span]:
    words = list(re.finditer(r"\S+", text[span.start : span.end]))
    if len(words) <= max_words:
        return [span]
    pieces = []
    for first in range(0, len(words), max_words):
        last = min(first + max_words, len(words)) - 1
        pieces.append(Span(span.start + words[first].start(), span.start + words[last].end()))
    return pieces


def words(text: str) -> list[str]:
    """Lower-cased word tokens of a text, in order, stopwords included."""
    return [w.lower() for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """Lower-cased word tokens without stopwords, with a light plural/suffix folding."""
    return [fold_word(w) for w in words(text) if w not in STOPWORDS]


def fold_word(word: str) -> str:
    """Fold common English inflections so that "parks", "parked" and "park" match.

    Only strips ``-s``, ``-es``, ``-ed`` and ``-ing`` from words of five letters or
    more, so it never turns two unrelated short words into one.
    """
    if len(word) < 5 or not word.isalpha():
        return word
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            stem = word[: -len(suffix)]
            if suffix == "s" and stem.endswith("s"):
                return word
            return stem
    return word


# Lower-case words that may sit inside a name: "Bank of England", "Charles de Gaulle".
_NAME_JOINERS = frozenset({"of", "de", "du", "la", "le", "von", "van", "der", "den", "da", "di", "del", "and", "the", "y"})


def entity_phrases(text: str) -> set[str]:
    """Return the names a text mentions, lower-cased.

    A name is a run of capitalised words, possibly joined by words such as "of"
    or "de" ("Journal of Psychotherapy Integration", "G. Stanley Hall"); every
    contiguous run of two or more of its words is returned too, and so are its
    single words that are not stopwords. A capitalised stopword that opens a
    sentence ("The", "When") is not a name.
    """
    names: set[str] = set()
    for sentence in sentence_spans(text):
        tokens = _TOKEN.findall(text, sentence.start, sentence.end)
        run: list[str] = []
        for position, token in enumerate(tokens + [""]):
            clean = token.strip(".'’-")
            # Capitalised stopwords ("The", "I", "When") are not part of a name.
            is_name = bool(clean) and clean[0].isupper() and clean.lower() not in STOPWORDS
            if is_name:
                run.append(clean.lower())
                continue
            if run and clean.lower() in _NAME_JOINERS and position + 1 < len(tokens):
                following = tokens[position + 1].strip(".'’-")
                if following and following[0].isupper():
                    run.append(clean.lower())
                    continue
            _add_name(run, names)
            run = []
    return names


def _add_name(run: list[str], names: set[str]) -> None:
    while run and run[-1] in _NAME_JOINERS:
        run = run[:-1]
    if not run:
        return
    for start in range(len(run)):
        for end in range(start + 1, len(run) + 1):
            words_in = run[start:end]
            if words_in[0] in _NAME_JOINERS or words_in[-1] in _NAME_JOINERS:
                continue
            if len(words_in) == 1 and (words_in[0] in STOPWORDS or len(words_in[0]) < 2):
                continue
            names.add(" ".join(words_in))


def plain_words(text: str) -> set[str]:
    """Return the words that a text writes in lower case, other than stopwords.

    A capitalised word that memories also write in lower case ("river" beside
    "Tikhaya Sosna River") is a common noun, not a name on its own; see
    :meth:`~nuonuo_core.lexical.EntityIndex.neighbours`.
    """
    found = set()
    for token in _TOKEN.findall(text):
        clean = token.strip(".'’-")
        if clean and clean[0].islower() and clean not in STOPWORDS:
            found.add(clean.lower())
    return found


_SPEAKER = re.compile(r"^\s*([A-Z][\w'’\-]*(?: [A-Z][\w'’\-]*){0,2})\s*:\s+\S")


def memory_subject(text: str) -> str | None:
    """Return who or what a memory is about, lower-cased, or ``None``.

    For a turn of dialogue written ``"Speaker: text"`` it is the speaker; for a
    titled text it is the heading (see :func:`heading_subject`).
    """
    match = _SPEAKER.match(text)
    if match:
        return match.group(1).lower()
    return heading_subject(text)


def heading_subject(text: str, max_words: int = 12) -> str | None:
    """Return what a titled text is about: its first line, when that line is a short heading.

    A text has a heading when its first line has at most ``max_words`` words and
    more lines follow ("Kassel\\nKassel is a city..."). A trailing qualifier in
    brackets or after a comma is dropped ("Brother (Pearl Jam song)" gives
    "brother", "West Chicago, Illinois" gives "west chicago"). Returns the
    subject lower-cased with punctuation removed, or ``None``.
    """
    first, newline, rest = text.partition("\n")
    if not newline or not rest.strip():
        return None
    heading = first.strip()
    if not heading or len(heading.split()) > max_words:
        return None
    heading = re.sub(r"\s*\(.*?\)\s*$", "", heading)
    heading = heading.split(",")[0]
    subject = " ".join(w.lower() for w in re.findall(r"[\w'’\-.]+", heading)).strip(".'’- ")
    subject = " ".join(w.strip(".'’-") for w in subject.split())
    return subject or None


def lexical_terms(text: str, names: set[str] | None = None) -> list[str]:
    """Terms of a text for lexical matching: its content words, then each name of
    two or more words as one term ("west chicago"), so that a shared name counts
    more than its words apart. ``names`` are the text's :func:`entity_phrases`,
    if already known."""
    terms = content_words(text)
    if names is None:
        names = entity_phrases(text)
    terms.extend(sorted(name for name in names if " " in name))
    return terms
