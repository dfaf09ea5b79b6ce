"""Behaviour of NuoNuoStore as a LangGraph store, sync and async."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.tools import ToolRuntime
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)

from nuonuo_core import (
    AssociativeMemory,
    ConfigError,
    HashingEmbedder,
    InvalidInputError,
    InvalidTypeError,
    MemoryConfig,
)
from nuonuo_langchain import NuoNuoStore


@pytest.fixture(params=["sync", "async"])
def mode(request) -> str:
    return request.param


class Client:
    """Calls the store's public sync methods, or their async twins, by mode."""

    def __init__(self, store: NuoNuoStore, mode: str) -> None:
        self.store = store
        self.mode = mode

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync":
            return getattr(self.store, name)(*args, **kwargs)
        return asyncio.run(getattr(self.store, "a" + name)(*args, **kwargs))

    def put(self, *args: Any, **kwargs: Any) -> None:
        self._call("put", *args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("get", *args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> None:
        self._call("delete", *args, **kwargs)

    def search(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("search", *args, **kwargs)

    def list_namespaces(self, **kwargs: Any) -> Any:
        return self._call("list_namespaces", **kwargs)

    def batch(self, ops: list[Any]) -> Any:
        return self._call("batch", ops)


def new_store(**kwargs: Any) -> NuoNuoStore:
    return NuoNuoStore(embedder=HashingEmbedder(), **kwargs)


@pytest.fixture
def client(mode) -> Client:
    return Client(new_store(index={"fields": ["text"]}), mode)


# ---------------------------------------------------------------------- put, get, delete


def test_put_get_delete(client):
    client.put(("users", "ana"), "pet", {"text": "My dog is Max.", "age": 3})

    item = client.get(("users", "ana"), "pet")

    assert (item.namespace, item.key, item.value) == (("users", "ana"), "pet", {"text": "My dog is Max.", "age": 3})
    assert item.created_at == item.updated_at
    assert item.created_at.tzinfo is not None
    assert client.get(("users", "bob"), "pet") is None
    client.delete(("users", "ana"), "pet")
    assert client.get(("users", "ana"), "pet") is None
    client.delete(("users", "ana"), "pet")  # deleting a missing key is not an error


def test_put_on_existing_key_updates(client):
    client.put(("users", "ana"), "pet", {"text": "My dog is Max."})
    first = client.get(("users", "ana"), "pet")

    client.put(("users", "ana"), "pet", {"text": "My cat is Tom."})

    second = client.get(("users", "ana"), "pet")
    assert second.value == {"text": "My cat is Tom."}
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert len(client.store.memory) == 1
    assert [i.key for i in client.search(("users",), query="cat")] == ["pet"]


def test_namespaces_isolate_keys(client):
    client.put(("users", "ana"), "pet", {"text": "My dog is Max."})
    client.put(("users", "bob"), "pet", {"text": "My dog is Rex."})

    assert client.get(("users", "ana"), "pet").value["text"] == "My dog is Max."
    assert client.get(("users", "bob"), "pet").value["text"] == "My dog is Rex."
    assert [i.value["text"] for i in client.search(("users", "bob"), query="dog")] == ["My dog is Rex."]


def test_values_of_any_json_shape_round_trip(client):
    value = {"text": "Notes", "tags": ["a", "b"], "nested": {"x": [1, 2.5, None, True]}}

    client.put(("docs",), "n1", value)

    assert client.get(("docs",), "n1").value == value


# ---------------------------------------------------------------------- search


def test_search_with_query_ranks_by_recall(client):
    client.put(("docs",), "tea", {"text": "Tea grows in Assam."})
    client.put(("docs",), "coffee", {"text": "Coffee grows in Brazil."})
    client.put(("docs",), "car", {"text": "The car needs new tyres."})

    items = client.search(("docs",), query="where does tea grow", limit=2)

    assert [i.key for i in items] == ["tea", "coffee"]
    assert items[0].score >= items[1].score
    assert all(0.0 <= i.score <= 1.0 for i in items)


def test_search_without_query_lists_items(client):
    for key in ["a", "b", "c"]:
        client.put(("docs", "x"), key, {"text": f"Item {key}."})
    client.put(("other",), "z", {"text": "Elsewhere."})

    items = client.search(("docs",))

    assert [i.key for i in items] == ["a", "b", "c"]
    assert all(i.score is None for i in items)
    assert [i.key for i in client.search(("docs",), limit=1, offset=1)] == ["b"]
    assert [i.key for i in client.search((), limit=10)] == ["a", "b", "c", "z"]


def test_search_filters(client):
    client.put(("docs",), "a", {"text": "Tea from Assam.", "kind": "tea", "price": 4, "meta": {"lang": "en", "v": 1}})
    client.put(("docs",), "b", {"text": "Tea from Kenya.", "kind": "tea", "price": 9, "meta": {"lang": "sw", "v": 1}})
    client.put(("docs",), "c", {"text": "Coffee from Peru.", "kind": "coffee", "price": 6})

    assert [i.key for i in client.search(("docs",), filter={"kind": "tea"})] == ["a", "b"]
    assert [i.key for i in client.search(("docs",), filter={"price": {"$gt": 5}})] == ["b", "c"]
    assert sorted(i.key for i in client.search(("docs",), query="tea", filter={"price": {"$lte": 6}})) == ["a", "c"]
    assert [i.key for i in client.search(("docs",), filter={"meta": {"lang": "sw"}})] == ["b"]
    assert [i.key for i in client.search(("docs",), query="tea", filter={"meta": {"lang": "sw"}})] == ["b"]
    assert [i.key for i in client.search(("docs",), filter={"meta": None})] == ["c"]


def test_search_with_query_respects_limit_and_offset(client):
    for key in ["a", "b", "c", "d"]:
        client.put(("docs",), key, {"text": f"Tea note {key}."})

    everything = [i.key for i in client.search(("docs",), query="tea note", limit=4)]
    page = [i.key for i in client.search(("docs",), query="tea note", limit=2, offset=1)]

    assert sorted(everything) == ["a", "b", "c", "d"]
    assert page == everything[1:3]


def test_list_namespaces(client):
    for namespace in [("users", "ana", "notes"), ("users", "bob", "notes"), ("users", "bob", "todo"), ("teams", "x")]:
        client.put(namespace, "k", {"text": "something"})

    assert client.list_namespaces() == [
        ("teams", "x"), ("users", "ana", "notes"), ("users", "bob", "notes"), ("users", "bob", "todo"),
    ]
    assert client.list_namespaces(prefix=("users",), max_depth=2) == [("users", "ana"), ("users", "bob")]
    assert client.list_namespaces(suffix=("notes",)) == [("users", "ana", "notes"), ("users", "bob", "notes")]
    assert client.list_namespaces(prefix=("users", "*", "todo")) == [("users", "bob", "todo")]
    assert client.list_namespaces(limit=1, offset=1) == [("users", "ana", "notes")]
    client.delete(("teams", "x"), "k")
    assert ("teams", "x") not in client.list_namespaces()


# ---------------------------------------------------------------------- index configuration


def test_empty_fields_embed_nothing_unless_put_opts_in(mode):
    client = Client(new_store(index={"fields": []}), mode)
    client.put(("docs",), "plain", {"text": "Tea grows in Assam."})
    client.put(("docs",), "opted", {"text": "Tea grows in Kenya."}, index=["text"])

    found = client.search(("docs",), query="tea grows")

    assert [i.key for i in found] == ["opted"]
    assert [i.key for i in client.search(("docs",))] == ["plain", "opted"]
    assert client.get(("docs",), "plain").value == {"text": "Tea grows in Assam."}


def test_whole_value_index_finds_nested_text(client):
    value = {"profile": {"pets": [{"kind": "beagle", "name": "Max"}]}}
    client.put(("docs",), "default-fields", value)
    client.put(("docs",), "whole", value, index=["$"])

    found = client.search(("docs",), query="beagle named Max")

    assert [i.key for i in found] == ["whole"]


def test_array_paths_embed_each_element(client):
    client.put(("docs",), "trip", {"stops": [{"city": "Lisbon"}, {"city": "Tokyo"}]}, index=["stops[*].city"])

    assert [i.key for i in client.search(("docs",), query="Tokyo")] == ["trip"]
    assert [i.key for i in client.search(("docs",), query="Lisbon")] == ["trip"]


def test_index_false_is_stored_but_never_found(client):
    client.put(("docs",), "secret", {"text": "Tea grows in Assam."}, index=False)
    client.put(("docs",), "missing-field", {"body": "Tea grows in Assam."})

    assert client.search(("docs",), query="Tea grows in Assam") == []
    assert [i.key for i in client.search(("docs",))] == ["secret", "missing-field"]


def test_reindexing_an_item_makes_it_findable(client):
    client.put(("docs",), "note", {"text": "Tea grows in Assam."}, index=False)
    client.put(("docs",), "note", {"text": "Tea grows in Assam."})

    assert [i.key for i in client.search(("docs",), query="tea")] == ["note"]


def test_default_store_embeds_whole_value(mode):
    client = Client(new_store(), mode)

    client.put(("docs",), "pet", {"animal": {"species": "beagle"}})

    assert [i.key for i in client.search(("docs",), query="beagle")] == ["pet"]


def test_invalid_index_configuration_raises():
    with pytest.raises(InvalidInputError, match="unknown index settings"):
        new_store(index={"field": ["text"]})
    with pytest.raises(InvalidTypeError, match="list of field paths"):
        new_store(index={"fields": "text"})


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize("namespace", [(), ("langgraph", "x"), ("a.b",), ("ok", "")])
def test_batch_rejects_namespace_like_put(client, namespace):
    with pytest.raises(InvalidNamespaceError) as from_put:
        client.put(namespace, "k", {"text": "x"})
    with pytest.raises(InvalidNamespaceError) as from_batch:
        client.batch([PutOp(("fine",), "k", {"text": "x"}), PutOp(namespace, "k", {"text": "x"})])

    assert str(from_batch.value) == str(from_put.value)
    assert client.get(("fine",), "k") is None
    assert len(client.store.memory) == 0


def test_bad_values_write_nothing(client):
    good = PutOp(("docs",), "good", {"text": "fine"})

    with pytest.raises(InvalidTypeError, match="JSON"):
        client.batch([good, PutOp(("docs",), "bad", {"when": object()})])
    with pytest.raises(InvalidInputError, match="JSON"):
        client.batch([good, PutOp(("docs",), "bad", {"ratio": float("nan")})])
    with pytest.raises(InvalidTypeError, match="value must be a dict"):
        client.batch([good, PutOp(("docs",), "bad", ["not", "a", "dict"])])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="reserved"):
        client.put(("docs",), "bad", {"__nuonuo_key__": "x"})
    with pytest.raises(InvalidTypeError, match="index"):
        client.batch([good, PutOp(("docs",), "bad", {"text": "x"}, index="text")])  # type: ignore[arg-type]
    assert len(client.store.memory) == 0


def test_bad_search_arguments_raise(client):
    with pytest.raises(InvalidInputError, match="limit must be >= 0"):
        client.search(("docs",), limit=-1)
    with pytest.raises(InvalidInputError, match=r"\$like"):
        client.search(("docs",), filter={"kind": {"$like": "t"}})
    with pytest.raises(InvalidInputError, match="reserved"):
        client.search(("docs",), filter={"__nuonuo_indexed__": False})
    with pytest.raises(InvalidTypeError, match="GetOp"):
        client.batch(["not an op"])


def test_ttl_is_not_supported(client):
    with pytest.raises(NotImplementedError, match="TTL"):
        client.put(("docs",), "k", {"text": "x"}, ttl=5)
    with pytest.raises(NotImplementedError, match="TTL"):
        client.batch([PutOp(("docs",), "k", {"text": "x"}, ttl=5)])
    assert len(client.store.memory) == 0


def test_batch_reads_before_writes_and_last_put_wins(client):
    client.put(("docs",), "k", {"text": "old"})

    results = client.batch([
        PutOp(("docs",), "k", {"text": "first"}),
        GetOp(("docs",), "k"),
        PutOp(("docs",), "k", {"text": "second"}),
        SearchOp(("docs",)),
        ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("docs",)),)),
    ])

    assert results[0] is None
    assert results[1].value == {"text": "old"}
    assert [i.value for i in results[3]] == [{"text": "old"}]
    assert results[4] == [("docs",)]
    assert client.get(("docs",), "k").value == {"text": "second"}


