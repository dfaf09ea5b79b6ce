"""The sentence-transformers embedder: span pooling, bfloat16 batches, and the memory's use of them."""

from __future__ import annotations

import numpy as np
import pytest

from nuonuo_core import AssociativeMemory, HashingEmbedder, MemoryConfig
from nuonuo_core.embedding import SentenceTransformerEmbedder
from nuonuo_core.errors import ConfigError

TEXTS = [
    "Caroline went to an LGBTQ support group yesterday. It moved her deeply. She now wants to work as a counselor.",
    "  Melanie painted a sunrise over the lake.   She also took her kids camping in the mountains.",
    "A single sentence without any split.",
]


def spans_of(text: str) -> list[tuple[int, int]]:
    """Sentence spans by full stops, for the test texts."""
    spans, start = [], len(text) - len(text.lstrip())
    for end in range(len(text)):
        if text[end] == ".":
            spans.append((start, end + 1))
            start = end + 2
            while start < len(text) and text[start] == " ":
                start += 1
    return spans


@pytest.fixture(scope="module")
def float_embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(backend="torch", bfloat16=False)


def test_span_pass_text_vectors_match_encode(float_embedder, real_embedder):
    spans = [spans_of(t) for t in TEXTS]
    for embedder in (float_embedder, real_embedder):
        vectors, _ = embedder.encode_with_spans(TEXTS, spans)
        plain = embedder.encode(TEXTS)
        assert np.allclose((vectors * plain).sum(axis=1), 1.0, atol=1e-4)


def test_span_vector_nearest_own_sentence(float_embedder):
    text = TEXTS[1]
    spans = spans_of(text)
    _, (pooled,) = float_embedder.encode_with_spans([text], [spans])
    alone = float_embedder.encode([text[a:b] for a, b in spans])
    similarity = pooled @ alone.T
    assert pooled.shape == (2, float_embedder.dim)
    assert np.allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)
    assert similarity[0, 0] > similarity[0, 1]
    assert similarity[1, 1] > similarity[1, 0]


def test_span_past_token_limit_embedded_alone(float_embedder):
    tail = "The very last sentence mentions a lighthouse."
    text = "word " * 400 + tail
    start = text.index(tail)
    _, (pooled,) = float_embedder.encode_with_spans([text], [[(start, len(text))]])
    alone = float_embedder.encode([tail])
    assert float(pooled[0] @ alone[0]) > 0.9999


def test_spans_must_match_texts(float_embedder):
    with pytest.raises(ValueError, match="one list per text"):
        float_embedder.encode_with_spans(TEXTS, [[]])


@pytest.mark.parametrize(
    ("spans", "error", "message"),
    [
        ([[(100, 200)]], ValueError, r"\(100, 200\) of text 0 must satisfy 0 <= start < end <= 24"),
        ([[(3, 3)]], ValueError, "must satisfy"),
        ([[(-5, -1)]], ValueError, "must satisfy"),
        ([[(3,)]], TypeError, r"pair of ints \(start, end\), got \(3,\)"),
        ([[("a", "b")]], TypeError, "pair of ints"),
        ([[(0.0, 5.5)]], TypeError, "pair of ints"),
        ([(0, 5)], TypeError, r"pair of ints \(start, end\), got 0"),
    ],
)
def test_bad_spans_named(float_embedder, spans, error, message):
    with pytest.raises(error, match=message):
        float_embedder.encode_with_spans(["Hello world. Second one."], spans)


@pytest.mark.parametrize("texts", ["hello", [123], [None], [b"bytes"]])
def test_bad_texts_named(float_embedder, texts):
    with pytest.raises(TypeError, match="must be a"):
        float_embedder.encode(texts)
    with pytest.raises(TypeError, match="must be a"):
        float_embedder.encode_with_spans(texts, [[]] * (1 if isinstance(texts, str) else len(texts)))


def test_bfloat16_must_be_bool():
    from nuonuo_core.errors import ConfigError

    with pytest.raises(ConfigError, match="bfloat16 must be True, False or None, got 'no'"):
        SentenceTransformerEmbedder(backend="torch", bfloat16="no")  # type: ignore[arg-type]


def test_unknown_model_named(monkeypatch):
    # Offline, so that the lookup fails at once instead of trying the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="no-such-owner/no-such-model"):
        SentenceTransformerEmbedder("no-such-owner/no-such-model")


def test_bfloat16_close_to_float32(float_embedder):
    fast = SentenceTransformerEmbedder(backend="torch", bfloat16=True)
    assert fast.bfloat16
    similarity = (fast.encode(TEXTS * 8) * float_embedder.encode(TEXTS * 8)).sum(axis=1)
    assert similarity.min() > 0.999


def test_onnx_backend_without_bfloat16(caplog):
    pytest.importorskip("onnxruntime")
    with caplog.at_level("WARNING", logger="nuonuo_core.embedding"):
        embedder = SentenceTransformerEmbedder(backend="onnx", bfloat16=True)
    assert "bfloat16=True is ignored" in caplog.text
    assert embedder.backend == "onnx"
    assert not embedder.bfloat16


def test_memory_stores_pooled_sentences(float_embedder):
    memory = AssociativeMemory(embedder=float_embedder, config=MemoryConfig(device="cpu"))
    memory_id = memory.add(TEXTS[0])
    partition = memory._partitions[()]
    entry = partition.entries[partition.slot_of[memory_id]]
    sentence_spans = [(c.start, c.end) for c in entry.cues if c.kind == "sentence"]
    assert len(sentence_spans) == 3
    vectors, (pooled,) = float_embedder.encode_with_spans([TEXTS[0]], [sentence_spans])
    stored = partition.cue_vectors[entry.cue_rows].float().numpy()
    assert np.allclose(stored[0], vectors[0], atol=2e-3)
    assert np.allclose(stored[1:], pooled, atol=2e-3)
    found = memory.recall("Who wants to become a counselor?", 1)
    assert found[0].id == memory_id


def test_plain_embedder_sentences_alone():
    embedder = HashingEmbedder()
    memory = AssociativeMemory(embedder=embedder, config=MemoryConfig(device="cpu"))
    memory_id = memory.add(TEXTS[0])
    partition = memory._partitions[()]
    entry = partition.entries[partition.slot_of[memory_id]]
    sentences = [TEXTS[0][c.start : c.end] for c in entry.cues if c.kind == "sentence"]
    stored = partition.cue_vectors[entry.cue_rows].float().numpy()
    assert np.allclose(stored[1:], embedder.encode(sentences), atol=2e-3)
