"""Behaviour of NuoNuoRetriever as a LangChain retriever, sync and async."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from nuonuo_core import AssociativeMemory, HashingEmbedder, InvalidInputError, InvalidTypeError
from nuonuo_langchain import NuoNuoRetriever

FACTS = [
    "My dog is Max.",
    "I work as a nurse in Lisbon.",
    "Max loves the beach.",
    "My sister plays the violin.",
    "The car needs new tyres.",
    "We booked a flight to Tokyo in May.",
    "I am allergic to peanuts.",
    "Our kitchen is painted yellow.",
]


@pytest.fixture(params=["sync", "async"])
def mode(request) -> str:
    return request.param


def retrieve(retriever: NuoNuoRetriever, query: str, mode: str, **kwargs: Any) -> list[Document]:
    if mode == "sync":
        return retriever.invoke(query, **kwargs)
    return asyncio.run(retriever.ainvoke(query, **kwargs))


def add_texts(retriever: NuoNuoRetriever, texts: list[str], mode: str, **kwargs: Any) -> list[str]:
    if mode == "sync":
        return retriever.add_texts(texts, **kwargs)
    return asyncio.run(retriever.aadd_texts(texts, **kwargs))


def add_documents(retriever: NuoNuoRetriever, documents: list[Document], mode: str, **kwargs: Any) -> list[str]:
    if mode == "sync":
        return retriever.add_documents(documents, **kwargs)
    return asyncio.run(retriever.aadd_documents(documents, **kwargs))


def new_retriever(**fields: Any) -> NuoNuoRetriever:
    return NuoNuoRetriever(embedder=HashingEmbedder(), **fields)


# ---------------------------------------------------------------------- documents


def test_documents_carry_id_and_recall_metadata(mode):
    retriever = new_retriever(k=2)
    ids = add_texts(retriever, ["Tea grows in Assam.", "Coffee grows in Brazil."], mode,
                    metadatas=[{"source": "tea.txt"}, {"source": "coffee.txt"}])

    documents = retrieve(retriever, "where does tea grow", mode)

    top = documents[0]
    assert top.page_content == "Tea grows in Assam."
    assert top.id == ids[0]
    assert top.metadata["source"] == "tea.txt"
    assert 0.0 <= top.metadata["score"] <= 1.0
    assert -1.0 <= top.metadata["similarity"] <= 1.0
    assert top.metadata["hops"] == 0
    assert top.metadata["path"] == [ids[0]]
    assert documents[0].metadata["score"] >= documents[1].metadata["score"]


def test_k_and_per_call_overrides(mode):
    retriever = new_retriever(k=3)
    add_texts(retriever, FACTS, mode)

    assert len(retrieve(retriever, "my dog", mode)) == 3
    assert len(retrieve(retriever, "my dog", mode, k=1)) == 1


def test_k_zero_returns_nothing(mode):
    retriever = new_retriever(k=0)
    add_texts(retriever, FACTS, mode)

    assert retrieve(retriever, "my dog", mode) == []


def test_search_kwargs_set_fields(mode):
    retriever = new_retriever(search_kwargs={"k": 1, "hops": 1})
    add_texts(retriever, FACTS, mode)

    assert retriever.k == 1
    assert retriever.hops == 1
    assert len(retrieve(retriever, "my dog", mode)) == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"search_kwargs": {"fetch_k": 20}}, "unsupported search_kwargs \\['fetch_k'\\]"),
        ({"search_kwargs": 3}, "search_kwargs must be a mapping, got int"),
        ({"k": 2, "search_kwargs": {"k": 5}}, "'k' given both as a field"),
        ({"top_k": 3}, "top_k"),
        ({"search_type": "mmr"}, "search_type is not supported, got 'mmr'"),
    ],
)
def test_bad_constructor_arguments_rejected(fields, message):
    with pytest.raises(ValueError, match=message):
        new_retriever(**fields)


def test_per_call_k_zero_returns_nothing(mode):
    retriever = new_retriever(k=3)
    add_texts(retriever, FACTS, mode)

    assert retrieve(retriever, "my dog", mode, k=0) == []


def test_negative_k_rejected():
    with pytest.raises(ValueError, match="k must be >= 0, got -1"):
        new_retriever(k=-1)


def test_negative_per_call_k_rejected(mode):
    retriever = new_retriever(k=3)
    add_texts(retriever, FACTS, mode)

    with pytest.raises(InvalidInputError, match="k must be >= 0, got -2"):
        retrieve(retriever, "my dog", mode, k=-2)


def test_metadata_filter(mode):
    retriever = new_retriever(k=5, filter={"topic": "pets"})
    add_texts(retriever, ["My dog is Max.", "My dog bowl is red.", "Max is a name."], mode,
              metadatas=[{"topic": "pets"}, {"topic": "kitchen"}, {"topic": "pets"}])

    texts = [d.page_content for d in retrieve(retriever, "my dog", mode)]
    override = [d.page_content for d in retrieve(retriever, "my dog", mode, filter={"topic": {"$ne": "pets"}})]

    assert sorted(texts) == ["Max is a name.", "My dog is Max."]
    assert override == ["My dog bowl is red."]


def test_invalid_filter_raises():
    with pytest.raises(ValueError, match=r"\$like"):
        new_retriever(filter={"topic": {"$like": "pe"}})


def test_async_matches_sync():
    retriever = new_retriever(k=4, hops=2)
    retriever.add_texts(FACTS)

    expected = retriever.invoke("Tell me about my dog")
    result = asyncio.run(retriever.ainvoke("Tell me about my dog"))

    assert [(d.id, d.page_content, d.metadata) for d in result] == [
        (d.id, d.page_content, d.metadata) for d in expected
    ]


# ---------------------------------------------------------------------- multi-hop


@pytest.mark.slow
def test_two_hop_fact_has_its_path(real_embedder, mode):
    retriever = NuoNuoRetriever(embedder=real_embedder, k=3)
    ids = add_texts(retriever, FACTS, mode)
    dog_id, beach_id = ids[0], ids[2]

    two_hop = retrieve(retriever, "Tell me about my dog", mode, hops=2)
    single_hop = retrieve(retriever, "Tell me about my dog", mode, hops=1)

    beach = [d for d in two_hop if d.id == beach_id]
    assert len(beach) == 1
    assert beach[0].metadata["hops"] == 1
    assert beach[0].metadata["path"] == [dog_id, beach_id]
    assert all(d.metadata["hops"] == 0 for d in single_hop)


# ---------------------------------------------------------------------- LCEL


def format_docs(documents: list[Document]) -> str:
    return "\n".join(d.page_content for d in documents)


def test_retriever_in_lcel_chain(mode):
    retriever = new_retriever(k=1)
    retriever.add_texts(FACTS)
    prompt = ChatPromptTemplate.from_messages(
        [("human", "Answer from the context.\nContext:\n{context}\nQuestion: {question}")]
    )
    chain = (
        {"context": retriever | RunnableLambda(format_docs), "question": RunnablePassthrough()}
        | prompt
        | ParrotFakeChatModel()
        | StrOutputParser()
    )

    if mode == "sync":
        answer = chain.invoke("Which flight did we book?")
    else:
        answer = asyncio.run(chain.ainvoke("Which flight did we book?"))

    assert "Context:\nWe booked a flight to Tokyo in May.\nQuestion" in answer


# ---------------------------------------------------------------------- ingestion


def test_add_documents_uses_and_updates_ids(mode):
    retriever = new_retriever(k=1)
    first = Document(page_content="Tea grows in Assam.", id="tea", metadata={"version": 1})

    assert add_documents(retriever, [first], mode) == ["tea"]
    updated = Document(page_content="Tea grows in Darjeeling.", id="tea", metadata={"version": 2})
    assert add_documents(retriever, [updated], mode) == ["tea"]

    documents = retrieve(retriever, "tea", mode)
    assert len(retriever.memory) == 1
    assert documents[0].page_content == "Tea grows in Darjeeling."
    assert documents[0].metadata["version"] == 2


def test_ids_argument_and_bad_input_store_nothing(mode):
    retriever = new_retriever()
    documents = [Document("Tea grows in Assam."), Document("Coffee grows in Brazil.")]

    assert add_documents(retriever, documents, mode, ids=["a", "b"]) == ["a", "b"]
    with pytest.raises(InvalidInputError, match="2 ids for 1 documents"):
        add_documents(retriever, [Document("x")], mode, ids=["c", "d"])
    with pytest.raises(InvalidInputError, match=r"texts\[1\]"):
        add_texts(retriever, ["Fine text.", "   "], mode)
    with pytest.raises(InvalidTypeError, match="JSON"):
        add_texts(retriever, ["Fine text."], mode, metadatas=[{"when": object()}])
    with pytest.raises(InvalidTypeError, match="single str"):
        add_texts(retriever, "not a list", mode)  # type: ignore[arg-type]
    assert sorted(r.text for r in retriever.memory.list(())) == ["Coffee grows in Brazil.", "Tea grows in Assam."]


def test_from_texts_and_from_documents():
    by_texts = NuoNuoRetriever.from_texts(
        ["Tea grows in Assam."], [{"source": "a"}], ids=["tea"], embedder=HashingEmbedder(), k=1
    )
    by_documents = NuoNuoRetriever.from_documents(
        [Document("Tea grows in Assam.", id="tea", metadata={"source": "a"})],
        embedder=HashingEmbedder(), k=1,
    )

    for retriever in (by_texts, by_documents):
        (document,) = retriever.invoke("tea")
        assert (document.id, document.metadata["source"], retriever.k) == ("tea", "a", 1)


def test_session_links_consecutive_texts(mode):
    retriever = new_retriever(k=2, hops=2)
    ids = add_texts(retriever, ["The meeting is on Friday.", "Bring the quarterly report."], mode,
                    session="notes")

    documents = retrieve(retriever, "when is the meeting", mode)

    assert [d.id for d in documents] == ids
    assert documents[1].metadata["path"] == ids


def test_namespaces_separate_documents(mode):
    shared = AssociativeMemory(embedder=HashingEmbedder())
    alice = NuoNuoRetriever(memory=shared, namespace="alice")
    bob = NuoNuoRetriever(memory=shared, namespace=("bob",))
    everyone = NuoNuoRetriever(memory=shared, namespace_prefix=())
    add_texts(alice, ["Alice keeps bees."], mode)
    add_texts(bob, ["Bob keeps goats."], mode)

    assert [d.page_content for d in retrieve(alice, "keeps", mode)] == ["Alice keeps bees."]
    assert [d.page_content for d in retrieve(bob, "keeps", mode)] == ["Bob keeps goats."]
    assert sorted(d.page_content for d in retrieve(everyone, "keeps", mode)) == [
        "Alice keeps bees.", "Bob keeps goats.",
    ]
    with pytest.raises(InvalidInputError, match="namespace"):
        add_documents(bob, [Document("Alice keeps wasps.", id=alice.memory.list(("alice",))[0].id)], mode)


def test_persistence_across_instances(tmp_path):
    path = tmp_path / "documents.db"
    first = NuoNuoRetriever.from_texts(["Tea grows in Assam."], path=path, embedder=HashingEmbedder())
    first.memory.close()

    second = NuoNuoRetriever(path=path, embedder=HashingEmbedder())

    assert [d.page_content for d in second.invoke("tea")] == ["Tea grows in Assam."]
