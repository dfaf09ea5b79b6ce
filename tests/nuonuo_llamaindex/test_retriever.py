"""NuoNuoRetriever: ingestion, retrieval, filters, hops, query engines and persistence."""

from __future__ import annotations

import pytest
from llama_index.core import Document
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import (
    MetadataMode,
    NodeRelationship,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from nuonuo_core import (
    AssociativeMemory,
    HashingEmbedder,
    InvalidInputError,
    InvalidTypeError,
    MemoryConfig,
    MemoryNotFoundError,
)
from nuonuo_llamaindex import NuoNuoRetriever

PET_FACTS = {
    "cat": "The user has a cat named Tofu.",
    "thai": "The user likes Thai food, especially green curry.",
    "bike": "The user rides a bicycle to work every morning.",
    "piano": "The user took piano lessons as a child.",
}


async def _retrieve(retriever: NuoNuoRetriever, query, use_async: bool):
    if use_async:
        return await retriever.aretrieve(query)
    return retriever.retrieve(query)


def _memory(embedder) -> AssociativeMemory:
    return AssociativeMemory(embedder=embedder, config=MemoryConfig(device="cpu"))


@pytest.fixture(scope="module")
def pets_memory(real_embedder) -> AssociativeMemory:
    """The pet facts, stored once per module; tests only read it."""
    documents = [Document(text=text, id_=key, metadata={"kind": "fact"}) for key, text in PET_FACTS.items()]
    return NuoNuoRetriever.from_documents(documents, _memory(real_embedder)).memory


@pytest.fixture
def pets(pets_memory) -> NuoNuoRetriever:
    return NuoNuoRetriever(pets_memory, similarity_top_k=1)


# ---------------------------------------------------------------------- retrieval


@pytest.mark.parametrize("use_async", [False, True])
async def test_nodes_carry_memory_fields(pets, use_async):
    nodes = await _retrieve(pets, "What toy should I buy for my pet?", use_async)
    assert len(nodes) == 1
    node = nodes[0].node
    assert isinstance(node, TextNode)
    assert node.node_id == "cat"
    assert node.text == PET_FACTS["cat"]
    assert node.metadata["memory_id"] == "cat"
    assert node.metadata["hops"] == 0
    assert node.metadata["association_path"] == ["cat"]
    assert -1.0 <= node.metadata["similarity"] <= 1.0
    assert node.metadata["kind"] == "fact"
    assert 0.0 <= nodes[0].score <= 1.0
    assert node.relationships[NodeRelationship.SOURCE].node_id == "cat"


def test_result_keys_hidden_from_llm(pets):
    node = pets.retrieve("pet")[0].node
    for mode in (MetadataMode.LLM, MetadataMode.EMBED):
        content = node.get_content(metadata_mode=mode)
        assert "kind: fact" in content
        assert "memory_id" not in content
        assert "association_path" not in content


async def test_aretrieve_equals_retrieve(pets):
    pets.similarity_top_k = 4
    for query in ("dinner plans", "my pet", "getting to the office", "music"):
        sync_nodes = pets.retrieve(query)
        async_nodes = await pets.aretrieve(query)
        assert [n.node.node_id for n in sync_nodes] == [n.node.node_id for n in async_nodes]
        assert [n.score for n in sync_nodes] == pytest.approx([n.score for n in async_nodes])
        assert [n.node.metadata for n in sync_nodes] == [n.node.metadata for n in async_nodes]


@pytest.mark.parametrize("use_async", [False, True])
async def test_top_k_zero_returns_nothing(hashing_embedder, use_async):
    texts = [f"memory number {i} about topic {i % 7}" for i in range(50)]
    retriever = NuoNuoRetriever.from_nodes(
        [TextNode(text=text) for text in texts], _memory(hashing_embedder), similarity_top_k=0
    )
    assert len(retriever.memory) == 50
    assert await _retrieve(retriever, "memory about topic 3", use_async) == []
    retriever.similarity_top_k = 3
    assert len(await _retrieve(retriever, "memory about topic 3", use_async)) == 3


def test_negative_top_k_rejected(hashing_embedder):
    memory = _memory(hashing_embedder)
    with pytest.raises(ValueError, match="similarity_top_k must be >= 0, got -1"):
        NuoNuoRetriever(memory, similarity_top_k=-1)
    retriever = NuoNuoRetriever(memory)
    with pytest.raises(ValueError, match="similarity_top_k"):
        retriever.similarity_top_k = -3
    assert retriever.similarity_top_k == 2
    with pytest.raises(ValueError, match="similarity_top_k"):
        retriever.as_retriever(similarity_top_k=-1)
    with pytest.raises(TypeError, match="similarity_top_k must be an int"):
        NuoNuoRetriever(memory, similarity_top_k="3")


def test_bad_hops_and_memory_rejected(hashing_embedder):
    memory = _memory(hashing_embedder)
    with pytest.raises(ValueError, match="hops must be >= 1"):
        NuoNuoRetriever(memory, hops=0)
    with pytest.raises(InvalidTypeError, match="memory must be an AssociativeMemory"):
        NuoNuoRetriever(memory=42)
    with pytest.raises(ValueError, match="namespace"):
        NuoNuoRetriever(memory, namespace=("", "x"))


@pytest.mark.parametrize("use_async", [False, True])
async def test_blank_query_returns_nothing(pets, use_async):
    assert await _retrieve(pets, "", use_async) == []
    assert await _retrieve(pets, "   ", use_async) == []


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("query", [None, 5, b"x"], ids=["none", "int", "bytes"])
async def test_bad_query_type_rejected(hashing_embedder, query, use_async):
    retriever = NuoNuoRetriever.from_nodes([TextNode(text="My dog is Max.")], _memory(hashing_embedder))
    type_name = type(query).__name__
    with pytest.raises(TypeError, match=f"query must be a str or QueryBundle, got {type_name}"):
        await _retrieve(retriever, query, use_async)


@pytest.mark.parametrize("use_async", [False, True])
async def test_query_bundle_retrieves(pets, use_async):
    nodes = await _retrieve(pets, QueryBundle("What toy should I buy for my pet?"), use_async)
    assert [n.node.node_id for n in nodes] == ["cat"]


def test_several_embedding_strings(pets):
    bundle = QueryBundle(
        query_str="gift idea",
        custom_embedding_strs=["A toy mouse for a cat.", "What should I buy for my pet?"],
    )
    assert [n.node.node_id for n in pets.retrieve(bundle)] == ["cat"]


def test_callbacks_see_retrieval(pets):
    handler = LlamaDebugHandler()
    pets.callback_manager = CallbackManager([handler])
    nodes = pets.retrieve("my pet")
    events = handler.get_event_pairs(CBEventType.RETRIEVE)
    assert len(events) == 1
    assert events[0][1].payload["nodes"] == nodes


# ---------------------------------------------------------------------- filters

BOOKS = [
    ("dune", "Dune is a science fiction novel about a desert planet.", {"year": 1965, "genre": "scifi"}),
    ("neuromancer", "Neuromancer is a science fiction novel about hackers.", {"year": 1984, "genre": "scifi"}),
    ("emma", "Emma is a novel about a young woman and matchmaking.", {"year": 1815, "genre": "romance"}),
    ("hobbit", "The Hobbit is a novel about a journey to a dragon.", {"year": 1937, "genre": "fantasy"}),
    ("untagged", "This novel has no year or genre recorded.", {}),
]


@pytest.fixture(scope="module")
def books_memory() -> AssociativeMemory:
    """The books, stored once per module; tests only read it."""
    nodes = [TextNode(id_=id_, text=text, metadata=metadata) for id_, text, metadata in BOOKS]
    return NuoNuoRetriever.from_nodes(nodes, _memory(HashingEmbedder(dim=384))).memory


@pytest.fixture
def books(books_memory) -> NuoNuoRetriever:
    return NuoNuoRetriever(books_memory, similarity_top_k=10)


def _where(key, operator, value) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=operator)])


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (_where("genre", FilterOperator.EQ, "scifi"), {"dune", "neuromancer"}),
        (_where("genre", FilterOperator.NE, "scifi"), {"emma", "hobbit", "untagged"}),
        (_where("year", FilterOperator.GT, 1937), {"dune", "neuromancer"}),
        (_where("year", FilterOperator.GTE, 1937), {"dune", "neuromancer", "hobbit"}),
        (_where("year", FilterOperator.LT, 1937), {"emma"}),
        (_where("year", FilterOperator.LTE, 1937), {"emma", "hobbit"}),
        (_where("genre", FilterOperator.IN, ["romance", "fantasy"]), {"emma", "hobbit"}),
        (_where("genre", FilterOperator.NIN, ["romance", "fantasy"]), {"dune", "neuromancer", "untagged"}),
        (
            MetadataFilters(filters=[
                MetadataFilter(key="genre", value="scifi"),
                MetadataFilter(key="year", value=1970, operator=FilterOperator.GT),
            ]),
            {"neuromancer"},
        ),
        (
            MetadataFilters(
                filters=[MetadataFilter(key="genre", value="emma"), MetadataFilter(key="genre", value="fantasy")],
                condition=FilterCondition.OR,
            ),
            {"hobbit"},
        ),
    ],
)
@pytest.mark.parametrize("use_async", [False, True])
async def test_metadata_filters(books, filters, expected, use_async):
    filtered = books.as_retriever(filters=filters)
    nodes = await _retrieve(filtered, "a novel about", use_async)
    assert {n.node.node_id for n in nodes} == expected


