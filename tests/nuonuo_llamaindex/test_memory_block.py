"""NuoNuoMemoryBlock inside LlamaIndex Memory and chat engines."""

from __future__ import annotations

import pytest
from llama_index.core import Document
from llama_index.core.base.llms.types import ImageBlock, TextBlock
from llama_index.core.chat_engine import ContextChatEngine, SimpleChatEngine
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.memory import FactExtractionMemoryBlock, Memory, StaticMemoryBlock

from nuonuo_core import AssociativeMemory, HashingEmbedder, MemoryConfig
from nuonuo_llamaindex import NuoNuoMemoryBlock, NuoNuoRetriever

THAI = "the user likes Thai food"
CAT = "the user has a cat"
PET_QUESTION = "what toy should I buy for my pet?"
DISTRACTORS = [
    "the user works as a nurse on night shifts",
    "the user's favourite colour is teal",
    "the user is learning to play the violin",
]


def _memory(embedder) -> AssociativeMemory:
    return AssociativeMemory(embedder=embedder, config=MemoryConfig(device="cpu"))


def _chat_memory(block: NuoNuoMemoryBlock, token_limit: int = 2000, **kwargs) -> Memory:
    return Memory.from_defaults(memory_blocks=[block], token_limit=token_limit, **kwargs)


async def _get(memory: Memory, use_async: bool, **kwargs) -> list[ChatMessage]:
    if use_async:
        return await memory.aget(**kwargs)
    return memory.get(**kwargs)


async def _put(memory: Memory, message: ChatMessage, use_async: bool) -> None:
    if use_async:
        await memory.aput(message)
    else:
        memory.put(message)


async def _chat(engine, message: str, use_async: bool) -> str:
    if use_async:
        return (await engine.achat(message)).response
    return engine.chat(message).response


def _system_text(messages: list[ChatMessage]) -> str:
    return "\n".join(m.content or "" for m in messages if m.role == "system")


def _facts_memory(embedder) -> AssociativeMemory:
    memory = _memory(embedder)
    memory.add_many([THAI, CAT, *DISTRACTORS])
    return memory


@pytest.fixture(scope="module")
def shared_facts(real_embedder) -> AssociativeMemory:
    """The facts, stored once per module, for tests that only read them."""
    return _facts_memory(real_embedder)


@pytest.fixture
def facts_block(shared_facts) -> NuoNuoMemoryBlock:
    return NuoNuoMemoryBlock(memory=shared_facts, similarity_top_k=1)


@pytest.fixture
def own_block(real_embedder) -> NuoNuoMemoryBlock:
    """A block over its own copy of the facts, for tests that store messages."""
    return NuoNuoMemoryBlock(memory=_facts_memory(real_embedder), similarity_top_k=1)


# ---------------------------------------------------------------------- recall


@pytest.mark.parametrize("use_async", [False, True])
async def test_pet_question_recalls_cat_same_turn(facts_block, use_async):
    memory = _chat_memory(facts_block)
    await _put(memory, ChatMessage(role="user", content=PET_QUESTION), use_async)
    context = _system_text(await _get(memory, use_async))
    assert CAT in context
    assert THAI not in context


@pytest.mark.parametrize("use_async", [False, True])
async def test_simple_engine_first_turn_sees_cat(facts_block, use_async):
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(), memory=_chat_memory(facts_block))
    # MockLLM echoes its prompt, so the reply shows the context of the turn.
    reply = await _chat(engine, PET_QUESTION, use_async)
    assert CAT in reply
    assert THAI not in reply


@pytest.mark.parametrize("use_async", [False, True])
async def test_context_engine_first_turn_sees_cat(facts_block, hashing_embedder, use_async):
    documents = NuoNuoRetriever.from_documents(
        [Document(text="Cats enjoy feather wands and puzzle feeders.")], _memory(hashing_embedder)
    )
    engine = ContextChatEngine.from_defaults(documents, llm=MockLLM(), memory=_chat_memory(facts_block))
    reply = await _chat(engine, PET_QUESTION, use_async)
    assert CAT in reply
    assert "feather wands" in reply
    assert THAI not in reply


