"""Which cues a memory gets: its text, the caller's paraphrases, sentences or chunks."""

from __future__ import annotations

from collections.abc import Iterable

from nuonuo_core.config import MemoryConfig
from nuonuo_core.partition import CueInfo
from nuonuo_core.text import chunk_spans, sentence_spans, word_count

# Sentences shorter than this many words are not worth a cue of their own.
_MIN_SENTENCE_WORDS = 3


def derive_cues(text: str, extra: list[str], config: MemoryConfig) -> tuple[list[CueInfo], list[str]]:
    """Return the cues of a memory and their texts, the text itself first.

    Then come the caller's extra cues, then either one cue per chunk of at most
    ``config.chunk_words`` words (for a text longer than that, so that its end can
    be found although the model reads only its beginning), or one cue per
    sentence of a text of several sentences (with ``config.sentence_cues``).
    """
    infos = [CueInfo("text")]
    texts = [text]
    for cue in extra:
        infos.append(CueInfo("user", text=cue))
        texts.append(cue)
    if word_count(text) > config.chunk_words:
        spans = chunk_spans(text, config.chunk_words)
        kind = "chunk"
    elif config.sentence_cues:
        spans = [s for s in sentence_spans(text) if word_count(text[s.start : s.end]) >= _MIN_SENTENCE_WORDS]
        if len(spans) < 2:
            spans = []
        kind = "sentence"
    else:
        spans = []
        kind = "sentence"
    for span in spans:
        piece = text[span.start : span.end]
        if piece != text:
            infos.append(CueInfo(kind, span.start, span.end))
            texts.append(piece)
    return infos, texts


def group_for_embedding(
    memories: Iterable[tuple[str, list[CueInfo], list[str]]], pools_spans: bool
) -> tuple[dict[str, list[tuple[int, int]]], list[str]]:
    """Split the cues of memories into what one pass per text embeds and what is embedded alone.

    Each memory is ``(text, cue infos, cue texts)``. With ``pools_spans`` (an
    embedder with ``encode_with_spans``), a text with sentence cues is embedded
    together with its sentences' spans.

    Returns:
        The texts embedded with their sentence spans, each mapped to its spans,
        and every other distinct cue text (text cues included), in first-seen order.
    """
    pooled: dict[str, list[tuple[int, int]]] = {}
    plain: dict[str, None] = {}
    for text, infos, cue_texts in memories:
        sentences = [(i.start, i.end) for i in infos if i.kind == "sentence"]
        if pools_spans and sentences:
            pooled.setdefault(text, sentences)  # type: ignore[arg-type]
        for info, cue in zip(infos, cue_texts):
            if text not in pooled or info.kind not in ("text", "sentence"):
                plain.setdefault(cue)
    return pooled, list(plain)