def test_unfiltered_returns_all(books):
    assert {n.node.node_id for n in books.retrieve("a novel about")} == {b[0] for b in BOOKS}


def test_unsupported_filter_rejected(books):
    filters = MetadataFilters(
        filters=[MetadataFilter(key="genre", value="scifi"), MetadataFilter(key="year", value=1984)],
        condition=FilterCondition.OR,
    )
    with pytest.raises(ValueError, match="OR filters must test a single key"):
        books.as_retriever(filters=filters)
    with pytest.raises(ValueError, match="CONTAINS"):
        books.filters = _where("genre", FilterOperator.CONTAINS, "sci")
    assert books.filters is None


# ---------------------------------------------------------------------- ingestion


def test_documents_become_one_memory_each(hashing_embedder):
    documents = [
        Document(text="Apples grow in the orchard.", id_="apples", metadata={"source": "farm.txt"}),
        Document(text="Rivers flow to the sea.", id_="rivers"),
    ]
    retriever = NuoNuoRetriever.from_documents(documents, _memory(hashing_embedder))
    memory = retriever.memory
    assert len(memory) == 2
    record = memory.get("apples")
    assert record.text == "Apples grow in the orchard."
    assert record.metadata == {"source": "farm.txt", "ref_doc_id": "apples"}
    # The embedded metadata is an extra cue, as VectorStoreIndex embeds it with the text.
    assert "source: farm.txt\n\nApples grow in the orchard." in record.cues
    assert memory.get("rivers").cues == ("Rivers flow to the sea.",)