# ---------------------------------------------------------------------- memory sharing and persistence


def test_store_needs_memory_without_deduplication():
    with pytest.raises(ConfigError, match="deduplicate=False"):
        NuoNuoStore(memory=AssociativeMemory(embedder=HashingEmbedder()))

    store = NuoNuoStore(memory=AssociativeMemory(embedder=HashingEmbedder(), config=MemoryConfig(deduplicate=False)))
    store.put(("a",), "one", {"text": "same"})
    store.put(("a",), "two", {"text": "same"})
    assert sorted(i.key for i in store.search(("a",), query="same")) == ["one", "two"]


def test_store_shares_memory_with_other_adapters():
    memory = AssociativeMemory(embedder=HashingEmbedder(), config=MemoryConfig(deduplicate=False))
    memory.add("A document outside the store.", namespace=("langgraph_store", "docs"))
    store = NuoNuoStore(memory=memory)

    store.put(("docs",), "k", {"text": "A document inside the store."})

    assert [i.key for i in store.search(("docs",))] == ["k"]
    assert [i.key for i in store.search(("docs",), query="document")] == ["k"]


def test_persistence_across_instances(tmp_path):
    path = tmp_path / "store.db"
    first = NuoNuoStore(path=path, embedder=HashingEmbedder())
    first.put(("docs",), "k", {"text": "Tea grows in Assam."})
    created = first.get(("docs",), "k").created_at
    first.memory.close()

    second = NuoNuoStore(path=path, embedder=HashingEmbedder())

    assert second.memory.config.deduplicate is False
    assert second.get(("docs",), "k").created_at == created
    assert [i.key for i in second.search(("docs",), query="tea")] == ["k"]


