"""Bad and unusual input: clear errors, nothing stored or lost, exact round trips."""

from __future__ import annotations

import asyncio
import random
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.common import CachingEmbedder
from nuonuo_core import (
    AssociativeMemory,
    EmbeddingError,
    HashingEmbedder,
    InvalidInputError,
    MemoryConfig,
    MemoryItem,
)
from nuonuo_core.errors import ConfigError, InvalidTypeError, NamespaceTypeError

SMALL = MemoryConfig(code_dim=2048, k=16, device="cpu")


def new_memory(path: Path | None = None, embedder=None) -> AssociativeMemory:
    return AssociativeMemory(path, config=SMALL, embedder=embedder if embedder is not None else HashingEmbedder(dim=64))


class AsyncCalls:
    """The memory's async twins, called through ``asyncio.run`` with the sync signatures."""

    def __init__(self, memory: AssociativeMemory) -> None:
        self.memory = memory

    def __getattr__(self, name: str):
        twin = getattr(self.memory, "a" + name)
        return lambda *args, **kwargs: asyncio.run(twin(*args, **kwargs))


def calls(memory: AssociativeMemory, mode: str):
    """The memory itself for ``"sync"``, its async twins for ``"async"``."""
    return AsyncCalls(memory) if mode == "async" else memory


def state(memory: AssociativeMemory) -> list[tuple]:
    """Everything a caller can read back, to show a failed call changed nothing."""
    return [
        (r.id, r.text, r.namespace, r.metadata, r.cues, tuple(sorted(memory.links(r.id))))
        for ns in memory.namespaces()
        for r in memory.list(ns)
    ]


@pytest.fixture
def stocked():
    """A memory with linked memories in it; bad input must leave them as they are."""
    memory = new_memory()
    first = memory.add("the kept memory", metadata={"n": 1}, session="s")
    memory.add("the other kept memory", namespace="other", session="s")
    memory.add("a second kept memory", session="s")
    return memory, first


# ---------------------------------------------------------------------- blank text and query


BLANKS = ["", " ", "\n\t ", "\u3000"]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("blank", BLANKS, ids=repr)
def test_blank_text_rejected(stocked, mode, blank):
    memory, first = stocked
    api = calls(memory, mode)
    before = state(memory)

    with pytest.raises(InvalidInputError, match="text must not be empty or blank"):
        api.add(blank)
    with pytest.raises(InvalidInputError, match="item 1: text must not be empty or blank"):
        api.add_many(["fine", blank])
    with pytest.raises(InvalidInputError, match="text must not be empty or blank"):
        api.update(first, blank)
    with pytest.raises(InvalidInputError, match=r"cues\[0\] must not be empty or blank"):
        api.add("fine text", cues=[blank])

    assert state(memory) == before


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("blank", BLANKS, ids=repr)
def test_blank_query_returns_nothing(stocked, mode, blank):
    memory, _ = stocked
    assert calls(memory, mode).recall(blank, k=5, hops=2) == []


def test_blank_query_documented():
    doc = AssociativeMemory.recall.__doc__
    assert "An empty or blank query returns ``[]``" in doc


# ---------------------------------------------------------------------- wrong types


def existing(memory: AssociativeMemory) -> str:
    return memory.list()[0].id


BAD_VALUES = [None, b"bytes", 42, 3.5]
# Where None is documented to mean "not given", only the other types are bad.
NOT_NONE = BAD_VALUES[1:]