def test_long_document_found_by_its_end(real_embedder):
    filler = " ".join(
        f"Section {i} lists the opening hours of the municipal offices on weekdays." for i in range(60)
    )
    ending = "The harbour lighthouse was repainted red and white in 1998."
    retriever = NuoNuoRetriever.from_documents(
        [Document(text=f"{filler} {ending}", id_="report"), Document(text="Bread is baked at dawn.", id_="bread")],
        _memory(real_embedder),
        similarity_top_k=1,
    )
    assert len(retriever.memory) == 2
    assert retriever.retrieve("What colour is the lighthouse painted?")[0].node.node_id == "report"


@pytest.mark.parametrize("use_async", [False, True])
async def test_splitter_chunks_linked(hashing_embedder, use_async):
    sentences = [f"Paragraph {i} talks about subject {name}." for i, name in enumerate("abcdefgh")]
    document = Document(text=" ".join(sentences), id_="essay", metadata={"author": "kim"})
    retriever = NuoNuoRetriever(
        _memory(hashing_embedder), transformations=[SentenceSplitter(chunk_size=24, chunk_overlap=0)]
    )
    if use_async:
        ids = await retriever.ainsert(document)
    else:
        ids = retriever.insert(document)
    assert len(ids) > 2
    memory = retriever.memory
    for first, second in zip(ids, ids[1:]):
        assert second in memory.links(first)
        assert memory.get(first).metadata["ref_doc_id"] == "essay"
    node = retriever.retrieve("subject c")[0].node
    assert node.ref_doc_id == "essay"
    assert node.metadata["author"] == "kim"

    assert retriever.delete_ref_doc("essay") == len(ids)
    assert len(memory) == 0
    assert retriever.delete_ref_doc("essay") == 0