def test_prefix_search_ranks_across_namespaces():
    store = new_store(index={"fields": ["text"]})
    store.put(("users", "bob"), "car", {"text": "Bob drives a red car."})
    store.put(("users", "ana"), "pet", {"text": "My dog is called Max."})

    assert [i.key for i in store.search(("users",), query="my dog", limit=1)] == ["pet"]


# ---------------------------------------------------------------------- agents


class ToolCallingFakeModel(GenericFakeChatModel):
    """A scripted chat model that accepts tools, for agents."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingFakeModel:
        return self


@tool
def remember(fact: str, runtime: ToolRuntime) -> str:
    """Store a fact about the user for later conversations."""
    key = f"fact-{len(runtime.store.search(('memories', 'ana'), limit=1000))}"
    runtime.store.put(("memories", "ana"), key, {"text": fact})
    return f"stored as {key}"


@tool
def recall(query: str, runtime: ToolRuntime) -> str:
    """Search the stored facts about the user."""
    return "\n".join(i.value["text"] for i in runtime.store.search(("memories", "ana"), query=query, limit=1))


def test_agent_with_store(mode):
    store = new_store(index={"fields": ["text"]})
    model = ToolCallingFakeModel(messages=iter([
        AIMessage("", tool_calls=[{"name": "remember", "args": {"fact": "My dog is Max."}, "id": "c1"}]),
        AIMessage("I will remember that."),
        AIMessage("", tool_calls=[{"name": "remember", "args": {"fact": "I work in Lisbon."}, "id": "c2"}]),
        AIMessage("Noted."),
        AIMessage("", tool_calls=[{"name": "recall", "args": {"query": "my dog"}, "id": "c3"}]),
        AIMessage("Your dog is Max."),
    ]))
    agent = create_agent(model, [remember, recall], store=store)
    requests = ["Remember that my dog is Max.", "I work in Lisbon, remember it.", "What is my dog called?"]

    for request in requests:
        state = {"messages": [HumanMessage(request)]}
        result = agent.invoke(state) if mode == "sync" else asyncio.run(agent.ainvoke(state))

    tool_messages = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert [m.content for m in tool_messages] == ["My dog is Max."]
    assert result["messages"][-1].content == "Your dog is Max."
    assert [i.value["text"] for i in store.search(("memories", "ana"))] == ["My dog is Max.", "I work in Lisbon."]