# Each call passes the bad value in one place, with the values that are bad there.
TYPE_CASES = {
    "text of add": (lambda api, m, bad: api.add(bad), BAD_VALUES),
    "text of add_many": (lambda api, m, bad: api.add_many(["fine", bad]), BAD_VALUES),
    "text of MemoryItem": (lambda api, m, bad: api.add_many([MemoryItem(text=bad)]), BAD_VALUES),
    "text of update": (lambda api, m, bad: api.update(existing(m), bad), NOT_NONE),
    "query": (lambda api, m, bad: api.recall(bad), BAD_VALUES),
    "id of add": (lambda api, m, bad: api.add("fine", id=bad), NOT_NONE),
    "id of get": (lambda api, m, bad: api.get(bad), BAD_VALUES),
    "id of update": (lambda api, m, bad: api.update(bad, "new text"), BAD_VALUES),
    "id of delete": (lambda api, m, bad: api.delete(bad), BAD_VALUES),
    "id of associate": (lambda api, m, bad: api.associate(existing(m), bad), BAD_VALUES),
    "namespace of add": (lambda api, m, bad: api.add("fine", namespace=bad), BAD_VALUES),
    "namespace label of add": (lambda api, m, bad: api.add("fine", namespace=("ok", bad)), BAD_VALUES),
    "namespace label of add_many": (lambda api, m, bad: api.add_many(["fine"], namespace=(bad,)), BAD_VALUES),
    "namespace label of recall": (lambda api, m, bad: api.recall("kept", namespace=("ok", bad)), BAD_VALUES),
    "namespace label of delete_namespace": (lambda api, m, bad: api.delete_namespace((bad,)), BAD_VALUES),
    "metadata of add": (lambda api, m, bad: api.add("fine", metadata=bad), NOT_NONE),
    "metadata of update": (lambda api, m, bad: api.update(existing(m), metadata=bad), NOT_NONE),
    "metadata value": (lambda api, m, bad: api.add("fine", metadata={"ok": 1, "bad": [bad]}), [b"bytes", object()]),
    "cues of add": (lambda api, m, bad: api.add("fine", cues=bad), BAD_VALUES),
    "cue of add": (lambda api, m, bad: api.add("fine", cues=["ok", bad]), BAD_VALUES),
    "cues of update": (lambda api, m, bad: api.update(existing(m), cues=bad), NOT_NONE),
    "cue of update": (lambda api, m, bad: api.update(existing(m), cues=[bad]), BAD_VALUES),
    "session of add": (lambda api, m, bad: api.add("fine", session=bad), NOT_NONE),
    "session of add_many": (lambda api, m, bad: api.add_many(["fine"], session=bad), NOT_NONE),
    "session of item": (lambda api, m, bad: api.add_many([{"text": "fine", "session": bad}]), NOT_NONE),
}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("case", list(TYPE_CASES))
def test_wrong_type_names_type(stocked, mode, case):
    memory, _ = stocked
    call, bad_values = TYPE_CASES[case]
    before = state(memory)

    for bad in bad_values:
        with pytest.raises(TypeError, match=type(bad).__name__) as raised:
            call(calls(memory, mode), memory, bad)
        if "metadata value" not in case:
            assert "must be" in str(raised.value)

    assert state(memory) == before


def test_namespace_type_error_is_both_kinds():
    memory = new_memory()
    with pytest.raises(NamespaceTypeError) as raised:
        memory.add("fine", namespace=None)  # type: ignore[arg-type]
    assert isinstance(raised.value, TypeError)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_unpaired_surrogates_rejected(stocked, mode):
    memory, first = stocked
    api = calls(memory, mode)
    before = state(memory)
    bad = "broken \ud800 text"

    for call in (
        lambda: api.add(bad),
        lambda: api.add("fine", id=bad),
        lambda: api.add("fine", metadata={"note": bad}),
        lambda: api.add("fine", namespace=bad),
        lambda: api.add("fine", session=bad),
        lambda: api.add("fine", cues=[bad]),
        lambda: api.update(first, bad),
        lambda: api.recall(bad),
    ):
        with pytest.raises(InvalidInputError, match="unpaired surrogate"):
            call()

    assert state(memory) == before


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_other_bad_arguments(stocked, mode):
    memory, first = stocked
    api = calls(memory, mode)
    before = state(memory)

    with pytest.raises(InvalidInputError, match="must be JSON|cannot be stored as JSON"):
        api.add("fine", metadata={"score": float("nan")})
    with pytest.raises(TypeError, match="metadata keys must be strings"):
        api.add("fine", metadata={1: "one"})
    with pytest.raises(TypeError, match="single str"):
        api.update(first, cues="one cue")
    with pytest.raises(TypeError, match="filter must be a mapping"):
        api.recall("kept", filter="n == 1")
    with pytest.raises(InvalidInputError, match=r"unknown filter operator '\$regex'.*valid: \$eq"):
        api.recall("kept", filter={"n": {"$regex": "1"}})
    second = next(r.id for r in memory.list() if r.id != first)
    with pytest.raises(InvalidInputError, match="weight must be a positive finite number"):
        api.associate(first, second, float("inf"))
    with pytest.raises(InvalidInputError, match="cannot link memory .* to itself"):
        api.associate(first, first)
    with pytest.raises(InvalidInputError, match="appears twice in one batch"):
        api.add_many([{"text": "a", "id": "x"}, {"text": "b", "id": "x"}])
    with pytest.raises(InvalidInputError, match="already exists"):
        api.add("another text", id=first)
    with pytest.raises(TypeError, match="item 0: an item must be a str, a mapping or a MemoryItem, got int"):
        api.add_many([7])
    with pytest.raises(InvalidInputError, match="item 0: unknown fields"):
        api.add_many([{"text": "fine", "colour": "red"}])

    assert state(memory) == before