@pytest.mark.parametrize("use_async", [False, True])
async def test_nodes_keep_ids_and_metadata(hashing_embedder, use_async):
    nodes = [
        TextNode(id_="n1", text="Green tea is brewed at eighty degrees.", metadata={"topic": "tea", "rank": 1}),
        TextNode(id_="n2", text="Black tea is brewed with boiling water.", metadata={"topic": "tea", "rank": 2}),
    ]
    retriever = NuoNuoRetriever(_memory(hashing_embedder), similarity_top_k=2)
    if use_async:
        ids = await retriever.ainsert_nodes(nodes)
    else:
        ids = retriever.insert_nodes(nodes)
    assert ids == ["n1", "n2"]
    found = {n.node.node_id: n.node for n in retriever.retrieve("green tea brewed")}
    assert set(found) == {"n1", "n2"}
    assert found["n1"].metadata["rank"] == 1
    assert found["n1"].text == nodes[0].text
    assert NodeRelationship.SOURCE not in found["n1"].relationships


def test_retrieved_nodes_stored_again_cleanly(pets, hashing_embedder):
    node = pets.retrieve("my pet")[0].node
    other = NuoNuoRetriever(_memory(hashing_embedder))
    other.insert_nodes([node])
    assert other.memory.get("cat").metadata == {"kind": "fact", "ref_doc_id": "cat"}


def test_bad_nodes_store_nothing(hashing_embedder):
    retriever = NuoNuoRetriever.from_nodes([TextNode(id_="kept", text="Stored first.")], _memory(hashing_embedder))
    memory = retriever.memory

    with pytest.raises(InvalidInputError, match="node 'empty' has no text"):
        retriever.insert_nodes([TextNode(id_="fine", text="A good node."), TextNode(id_="empty", text="  ")])
    with pytest.raises(InvalidInputError, match="node id 'kept' is already stored"):
        retriever.insert_nodes([TextNode(id_="new", text="Another node."), TextNode(id_="kept", text="Again.")])
    with pytest.raises(InvalidInputError, match="metadata of node 'odd' must be JSON-serialisable"):
        retriever.insert_nodes([TextNode(id_="odd", text="Odd metadata.", metadata={"when": object()})])
    with pytest.raises(InvalidTypeError, match="got a single node"):
        retriever.insert_nodes(TextNode(id_="single", text="Not in a list."))
    with pytest.raises(InvalidTypeError, match=r"nodes\[0\] must be a LlamaIndex node, got str"):
        retriever.insert_nodes(["plain text"])

    assert len(memory) == 1
    assert memory.get("kept").text == "Stored first."


def test_delete_nodes(hashing_embedder):
    nodes = [TextNode(id_=f"n{i}", text=f"fact number {i}") for i in range(3)]
    retriever = NuoNuoRetriever.from_nodes(nodes, _memory(hashing_embedder))
    with pytest.raises(MemoryNotFoundError, match="'missing'"):
        retriever.delete_nodes(["n0", "missing"])
    assert len(retriever.memory) == 3
    retriever.delete_nodes(["n0", "n2"])
    assert [r.id for r in retriever.memory.list()] == ["n1"]