@pytest.mark.parametrize("use_async", [False, True])
async def test_flushed_fact_recalled_later(real_embedder, use_async):
    block = NuoNuoMemoryBlock(memory=_memory(real_embedder), similarity_top_k=2)
    # A small window, so that the early turns are flushed into the block.
    memory = _chat_memory(block, token_limit=60, token_flush_size=10)
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=5), memory=memory)
    fact = "By the way, I have a cat called Miso."
    await _chat(engine, fact, use_async)
    for topic in ("the train timetable", "tomorrow's weather", "a good pasta recipe", "my tax forms"):
        await _chat(engine, f"Can you tell me something about {topic}?", use_async)
    assert fact in [record.text for record in block.memory.list()]

    await _put(memory, ChatMessage(role="user", content=PET_QUESTION), use_async)
    messages = await _get(memory, use_async)
    assert f"- user: {fact}" in _system_text(messages)
    assert all(fact not in (m.content or "") for m in messages if m.role != "system")


@pytest.mark.parametrize("use_async", [False, True])
async def test_top_k_zero_recalls_nothing(facts_block, use_async):
    block = facts_block.model_copy(update={"similarity_top_k": 0})
    memory = _chat_memory(block)
    await _put(memory, ChatMessage(role="user", content=PET_QUESTION), use_async)
    assert CAT not in _system_text(await _get(memory, use_async))
    assert await block.aget([ChatMessage(role="user", content=PET_QUESTION)]) == ""


async def test_empty_input_gives_empty_block(facts_block):
    assert await facts_block.aget([]) == ""
    assert await facts_block.aget(None) == ""
    image_only = ChatMessage(role="user", blocks=[ImageBlock(url="http://127.0.0.1/cat.png")])
    assert await facts_block.aget([image_only]) == ""


def test_queries_newest_user_then_window(hashing_embedder):
    block = NuoNuoMemoryBlock(memory=_memory(hashing_embedder), retrieval_context_window=2)
    history = [
        ChatMessage(role="user", content="I am planning a trip to visit my sister."),
        ChatMessage(role="assistant", content="Nice, where does she live?"),
        ChatMessage(role="user", content="Remind me where that is?"),
        ChatMessage(role="assistant", content="I do not know yet."),
    ]
    assert block._queries(history) == [
        "Remind me where that is?",
        "I do not know yet.\nRemind me where that is?",
    ]
    assert block._queries(history[:1]) == ["I am planning a trip to visit my sister."]
    assert block._queries([ChatMessage(role="assistant", content="Hello!")]) == ["Hello!"]


async def test_window_brings_earlier_context(real_embedder):
    memory = _memory(real_embedder)
    memory.add_many(["the user's sister lives in Lisbon", "the user is allergic to peanuts"])
    block = NuoNuoMemoryBlock(memory=memory, similarity_top_k=1, retrieval_context_window=3)
    history = [
        ChatMessage(role="user", content="I am planning a trip to visit my sister."),
        ChatMessage(role="assistant", content="Nice, which city?"),
        ChatMessage(role="user", content="Remind me, which city was it?"),
    ]
    assert "Lisbon" in await block.aget(history)


# ---------------------------------------------------------------------- storing


async def test_flush_stores_one_memory_per_message(hashing_embedder):
    block = NuoNuoMemoryBlock(memory=_memory(hashing_embedder), namespace="alice")
    messages = [
        ChatMessage(role="user", content="I bought a green kayak."),
        ChatMessage(role="assistant", content="Where will you paddle it?"),
        ChatMessage(role="user", blocks=[ImageBlock(url="http://127.0.0.1/kayak.png")]),
        ChatMessage(role="user", blocks=[TextBlock(text="On the lake"), TextBlock(text="near the cabin.")]),
    ]
    await block.aput(messages, from_short_term_memory=True, session_id="chat-1")

    records = block.memory.list(("alice",))
    assert [r.text for r in records] == [
        "I bought a green kayak.", "Where will you paddle it?", "On the lake\nnear the cabin."
    ]
    assert [r.metadata["role"] for r in records] == ["user", "assistant", "user"]
    assert {r.session for r in records} == {"chat-1"}
    assert records[1].id in block.memory.links(records[0].id)
    assert records[2].id in block.memory.links(records[1].id)
    assert block.memory.count(()) == 0