# ---------------------------------------------------------------------- k and hops


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_k_and_hops_checked(stocked, mode):
    memory, _ = stocked
    api = calls(memory, mode)

    assert api.recall("kept", k=0) == []
    assert api.recall("kept", k=0, hops=3) == []
    assert len(api.recall("kept", k=1)) == 1
    with pytest.raises(InvalidInputError, match="k must be >= 0, got -1"):
        api.recall("kept", k=-1)
    for bad in (2.0, True, None, "3"):
        with pytest.raises(TypeError, match=f"k must be an int, got {type(bad).__name__}"):
            api.recall("kept", k=bad)
    with pytest.raises(InvalidInputError, match="hops must be >= 1"):
        api.recall("kept", k=3, hops=0)
    with pytest.raises(TypeError, match="hops must be an int"):
        api.recall("kept", k=3, hops=1.5)


# ---------------------------------------------------------------------- bad embedders


class BadEmbedder:
    """Hashing embedder that returns broken output for any text containing ``POISON``."""

    def __init__(self, fault: str) -> None:
        self.inner = HashingEmbedder(dim=64)
        self.name = "hashing"
        self.dim = 64
        self.fault = fault

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False):
        vectors = self.inner.encode(texts)
        if not any("POISON" in t for t in texts):
            return vectors
        if self.fault == "nan":
            vectors[-1, 3] = np.nan
        elif self.fault == "infinity":
            vectors[0, 0] = np.inf
        elif self.fault == "wrong dimension":
            vectors = np.zeros((len(texts), 32), dtype=np.float32) + 0.1
        elif self.fault == "wrong count":
            vectors = vectors[:-1]
        elif self.fault == "zero vector":
            vectors[0] = 0.0
        elif self.fault == "not numbers":
            vectors = np.array([["x"] * 64] * len(texts))
        return vectors


FAULTS = ["nan", "infinity", "wrong dimension", "wrong count", "zero vector", "not numbers"]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("fault", FAULTS)
def test_bad_embeddings_store_nothing(tmp_path, mode, fault):
    memory = new_memory(tmp_path / "memory.db", embedder=BadEmbedder(fault))
    api = calls(memory, mode)
    first = api.add("a healthy memory", session="s")
    api.add("another healthy memory", session="s")
    before = state(memory)

    with pytest.raises(EmbeddingError, match="embedder 'hashing' returned"):
        api.add("POISON text")
    with pytest.raises(EmbeddingError, match="embedder 'hashing' returned"):
        api.add_many(["fine text", "POISON text", "more fine text"], session="s")
    with pytest.raises(EmbeddingError, match="embedder 'hashing' returned"):
        api.update(first, "POISON text")
    with pytest.raises(EmbeddingError, match="embedder 'hashing' returned"):
        api.update(first, cues=["POISON cue"])
    with pytest.raises(EmbeddingError, match="embedder 'hashing' returned"):
        api.recall("POISON query")

    assert state(memory) == before
    memory.close()
    with new_memory(tmp_path / "memory.db", embedder=BadEmbedder(fault)) as reopened:
        assert state(reopened) == before


# ---------------------------------------------------------------------- unusual text