def test_namespaces_kept_apart(hashing_embedder):
    memory = _memory(hashing_embedder)
    alice = NuoNuoRetriever(memory, namespace="alice")
    bob = NuoNuoRetriever(memory, namespace=("bob",))
    alice.insert_nodes([TextNode(id_="a", text="Alice owns a red kayak.")])
    bob.insert_nodes([TextNode(id_="b", text="Bob owns a red kayak too.")])
    assert [n.node.node_id for n in alice.retrieve("red kayak")] == ["a"]
    assert [n.node.node_id for n in bob.retrieve("red kayak")] == ["b"]
    with pytest.raises(MemoryNotFoundError):
        alice.delete_nodes(["b"])


# ---------------------------------------------------------------------- hops


@pytest.mark.parametrize("use_async", [False, True])
async def test_two_hop_path_in_metadata(real_embedder, use_async):
    memory = _memory(real_embedder)
    source = RelatedNodeInfo(node_id="diary")
    chunks = [
        TextNode(id_="dog", text="Alice's dog is named Biscuit."),
        TextNode(id_="vet", text="The vet clinic on Elm Street closes at six."),
    ]
    for chunk in chunks:
        chunk.relationships[NodeRelationship.SOURCE] = source
    distractors = [
        TextNode(id_=f"d{i}", text=text)
        for i, text in enumerate([
            "Paris is the capital of France.", "Bananas are rich in potassium.",
            "The stock market rose on Tuesday.", "Glaciers carve deep valleys.",
        ])
    ]
    retriever = NuoNuoRetriever.from_nodes(chunks + distractors, memory, similarity_top_k=3, hops=2)

    nodes = await _retrieve(retriever, "What is Alice's pet called?", use_async)
    by_id = {n.node.node_id: n.node for n in nodes}
    assert nodes[0].node.node_id == "dog"
    assert "vet" in by_id
    assert by_id["vet"].metadata["hops"] == 1
    assert by_id["vet"].metadata["association_path"] == ["dog", "vet"]

    single = await _retrieve(retriever.as_retriever(hops=1), "What is Alice's pet called?", use_async)
    assert all(n.node.metadata["hops"] == 0 for n in single)
    assert all(n.node.metadata["association_path"] == [n.node.node_id] for n in single)


# ---------------------------------------------------------------------- engines


@pytest.mark.parametrize("use_async", [False, True])
async def test_query_engine_uses_retriever(pets, use_async):
    engine = RetrieverQueryEngine.from_args(pets, llm=MockLLM())
    if use_async:
        response = await engine.aquery("What toy should I buy for my pet?")
    else:
        response = engine.query("What toy should I buy for my pet?")
    assert [n.node.node_id for n in response.source_nodes] == ["cat"]
    # MockLLM echoes its prompt, so the answer shows the context it was given.
    assert PET_FACTS["cat"] in str(response)
    assert PET_FACTS["thai"] not in str(response)


# ---------------------------------------------------------------------- persistence


def test_reopened_file_gives_same_nodes(tmp_path, real_embedder):
    path = tmp_path / "memory.db"
    documents = [Document(text=text, id_=key) for key, text in PET_FACTS.items()]
    first = NuoNuoRetriever.from_documents(documents, AssociativeMemory(path, embedder=real_embedder))
    before = [(n.node.node_id, n.node.metadata) for n in first.retrieve("my pet")]
    first.memory.close()

    second = NuoNuoRetriever(AssociativeMemory(path, embedder=real_embedder))
    after = [(n.node.node_id, n.node.metadata) for n in second.retrieve("my pet")]
    assert after == before
    assert before[0][0] == "cat"
    second.memory.close()


def test_path_opens_memory_file(tmp_path):
    path = tmp_path / "hashing.db"
    with AssociativeMemory(path, embedder=HashingEmbedder()) as memory:
        NuoNuoRetriever(memory).insert_nodes([TextNode(id_="kayak", text="The kayak is stored in the garage.")])

    reopened = NuoNuoRetriever(str(path))
    assert [n.node.node_id for n in reopened.retrieve("where is the kayak stored")] == ["kayak"]
    reopened.memory.close()
