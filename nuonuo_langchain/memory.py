"""A LangChain chain memory that recalls past turns by association."""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any

from langchain_classic.base_memory import BaseMemory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, get_buffer_string
from pydantic import Field, PrivateAttr, field_validator, model_validator

from nuonuo_core import AssociativeMemory, InvalidInputError, MemoryConfig, MemoryRecord, RecallResult
from nuonuo_core.memory import check_k
from nuonuo_langchain._common import (
    check_hops,
    input_message_text,
    normalize_namespace,
    open_memory,
    output_message_text,
)

ROLE_KEY = "role"
"""Metadata key of the speaker of a stored turn: ``"human"`` or ``"ai"``."""

SESSION_KEY = "session_id"
"""Metadata key of the conversation a stored turn belongs to."""

HUMAN_ROLE = "human"
AI_ROLE = "ai"

DEFAULT_CONFIG = MemoryConfig(deduplicate=False)
"""Configuration of a conversation memory built without one. Deduplication is off
because a repeated utterance ("Thanks!") is a new turn. Merged into one memory,
it would link every turn it follows and draw multi-hop recall to them all."""

# Chain inputs that never hold a turn: LangChain passes stop sequences as "stop".
_IGNORED_INPUT_KEYS = frozenset({"stop"})

# Output keys tried, in order, when a chain returns several outputs and no
# output_key is set. "output" is the one LangChain's own chat memories fall back to.
_DEFAULT_OUTPUT_KEYS = ("output",)