UNICODE_TEXTS = [
    "我的猫叫小花，它喜欢在阳台上晒太阳。",
    "家族で京都に行きました 🍵🏯",
    "👩‍💻 fixed the build at 3am 🎉🎉 👍🏽",
    "Crème brûlée à la façon de Zoë, naïve café",
    "Cre\u0300me bru\u0302le\u0301e in decomposed form (NFD)",
    "مرحبا، كيف حالك اليوم؟",
    "Ελληνικά: καλημέρα κόσμε",
    "zero\u200bwidth space and a tab\tinside",
]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_unicode_round_trip_exact(tmp_path, mode):
    path = tmp_path / "memory.db"
    memory = new_memory(path)
    api = calls(memory, mode)
    ids = [
        api.add(text, metadata={"original": text}, namespace=("用户", "工作"), cues=[text[:3] + " 💬"])
        for text in UNICODE_TEXTS
    ]
    assert not unicodedata.is_normalized("NFC", UNICODE_TEXTS[4])

    def check(m: AssociativeMemory) -> None:
        for memory_id, text in zip(ids, UNICODE_TEXTS):
            record = m.get(memory_id)
            assert record.text.encode("utf-8") == text.encode("utf-8")
            assert record.metadata == {"original": text}
            assert record.namespace == ("用户", "工作")
        listed = {r.id: r.text for r in m.list(("用户", "工作"))}
        assert [listed[i] for i in ids] == UNICODE_TEXTS
        for text in UNICODE_TEXTS:
            assert text in [r.text for r in m.recall(text, k=3, namespace=("用户", "工作"))]

    check(memory)
    memory.close()
    with new_memory(path) as reopened:
        check(reopened)


def long_text(seed: int = 0) -> tuple[str, str]:
    """A text of about 100,000 characters whose last paragraph alone states a fact."""
    rng = random.Random(seed)
    subjects = ["The gardener", "My neighbour", "The baker", "A cyclist", "The teacher", "Our landlord"]
    verbs = ["repaired", "painted", "watered", "sold", "measured", "cleaned", "ordered", "borrowed"]
    objects = ["the fence", "a bicycle wheel", "the tomato plants", "two loaves of rye bread", "a blue teapot"]
    tails = ["on Monday morning.", "before the rain started.", "after lunch.", "near the station."]
    paragraphs = []
    while sum(len(p) + 2 for p in paragraphs) < 99_500:
        paragraphs.append(
            " ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)}" for _ in range(8))
        )
    fact = (
        "At the very end of the summer, the lighthouse keeper finally told us about his parrot. "
        "The grey parrot of the lighthouse keeper is called Captain Marmalade. "
        "Captain Marmalade whistles at every passing ship."
    )
    return "\n\n".join(paragraphs) + "\n\n" + fact, "Captain Marmalade"


@pytest.fixture(scope="module")
def cached_real_embedder(real_embedder):
    """The real model behind a cache, so the sync and async runs embed the long text once."""
    return CachingEmbedder(real_embedder)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_long_text_stored_whole_and_end_found(tmp_path, cached_real_embedder, mode):
    text, fact = long_text()
    assert 99_000 <= len(text) <= 101_000
    path = tmp_path / "memory.db"
    memory = new_memory(path, embedder=cached_real_embedder)
    api = calls(memory, mode)
    long_id = api.add(text)
    api.add_many([
        "The zoo has a parrot house with noisy macaws.",
        "My aunt works at the lighthouse museum on weekends.",
        "Grey parrots can live for sixty years.",
        "The keeper of the museum is called Ms Ortega.",
    ])

    def check(m: AssociativeMemory) -> None:
        assert m.get(long_id).text == text
        results = calls(m, mode).recall("What is the lighthouse keeper's parrot called?", k=3)
        hit = next((r for r in results if r.id == long_id), None)
        assert hit is not None, [r.text[:60] for r in results]
        assert fact in hit.cue
        assert hit.cue == m.get(long_id).cues[-1]

    check(memory)
    memory.close()
    with new_memory(path, embedder=cached_real_embedder) as reopened:
        check(reopened)


# ---------------------------------------------------------------------- scripts the model cannot read


@pytest.fixture(scope="module")
def mixed_scripts(real_embedder):
    memory = AssociativeMemory(config=MemoryConfig(device="cpu"), embedder=real_embedder)
    texts = {
        "cat": "我的猫叫小花。",
        "rain": "明天的天气预报说会下雨。",
        "dog": "My dog is called Max.",
        "pets": "🐱🐶",
        "picnic": "Our picnic was great 🍕🎉",
    }
    ids = {key: memory.add(text) for key, text in texts.items()}
    return memory, ids