async def test_own_session_id_wins(hashing_embedder):
    block = NuoNuoMemoryBlock(memory=_memory(hashing_embedder), session_id="mine")
    await block.aput([ChatMessage(role="user", content="first")], session_id="theirs")
    await block.aput([ChatMessage(role="user", content="second")])
    assert {r.session for r in block.memory.list()} == {"mine"}


async def test_block_without_session_links_its_messages(hashing_embedder):
    block = NuoNuoMemoryBlock(memory=_memory(hashing_embedder))
    await block.aput([ChatMessage(role="user", content="first note")])
    await block.aput([ChatMessage(role="user", content="second note")])
    first, second = block.memory.list()
    assert first.session is not None
    assert first.session == second.session
    assert second.id in block.memory.links(first.id)


async def test_short_term_refused_when_configured(hashing_embedder):
    block = NuoNuoMemoryBlock(memory=_memory(hashing_embedder), accept_short_term_memory=False)
    await block.aput([ChatMessage(role="user", content="flushed")], from_short_term_memory=True)
    assert len(block.memory) == 0
    await block.aput([ChatMessage(role="user", content="put on purpose")])
    assert len(block.memory) == 1


# ---------------------------------------------------------------------- no mutation


@pytest.mark.parametrize("use_async", [False, True])
async def test_caller_messages_unchanged(own_block, use_async):
    messages = [
        ChatMessage(role="user", content="I have a cat.", additional_kwargs={"trace": "a"}),
        ChatMessage(role="assistant", content="Lovely!"),
        ChatMessage(role="user", content=PET_QUESTION),
    ]
    before = [m.model_dump() for m in messages]
    memory = _chat_memory(own_block, token_limit=40, token_flush_size=10)
    for message in messages:
        await _put(memory, message, use_async)
    await _get(memory, use_async)
    await _get(memory, use_async, input=PET_QUESTION)
    await own_block.aput(messages, from_short_term_memory=True, session_id="s-1")
    await own_block.aget(messages, session_id="s-1")
    assert [m.model_dump() for m in messages] == before


async def test_reading_keeps_block_settings(facts_block):
    settings = facts_block.model_dump(exclude={"memory"})
    stored = len(facts_block.memory)
    await facts_block.aget([ChatMessage(role="user", content=PET_QUESTION)], session_id="other")
    assert facts_block.model_dump(exclude={"memory"}) == settings
    assert len(facts_block.memory) == stored


# ---------------------------------------------------------------------- token limit


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("engine_kind", ["simple", "context"])
async def test_overlong_message_does_not_raise(own_block, hashing_embedder, engine_kind, use_async):
    memory = _chat_memory(own_block, token_limit=60, token_flush_size=10)
    if engine_kind == "simple":
        engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=5), memory=memory)
    else:
        retriever = NuoNuoRetriever.from_documents([Document(text="Cats nap a lot.")], _memory(hashing_embedder))
        engine = ContextChatEngine.from_defaults(retriever, llm=MockLLM(max_tokens=5), memory=memory)
    long_message = " ".join(["My cat knocked every glass off the kitchen shelf again today."] * 80)
    await _chat(engine, "hello", use_async)
    await _chat(engine, long_message, use_async)
    await _chat(engine, PET_QUESTION, use_async)
    assert any(len(r.text) > 2000 for r in own_block.memory.list())


async def test_truncate_drops_lowest_ranked_first(facts_block):
    content = "- first memory\n- second memory\n- third memory"
    assert await facts_block.atruncate(content, 1) == "- first memory\n- second memory"
    assert await facts_block.atruncate(content, 6) == "- first memory"
    assert await facts_block.atruncate(content, 1000) is None
    assert await facts_block.atruncate(content, 0) == content


