"""Behaviour of NuoNuoMemory as a classic LangChain chain memory, sync and async."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from langchain_classic.chains import ConversationChain, LLMChain
from langchain_classic.memory import CombinedMemory, ConversationBufferMemory
from langchain_core.language_models.llms import LLM
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import PromptTemplate
from pydantic import Field

from nuonuo_core import AssociativeMemory, HashingEmbedder, InvalidInputError, InvalidTypeError
from nuonuo_langchain import NuoNuoMemory

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class RecordingLLM(LLM):
    """A fake completion model that records every prompt and replies from a list."""

    responses: list[str]
    prompts: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "recording-fake"

    def _call(self, prompt: str, stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> str:
        self.prompts.append(prompt)
        return self.responses[(len(self.prompts) - 1) % len(self.responses)]


@pytest.fixture(params=["sync", "async"])
def mode(request) -> str:
    return request.param


def load(memory: NuoNuoMemory, inputs: dict[str, Any], mode: str) -> Any:
    if mode == "sync":
        return memory.load_memory_variables(inputs)
    return asyncio.run(memory.aload_memory_variables(inputs))


def save(memory: NuoNuoMemory, inputs: dict[str, Any], outputs: dict[str, Any], mode: str) -> None:
    if mode == "sync":
        memory.save_context(inputs, outputs)
    else:
        asyncio.run(memory.asave_context(inputs, outputs))


def clear(memory: NuoNuoMemory, mode: str) -> None:
    if mode == "sync":
        memory.clear()
    else:
        asyncio.run(memory.aclear())


def stored_texts(memory: NuoNuoMemory) -> list[str]:
    return [record.text for record in memory.memory.list(memory.namespace)]


def new_memory(**fields: Any) -> NuoNuoMemory:
    return NuoNuoMemory(embedder=HashingEmbedder(), **fields)


# ---------------------------------------------------------------------- empty and basic


@pytest.mark.parametrize("return_messages, empty", [(False, ""), (True, [])])
def test_fresh_memory_returns_empty_value(mode, return_messages, empty):
    memory = new_memory(return_messages=return_messages)

    variables = load(memory, {"input": "anything"}, mode)

    assert variables == {"history": empty}
    assert type(variables["history"]) is type(empty)


def test_turn_stores_two_linked_memories(mode):
    memory = new_memory()

    save(memory, {"input": "My dog is called Max."}, {"response": "What a nice name."}, mode)
    save(memory, {"input": "I live in Porto."}, {"response": "Porto is lovely."}, mode)

    records = memory.memory.list(())
    assert [r.text for r in records] == [
        "My dog is called Max.", "What a nice name.", "I live in Porto.", "Porto is lovely.",
    ]
    assert [r.metadata["role"] for r in records] == ["human", "ai", "human", "ai"]
    assert {r.session for r in records} == {"default"}
    assert records[1].id in memory.memory.links(records[0].id)
    assert records[2].id in memory.memory.links(records[1].id)


def test_load_returns_recalled_turns(mode):
    memory = new_memory(k=1)
    save(memory, {"input": "My dog is called Max."}, {"output": "What a nice name."}, mode)
    save(memory, {"input": "The printer is broken again."}, {"output": "Try turning it off."}, mode)

    history = load(memory, {"input": "What is my dog called?"}, mode)["history"]

    assert history == "Human: My dog is called Max."


def test_return_messages_gives_typed_messages(mode):
    memory = new_memory(return_messages=True, k=2)
    save(memory, {"input": "My dog is called Max."}, {"output": "What a nice name."}, mode)

    messages = load(memory, {"input": "my dog Max"}, mode)["history"]

    assert [type(m) for m in messages] == [HumanMessage, AIMessage]
    assert [m.content for m in messages] == ["My dog is called Max.", "What a nice name."]
    assert all(m.id in memory.memory for m in messages)


def test_prefixes_and_memory_key(mode):
    memory = new_memory(memory_key="context", human_prefix="Me", ai_prefix="Bot")
    save(memory, {"question": "My dog is called Max."}, {"answer": "Noted."}, mode)

    variables = load(memory, {"question": "my dog"}, mode)

    assert memory.memory_variables == ["context"]
    assert variables == {"context": "Me: My dog is called Max.\nBot: Noted."}


def test_recent_turns_follow_recalled_ones(mode):
    memory = new_memory(k=1, recent_turns=1)
    save(memory, {"input": "My dog is called Max."}, {"output": "Noted."}, mode)
    save(memory, {"input": "The printer is broken."}, {"output": "Try a restart."}, mode)

    lines = load(memory, {"input": "my dog"}, mode)["history"].splitlines()

    assert lines == [
        "Human: My dog is called Max.",
        "Human: The printer is broken.",
        "AI: Try a restart.",
    ]


def test_recent_turns_are_not_repeated(mode):
    memory = new_memory(k=4, recent_turns=1)
    save(memory, {"input": "My dog is called Max."}, {"output": "Noted."}, mode)

    lines = load(memory, {"input": "my dog"}, mode)["history"].splitlines()

    assert lines == ["Human: My dog is called Max.", "AI: Noted."]


def test_k_zero_keeps_recent_turns_only(mode):
    memory = new_memory(k=0, recent_turns=1)
    save(memory, {"input": "My dog is called Max."}, {"output": "Noted."}, mode)
    save(memory, {"input": "The printer is broken."}, {"output": "Try a restart."}, mode)

    lines = load(memory, {"input": "my dog"}, mode)["history"].splitlines()

    assert lines == ["Human: The printer is broken.", "AI: Try a restart."]


def test_negative_k_rejected():
    with pytest.raises(ValueError, match="k must be >= 0, got -1"):
        new_memory(k=-1)


# ---------------------------------------------------------------------- choosing input and output


def test_persona_prompt_stores_only_input(mode):
    prompt = PromptTemplate.from_template("{persona}\n{history}\nHuman: {input}\nAI:")
    memory = new_memory(input_key="input")
    chain = LLMChain(llm=RecordingLLM(responses=["Ahoy!"]), prompt=prompt, memory=memory)
    inputs = {"input": "Hello there.", "persona": "You are a pirate who loves long speeches."}

    if mode == "sync":
        chain.invoke(inputs)
    else:
        asyncio.run(chain.ainvoke(inputs))

    assert stored_texts(memory) == ["Hello there.", "Ahoy!"]


def test_several_inputs_without_input_key_name_them(mode):
    memory = new_memory()
    inputs = {"input": "Hello there.", "persona": "You are a pirate."}

    with pytest.raises(InvalidInputError, match="input_key") as error:
        load(memory, inputs, mode)

    assert "'input'" in str(error.value)
    assert "'persona'" in str(error.value)
    with pytest.raises(InvalidInputError, match="'persona'"):
        save(memory, inputs, {"text": "Ahoy!"}, mode)
    assert stored_texts(memory) == []


def test_output_with_extra_keys_is_stored_once(mode):
    memory = new_memory()
    outputs = {"output": "hello", "messages": [HumanMessage("hi"), AIMessage("hello")]}

    save(memory, {"input": "hi"}, outputs, mode)

    assert stored_texts(memory) == ["hi", "hello"]


def test_output_key_and_message_values(mode):
    memory = new_memory(output_key="answer")

    save(memory, {"input": "hi"}, {"answer": AIMessage("hello"), "sources": ["a", "b"]}, mode)

    assert stored_texts(memory) == ["hi", "hello"]


def test_ambiguous_outputs_raise(mode):
    memory = new_memory()

    with pytest.raises(InvalidInputError, match="output_key"):
        save(memory, {"input": "hi"}, {"first": "a", "second": "b"}, mode)
    with pytest.raises(InvalidInputError, match="'missing'"):
        save(new_memory(output_key="missing"), {"input": "hi"}, {"output": "a"}, mode)
    assert stored_texts(memory) == []


def test_unsupported_input_type_raises():
    memory = new_memory()

    with pytest.raises(InvalidTypeError, match="'input'"):
        memory.save_context({"input": {"nested": "dict"}}, {"output": "a"})


def test_buffer_transcript_does_not_grow_items(mode):
    buffer = ConversationBufferMemory(memory_key="chat_history", input_key="input")
    memory = new_memory()
    prompt = PromptTemplate.from_template("{chat_history}\n{history}\nHuman: {input}\nAI:")
    chain = LLMChain(
        llm=RecordingLLM(responses=["Reply one.", "Reply two.", "Reply three."]),
        prompt=prompt,
        memory=CombinedMemory(memories=[buffer, memory]),
    )
    questions = ["First question?", "Second question?", "Third question?"]

    for question in questions:
        if mode == "sync":
            chain.invoke({"input": question})
        else:
            asyncio.run(chain.ainvoke({"input": question}))

    assert stored_texts(memory) == [
        "First question?", "Reply one.", "Second question?", "Reply two.",
        "Third question?", "Reply three.",
    ]
    assert "Third question?" in buffer.buffer_as_str


def test_transcript_input_without_load_needs_input_key(mode):
    memory = new_memory()
    inputs = {"input": "Second question?", "chat_history": "Human: First question?\nAI: Reply one."}

    with pytest.raises(InvalidInputError, match="'chat_history'"):
        save(memory, inputs, {"output": "Reply two."}, mode)
    save(new_memory(input_key="input"), inputs, {"output": "Reply two."}, mode)


def test_message_lists_store_two_per_turn(mode):
    memory = new_memory()
    history: list[Any] = []
    turns = [("Hi, I am Ana.", "Hello Ana."), ("I like tea.", "Tea is nice."), ("Bye!", "Goodbye.")]

    for question, answer in turns:
        history.append(HumanMessage(question))
        save(memory, {"input": list(history)}, {"output": AIMessage(answer)}, mode)
        history.append(AIMessage(answer))

    texts = stored_texts(memory)
    assert texts == [text for turn in turns for text in turn]
    assert len(texts) == len(set(texts))


def test_blank_output_stores_only_input(mode):
    memory = new_memory()

    save(memory, {"input": "Are you there?"}, {"output": "   "}, mode)

    assert stored_texts(memory) == ["Are you there?"]


# ---------------------------------------------------------------------- async and sync agree


def test_async_matches_sync():
    sync_memory = new_memory(return_messages=True, recent_turns=1)
    async_memory = new_memory(return_messages=True, recent_turns=1)
    turns = [("My dog is called Max.", "Nice."), ("I work in Lisbon.", "Cool."), ("I like jazz.", "Me too.")]

    async def fill_and_load() -> Any:
        for question, answer in turns:
            await async_memory.asave_context({"input": question}, {"output": answer})
        return await async_memory.aload_memory_variables({"input": "where do I work"})

    for question, answer in turns:
        sync_memory.save_context({"input": question}, {"output": answer})
    expected = sync_memory.load_memory_variables({"input": "where do I work"})
    result = asyncio.run(fill_and_load())

    assert [m.content for m in result["history"]] == [m.content for m in expected["history"]]
    assert stored_texts(async_memory) == stored_texts(sync_memory)


def test_async_methods_run_off_the_event_loop(monkeypatch):
    memory = new_memory()
    threads: list[threading.Thread] = []
    original_recall = AssociativeMemory.recall
    original_add_many = AssociativeMemory.add_many

    def recording_recall(self, *args, **kwargs):
        threads.append(threading.current_thread())
        return original_recall(self, *args, **kwargs)

    def recording_add_many(self, *args, **kwargs):
        threads.append(threading.current_thread())
        return original_add_many(self, *args, **kwargs)

    monkeypatch.setattr(AssociativeMemory, "recall", recording_recall)
    monkeypatch.setattr(AssociativeMemory, "add_many", recording_add_many)

    async def run() -> threading.Thread:
        await memory.asave_context({"input": "hi"}, {"output": "hello"})
        await memory.aload_memory_variables({"input": "hi"})
        return threading.current_thread()

    loop_thread = asyncio.run(run())

    assert len(threads) == 2
    assert all(thread is not loop_thread for thread in threads)


# ---------------------------------------------------------------------- clear, sessions, persistence


def test_clear_deletes_only_own_session(mode):
    shared = AssociativeMemory(embedder=HashingEmbedder())
    ours = NuoNuoMemory(memory=shared, session_id="ours")
    theirs = NuoNuoMemory(memory=shared, session_id="theirs")
    shared.add("A document that no session owns.")
    save(ours, {"input": "hi"}, {"output": "hello"}, mode)
    save(theirs, {"input": "good day"}, {"output": "likewise"}, mode)

    clear(ours, mode)

    assert sorted(r.text for r in shared.list(())) == [
        "A document that no session owns.", "good day", "likewise",
    ]
    assert load(ours, {"input": "hi"}, mode)["history"] != ""  # other memories are still recalled


def test_namespace_isolates_conversations(mode):
    shared = AssociativeMemory(embedder=HashingEmbedder())
    alice = NuoNuoMemory(memory=shared, namespace="alice")
    bob = NuoNuoMemory(memory=shared, namespace=("bob",))
    save(alice, {"input": "My dog is called Max."}, {"output": "Noted."}, mode)

    assert load(bob, {"input": "my dog"}, mode) == {"history": ""}
    assert "Max" in load(alice, {"input": "my dog"}, mode)["history"]


def test_persistence_across_instances(tmp_path, mode):
    path = tmp_path / "conversation.db"
    first = NuoNuoMemory(path=path, embedder=HashingEmbedder(), session_id="s1")
    save(first, {"input": "My dog is called Max."}, {"output": "Noted."}, mode)
    first.memory.close()

    second = NuoNuoMemory(path=str(path), embedder=HashingEmbedder(), session_id="s1", recent_turns=1)
    history = load(second, {"input": "what is my dog called"}, mode)["history"]

    assert history == "Human: My dog is called Max.\nAI: Noted."


# ---------------------------------------------------------------------- chains and multi-hop


def test_conversation_chain_end_to_end(mode):
    llm = RecordingLLM(responses=["Nice to meet you, Ana.", "Porto is a lovely city.", "You said Porto."])
    memory = new_memory(k=2)
    chain = ConversationChain(llm=llm, memory=memory)

    for question in ["Hi, my name is Ana.", "I live in Porto.", "Where do I live?"]:
        if mode == "sync":
            result = chain.invoke({"input": question})
        else:
            result = asyncio.run(chain.ainvoke({"input": question}))

    assert result["response"] == "You said Porto."
    assert len(memory.memory) == 6
    assert "Human: I live in Porto." in llm.prompts[2]
    assert "Current conversation:\n\nHuman: Hi, my name is Ana." in llm.prompts[0]


@pytest.mark.slow
def test_two_hop_fact_reaches_history(real_embedder, mode):
    memory = NuoNuoMemory(embedder=real_embedder, k=3, hops=2)
    turns = [
        ("My dog is Max.", "Got it."),
        ("I work as a nurse in Lisbon.", "Sounds demanding."),
        ("Max loves the beach.", "How lovely."),
        ("My sister plays the violin.", "Beautiful instrument."),
    ]
    for question, answer in turns:
        save(memory, {"input": question}, {"output": answer}, mode)

    assert "Max loves the beach." in load(memory, {"input": "Tell me about my dog"}, mode)["history"]


@pytest.mark.parametrize("hops, expected", [(None, None), (1, 1), (3, 3)])
def test_k_and_hops_reach_recall(monkeypatch, mode, hops, expected):
    memory = new_memory(k=2, hops=hops)
    calls: list[dict[str, Any]] = []
    original_recall = AssociativeMemory.recall

    def recording_recall(self, query, k=5, **kwargs):
        calls.append({"query": query, "k": k, **kwargs})
        return original_recall(self, query, k, **kwargs)

    monkeypatch.setattr(AssociativeMemory, "recall", recording_recall)
    load(memory, {"input": "my dog"}, mode)

    assert calls == [{"query": "my dog", "k": 2, "hops": expected, "namespace": ()}]


# ---------------------------------------------------------------------- construction


def test_memory_excludes_path_and_embedder(tmp_path):
    shared = AssociativeMemory(embedder=HashingEmbedder())

    # pydantic wraps the InvalidInputError in a ValidationError, also a ValueError.
    with pytest.raises(ValueError, match="path"):
        NuoNuoMemory(memory=shared, path=tmp_path / "x.db")
    with pytest.raises(ValueError, match="embedder"):
        NuoNuoMemory(memory=shared, embedder=HashingEmbedder())
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("field, value", [("k", -1), ("hops", 0), ("recent_turns", -1), ("namespace", 5)])
def test_invalid_fields_raise(field, value):
    with pytest.raises(ValueError, match=field):
        new_memory(**{field: value})


def test_last_recall_keeps_paths():
    memory = new_memory(k=3, hops=2)
    assert memory.last_recall == []
    memory.save_context({"input": "my dog is called Max"}, {"output": "noted"})
    memory.save_context({"input": "Max loves the beach"}, {"output": "nice"})
    memory.load_memory_variables({"input": "my dog"})
    recalled = memory.last_recall
    assert recalled
    assert all(result.path[-1] == result.id for result in recalled)
    assert any(result.hops >= 1 for result in recalled)