@pytest.mark.slow
def test_unreadable_scripts_embed_alike(real_embedder):
    # The problem the guard exists for: unrelated texts, nearly the same vector.
    vectors = real_embedder.encode(["我今天去了北京开会。", "明天的天气预报说会下雨。", "🎸", "🐱🐶"])
    assert float(vectors[0] @ vectors[1]) > 0.5
    assert float(vectors[2] @ vectors[3]) > 0.95


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_unrelated_chinese_not_matched(mixed_scripts, mode):
    memory, ids = mixed_scripts
    api = calls(memory, mode)

    assert api.recall("我今天去了北京开会。", k=5) == []
    assert api.recall("🎸", k=5) == []

    rain = api.recall("明天会下雨吗？", k=5)
    assert [r.id for r in rain] == [ids["rain"]]
    cat = api.recall("我的猫叫什么名字？", k=5)
    assert [r.id for r in cat] == [ids["cat"]]
    pizza = api.recall("🍕", k=5)
    assert [r.id for r in pizza] == [ids["picnic"]]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_english_query_skips_unreadable_memories(mixed_scripts, mode):
    memory, ids = mixed_scripts
    results = calls(memory, mode).recall("What is my dog called?", k=5)

    assert results[0].id == ids["dog"]
    assert ids["cat"] not in {r.id for r in results}
    assert ids["pets"] not in {r.id for r in results}


@pytest.mark.parametrize(
    "field", ["spread_by_kind", "bridge_names", "link_common_nouns", "sentence_cues", "deduplicate"]
)
def test_config_rejects_non_bool_flag(field):
    with pytest.raises(ConfigError, match=f"{field} must be True or False, got 'yes'"):
        MemoryConfig(**{field: "yes"})


@pytest.mark.parametrize(
    "value, message",
    [
        (float("nan"), "vector must be finite, got nan at index 3"),
        (float("inf"), "vector must be finite, got inf at index 3"),
        (1e30, "vector is too large to normalise"),
        (0.0, "vector must be non-zero, got all zeros"),
    ],
)
def test_recall_by_vector_names_bad_vector(value, message):
    memory = new_memory()
    memory.add("the kettle is on the stove", id="kettle")
    vector = np.zeros(memory.dim, dtype=np.float32)
    vector[3] = value
    if value == 1e30:
        vector[:] = value
    with pytest.raises(InvalidInputError, match=message):
        memory.recall_by_vector(vector)
    assert memory.get("kettle").text == "the kettle is on the stove"


@pytest.mark.parametrize(
    "vector, message",
    [
        ("dog", "got dtype <U3"),
        (None, "got dtype object"),
        (np.ones(384, dtype=np.complex64), "got dtype complex64"),
        (torch.ones(384, dtype=torch.complex64), "got dtype torch.complex64"),
        (np.ones(384, dtype=bool), "got dtype bool"),
    ],
)
def test_recall_by_vector_rejects_non_real_vector(vector, message):
    memory = new_memory()
    memory.add("the kettle is on the stove", id="kettle")
    with pytest.raises(InvalidTypeError, match=message):
        memory.recall_by_vector(vector)
    assert memory.get("kettle").text == "the kettle is on the stove"


def test_recall_by_vector_rejects_str_query_words():
    memory = new_memory()
    memory.add("the kettle is on the stove", id="kettle")
    vector = np.ones(memory.dim, dtype=np.float32)
    with pytest.raises(InvalidTypeError, match="query_words must be a list of words, got the str 'kettle'"):
        memory.recall_by_vector(vector, query_words="kettle")
    with pytest.raises(InvalidTypeError, match="query_words must hold str words, got int 3"):
        memory.recall_by_vector(vector, query_words=["kettle", 3])


@pytest.mark.parametrize("field", ["beta", "settle_eps", "hop_gate", "lexical_weight"])
def test_config_rejects_infinite_number(field):
    with pytest.raises(ConfigError, match=f"{field} must be a .*finite number"):
        MemoryConfig(**{field: float("inf")})


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), True, "1"])
def test_config_rejects_bad_subject_projection(value):
    with pytest.raises(ConfigError, match="subject_projection must be a number from 0 to 1"):
        MemoryConfig(subject_projection=value)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
def test_config_rejects_seed_out_of_generator_range(value):
    with pytest.raises(ConfigError, match=f"seed must be an int from -2\\*\\*63 to 2\\*\\*64 - 1 .*got {value}"):
        MemoryConfig(seed=value)


@pytest.mark.parametrize("value", ["notadict", ["seed", 1], None])
def test_config_from_dict_rejects_non_dict(value):
    with pytest.raises(ConfigError, match="a configuration must be a dict of fields, got"):
        MemoryConfig.from_dict(value)