@pytest.mark.parametrize("use_async", [False, True])
async def test_priorities_beside_static_and_fact_blocks(real_embedder, use_async):
    core = _memory(real_embedder)
    core.add_many([CAT, "the user's cat is called Miso", "the user's cat likes chasing laser dots"])
    static = StaticMemoryBlock(name="profile", static_content="The user's name is Ada.", priority=0)
    facts = FactExtractionMemoryBlock(
        name="facts", llm=MockLLM(), facts=["The user lives in Porto."], priority=2
    )
    block = NuoNuoMemoryBlock(name="recalled", memory=core, similarity_top_k=3, priority=1)
    question = ChatMessage(role="user", content=PET_QUESTION)

    roomy = Memory.from_defaults(memory_blocks=[static, facts, block], token_limit=2000)
    await _put(roomy, question, use_async)
    full = _recalled_lines(_system_text(await _get(roomy, use_async)))
    assert len(full) == 3

    # The limit is tight enough that the priority-1 block gives up some
    # memories but keeps its best ones, and the other blocks stay whole.
    tight = Memory.from_defaults(memory_blocks=[static, facts, block], token_limit=45)
    await _put(tight, question, use_async)
    context = _system_text(await _get(tight, use_async))
    truncated = _recalled_lines(context)
    assert 0 < len(truncated) < 3
    assert truncated == full[: len(truncated)]
    assert "The user's name is Ada." in context
    assert "The user lives in Porto." in context
    assert block.similarity_top_k == 3


def _recalled_lines(context: str) -> list[str]:
    section = context.split("<recalled>")[1].split("</recalled>")[0]
    return [line for line in section.splitlines() if line.startswith("- ")]


# ---------------------------------------------------------------------- fields


def test_bad_fields_rejected(hashing_embedder):
    memory = _memory(hashing_embedder)
    with pytest.raises(ValueError, match="similarity_top_k"):
        NuoNuoMemoryBlock(memory=memory, similarity_top_k=-1)
    with pytest.raises(ValueError, match="hops"):
        NuoNuoMemoryBlock(memory=memory, hops=0)
    with pytest.raises(ValueError, match="retrieval_context_window"):
        NuoNuoMemoryBlock(memory=memory, retrieval_context_window=0)
    with pytest.raises(ValueError, match="namespace"):
        NuoNuoMemoryBlock(memory=memory, namespace=("ok", ""))
    with pytest.raises(ValueError, match="memory"):
        NuoNuoMemoryBlock(memory=42)
    block = NuoNuoMemoryBlock(memory=memory, namespace="alice")
    assert block.namespace == ("alice",)
    with pytest.raises(ValueError, match="similarity_top_k"):
        block.similarity_top_k = -2
    assert block.similarity_top_k == 2


async def test_persists_across_instances(tmp_path, real_embedder):
    path = tmp_path / "chat.db"
    first = NuoNuoMemoryBlock(memory=AssociativeMemory(path, embedder=real_embedder), namespace="ada")
    await first.aput(
        [ChatMessage(role="user", content="My cat is called Miso."), ChatMessage(role="user", content=THAI)],
        session_id="day-1",
    )
    first.memory.close()

    second = NuoNuoMemoryBlock(
        memory=AssociativeMemory(path, embedder=real_embedder), namespace="ada", similarity_top_k=1
    )
    content = await second.aget([ChatMessage(role="user", content=PET_QUESTION)])
    assert content == "- user: My cat is called Miso."
    second.memory.close()


async def test_path_opens_memory_file(tmp_path):
    path = tmp_path / "hashing.db"
    with AssociativeMemory(path, embedder=HashingEmbedder()) as memory:
        memory.add("the kayak is stored in the garage")
    block = NuoNuoMemoryBlock(memory=str(path), similarity_top_k=1)
    assert await block.aget([ChatMessage(role="user", content="where is the kayak stored")]) == (
        "- the kayak is stored in the garage"
    )
    block.memory.close()