class NuoNuoMemory(BaseMemory):
    """Conversation memory for LangChain chains, backed by an associative memory.

    Drop-in replacement for ``ConversationBufferMemory`` and the other classic
    chain memories (``ConversationChain(llm=..., memory=NuoNuoMemory())``).
    Each saved turn stores two memories, the human input and the AI output, in
    one core session, so consecutive turns are linked. Loading recalls the
    ``k`` memories that best match the current input (following links for
    ``hops`` > 1) and optionally appends the last ``recent_turns`` turns
    verbatim.

    Without ``path`` or ``memory`` everything is kept in RAM and lost when the
    process exits.

    Example:
        >>> from nuonuo_core import HashingEmbedder
        >>> memory = NuoNuoMemory(embedder=HashingEmbedder(), hops=2)
        >>> memory.save_context({"input": "My dog is Max."}, {"output": "Nice name!"})
        >>> memory.load_memory_variables({"input": "What is my dog called?"})["history"]
        'Human: My dog is Max.\\nAI: Nice name!'
    """

    memory: AssociativeMemory | None = Field(default=None, exclude=True)
    """The associative memory that stores the turns. Built from ``path``,
    ``config`` and ``embedder`` when not given."""

    path: str | None = None
    """SQLite file that keeps the memory across processes; RAM only when ``None``.
    Excludes ``memory``."""

    config: MemoryConfig | None = Field(default=None, exclude=True)
    """Configuration of a memory built here; excludes ``memory``. A new memory gets
    :data:`DEFAULT_CONFIG` when ``None``, and an existing file keeps its own."""

    embedder: Any = Field(default=None, exclude=True)
    """Embedder of a memory built here; the packaged all-MiniLM-L6-v2 when ``None``.
    Excludes ``memory``."""

    namespace: tuple[str, ...] = ()
    """Core namespace the turns are stored in and recalled from; a str is a 1-tuple."""

    session_id: str = "default"
    """Conversation the saved turns belong to. Turns of one session are linked, and
    ``recent_turns`` and :meth:`clear` act on this session only."""

    k: int = 4
    """Number of memories recalled for the current input. With 0 nothing is
    recalled, so only the ``recent_turns`` fill the history."""

    hops: int | None = None
    """Hops of recall: 1 is single-hop, 2 also returns memories linked to the direct
    hits. ``None`` uses the memory's ``config.hops``."""

    recent_turns: int = 0
    """Number of latest turns of this session added verbatim after the recalled
    memories. It is counted as two memories per turn, so a turn saved without
    an output lets one memory of an older turn in."""

    memory_key: str = "history"
    """Chain input variable that receives the memories."""

    input_key: str | None = None
    """Chain input that contains the human turn. When ``None`` it is the only input that
    is not a memory variable or ``stop``."""

    output_key: str | None = None
    """Chain output that contains the AI turn. When ``None`` it is the only output, else
    ``"output"``, else the only output with a text or message value."""

    return_messages: bool = False
    """Return a list of messages instead of one string."""

    human_prefix: str = "Human"
    """Prefix of human turns in the string form."""

    ai_prefix: str = "AI"
    """Prefix of AI turns in the string form."""

    _load_input_keys: frozenset[str] | None = PrivateAttr(default=None)
    _last_recall: list[RecallResult] = PrivateAttr(default_factory=list)

    @field_validator("namespace", mode="before")
    @classmethod
    def _check_namespace(cls, value: Any) -> tuple[str, ...]:
        return normalize_namespace(value)

    @field_validator("path", mode="before")
    @classmethod
    def _check_path(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("k")
    @classmethod
    def _check_k(cls, value: int) -> int:
        return check_k(value)

    @field_validator("hops")
    @classmethod
    def _check_hops(cls, value: int | None) -> int | None:
        return None if value is None else check_hops(value)

    @field_validator("recent_turns")
    @classmethod
    def _check_recent_turns(cls, value: int) -> int:
        if value < 0:
            raise InvalidInputError(f"recent_turns must be >= 0, got {value}")
        return value

    @model_validator(mode="after")
    def _open_memory(self) -> NuoNuoMemory:
        self.memory = open_memory(
            self.memory, self.path, self.config, self.embedder, default_config=DEFAULT_CONFIG
        )
        return self

    def _core(self) -> AssociativeMemory:
        assert self.memory is not None  # set by the model validator
        return self.memory

    @property
    def memory_variables(self) -> list[str]:
        """The chain input variables this memory fills: ``[memory_key]``."""
        return [self.memory_key]

    # ------------------------------------------------------------------ load

    def load_memory_variables(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Return ``{memory_key: memories}`` for the current input.

        The memories are the ``k`` recalled for the input text, oldest first,
        followed by the last ``recent_turns`` turns of this session. They are a
        string (``human_prefix: ...`` lines) or, with ``return_messages``, a list
        of messages; an empty memory gives ``""`` or ``[]``.
        """
        query = self._query_text(inputs)
        memory = self._core()

        recalled: list[RecallResult] = []
        if query is not None:
            recalled = memory.recall(query, self.k, hops=self.hops, namespace=self.namespace)
        self._last_recall = list(recalled)
        recent = self._recent_records()
        return {self.memory_key: self._render(recalled, recent)}

    @property
    def last_recall(self) -> list[RecallResult]:
        """The memories recalled by the latest load, best first, with their scores
        and association paths; ``[]`` before the first load."""
        return list(self._last_recall)

    async def aload_memory_variables(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Async :meth:`load_memory_variables`; the recall runs in a worker thread."""
        return await asyncio.to_thread(self.load_memory_variables, inputs)

    def _query_text(self, inputs: dict[str, Any]) -> str | None:
        """Return the text to recall by, or ``None`` when the inputs contain no turn."""
        candidates = self._candidate_input_keys(inputs)
        self._load_input_keys = frozenset(candidates)
        if self.input_key is None and not candidates:
            return None
        key = self._choose_input_key(inputs, candidates)
        return input_message_text(inputs[key], key)

    def _recent_records(self) -> list[MemoryRecord]:
        if self.recent_turns == 0:
            return []
        # NOTE: lists every stored turn of the session, so loading slows down
        # linearly with the length of the conversation.
        records = self._core().list(
            self.namespace, filter={SESSION_KEY: self.session_id}
        )
        return records[-2 * self.recent_turns:]

    def _render(self, recalled: list[RecallResult], recent: list[MemoryRecord]) -> str | list[BaseMessage]:
        # Recalled memories oldest first, without those shown again as recent turns.
        recent_ids = {record.id for record in recent}
        recalled = [result for result in recalled if result.id not in recent_ids]
        recalled.sort(key=_chronological_key)
        messages = [_to_message(r.id, r.text, r.metadata) for r in recalled]
        messages += [_to_message(r.id, r.text, r.metadata) for r in recent]

        if self.return_messages:
            return messages
        return get_buffer_string(messages, human_prefix=self.human_prefix, ai_prefix=self.ai_prefix)

    # ------------------------------------------------------------------ save

    def save_context(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        """Store the human input and the AI output of one turn as two linked memories.

        Only the chosen input and output texts are stored; other inputs, such as
        the transcript of another memory, are left out. A blank text is skipped.
        """
        items = self._turn_items(inputs, outputs)
        if items:
            self._core().add_many(items, namespace=self.namespace, session=self.session_id)

    async def asave_context(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        """Async :meth:`save_context`; embedding and writing run in a worker thread."""
        items = self._turn_items(inputs, outputs)
        if items:
            await self._core().aadd_many(items, namespace=self.namespace, session=self.session_id)

    def _turn_items(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> list[dict[str, Any]]:
        input_key = self._choose_input_key(inputs, self._narrowed_input_keys(inputs))
        input_text = input_message_text(inputs[input_key], input_key)
        output_key = self._choose_output_key(outputs)
        output_text = "" if output_key is None else output_message_text(outputs[output_key], output_key)

        # Both memories of a turn share one timestamp; the order of the list keeps
        # the human turn first in the session chain.
        timestamp = time.time()
        items = []
        for role, text in ((HUMAN_ROLE, input_text), (AI_ROLE, output_text)):
            if text.strip():
                items.append({
                    "text": text,
                    "metadata": {ROLE_KEY: role, SESSION_KEY: self.session_id},
                    "timestamp": timestamp,
                })
        return items

    def _candidate_input_keys(self, inputs: dict[str, Any]) -> list[str]:
        excluded = set(self.memory_variables) | _IGNORED_INPUT_KEYS
        return [key for key in inputs if key not in excluded]

    def _narrowed_input_keys(self, inputs: dict[str, Any]) -> list[str]:
        """Return the candidate input keys, without variables that memories added.

        A chain saves with its inputs plus every memory variable, also those of
        other memories combined with this one (a buffer's transcript, for
        example). Keys that were absent when this memory was loaded are such
        variables, so they are dropped when that leaves exactly one key.
        """
        candidates = self._candidate_input_keys(inputs)
        if len(candidates) > 1 and self._load_input_keys is not None:
            narrowed = [key for key in candidates if key in self._load_input_keys]
            if len(narrowed) == 1:
                return narrowed
        return candidates

    def _choose_input_key(self, inputs: dict[str, Any], candidates: list[str]) -> str:
        if self.input_key is not None:
            if self.input_key not in inputs:
                raise InvalidInputError(
                    f"input_key {self.input_key!r} is not among the chain inputs {sorted(inputs)}"
                )
            return self.input_key
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise InvalidInputError(
                f"missing human input: the chain inputs {sorted(inputs)} are all memory "
                "variables or 'stop'"
            )
        raise InvalidInputError(
            f"ambiguous human input: the chain inputs {sorted(candidates)} could each be the "
            f"human turn; set input_key to one of them, for example NuoNuoMemory(input_key="
            f"{sorted(candidates)[0]!r})"
        )

    def _choose_output_key(self, outputs: dict[str, Any]) -> str | None:
        if self.output_key is not None:
            if self.output_key not in outputs:
                raise InvalidInputError(
                    f"output_key {self.output_key!r} is not among the chain outputs {sorted(outputs)}"
                )
            return self.output_key
        if not outputs:
            return None
        if len(outputs) == 1:
            return next(iter(outputs))
        for key in _DEFAULT_OUTPUT_KEYS:
            if key in outputs:
                return key
        texts = [key for key, value in outputs.items() if isinstance(value, (str, BaseMessage))]
        if len(texts) == 1:
            return texts[0]
        raise InvalidInputError(
            f"ambiguous AI output: the chain outputs {sorted(outputs)} could each be the AI "
            "turn; set output_key to one of them"
        )

    # ------------------------------------------------------------------ clear

    def clear(self) -> None:
        """Delete the stored turns of this session; other sessions and memories stay."""
        memory = self._core()
        for record in memory.list(self.namespace, filter={SESSION_KEY: self.session_id}):
            memory.delete(record.id)

    async def aclear(self) -> None:
        """Async :meth:`clear`, run in a worker thread."""
        await asyncio.to_thread(self.clear)


def _chronological_key(result: RecallResult) -> tuple[float, int]:
    timestamp = result.timestamp if result.timestamp is not None else -math.inf
    return (timestamp, 0 if result.metadata.get(ROLE_KEY) == HUMAN_ROLE else 1)


def _to_message(memory_id: str, text: str, metadata: dict[str, Any]) -> BaseMessage:
    """Return a stored turn as a message; memories that are not turns become system messages."""
    role = metadata.get(ROLE_KEY)
    if role == HUMAN_ROLE:
        return HumanMessage(content=text, id=memory_id)
    if role == AI_ROLE:
        return AIMessage(content=text, id=memory_id)
    return SystemMessage(content=text, id=memory_id)
