"""A LlamaIndex memory block that keeps chat messages in an associative memory."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any, Optional, Union

from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, field_validator
from llama_index.core.memory.memory import BaseMemoryBlock
from llama_index.core.utils import get_tokenizer

from nuonuo_core.memory import AssociativeMemory, normalize_namespace
from nuonuo_core.types import MemoryItem, Namespace, RecallResult

logger = logging.getLogger(__name__)

DEFAULT_NAME = "NuoNuoMemory"
DEFAULT_SIMILARITY_TOP_K = 2
DEFAULT_RETRIEVAL_CONTEXT_WINDOW = 5

ROLE_KEY = "role"
"""Metadata key under which each stored message keeps its role."""


class NuoNuoMemoryBlock(BaseMemoryBlock[str]):
    """A long-term memory block for LlamaIndex ``Memory``, backed by an associative memory.

    It takes the place of ``VectorMemoryBlock`` in
    ``Memory.from_defaults(memory_blocks=[...])``. Messages that ``Memory`` flushes
    out of its short-term window are stored one memory per message with text, in
    one session. Consecutive messages are linked, so ``hops > 1`` brings back the
    neighbours of a recalled message, such as the answer to a recalled question.

    On every read it recalls by the newest user message on its own and by the
    last ``retrieval_context_window`` messages together, and merges the two
    result lists. The newest user message is part of what ``Memory`` passes to
    its blocks, so a fact stored earlier is recalled on the same turn that asks
    about it. The block returns the recalled memories as a string, one per line,
    best first, with the role of the message that stored them.

    Reading changes neither the messages passed in nor the block's fields.
    Unlike ``BaseMemoryBlock.aput``, :meth:`aput` does not write the session id
    into the messages' ``additional_kwargs``.

    With ``priority`` above 0, ``Memory`` may ask the block to shrink its
    content under its ``token_limit``; :meth:`atruncate` then drops the
    lowest-ranked memories first.

    NOTE: With the memory's default ``config.deduplicate``, a message whose text
    is already stored in the namespace ("ok", "thanks") is not stored again, so
    it does not link to its neighbours.

    Example:
        >>> block = NuoNuoMemoryBlock(memory="chat_memory.db", namespace="alice", priority=1)
        >>> memory = Memory.from_defaults(session_id="alice-1", memory_blocks=[block])  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, validate_assignment=True)

    name: str = Field(default=DEFAULT_NAME, description="The name of the memory block.")
    memory: AssociativeMemory = Field(
        description="The associative memory that messages are stored in; a path opens that memory file."
    )
    namespace: Namespace = Field(
        default=(),
        description="Namespace of the memory for this block, such as ('alice',); a str is a 1-tuple.",
    )
    session_id: Optional[str] = Field(
        default=None,
        description=(
            "Session that stored messages belong to. None uses the session id that Memory "
            "passes on, or one id per block when there is none."
        ),
    )
    similarity_top_k: int = Field(
        default=DEFAULT_SIMILARITY_TOP_K, ge=0, description="Number of memories to recall; 0 recalls none."
    )
    hops: Optional[int] = Field(
        default=None, ge=1, description="Recall hops; 1 is single-hop. None uses the memory's config.hops."
    )
    retrieval_context_window: int = Field(
        default=DEFAULT_RETRIEVAL_CONTEXT_WINDOW,
        ge=1,
        description="Number of latest messages with text that the recall query is built from.",
    )

    _default_session: str = PrivateAttr(default_factory=lambda: uuid.uuid4().hex)

    @field_validator("memory", mode="before")
    @classmethod
    def _open_memory(cls, value: Any) -> Any:
        if isinstance(value, (str, os.PathLike)):
            return AssociativeMemory(value)
        return value

    @field_validator("namespace", mode="before")
    @classmethod
    def _check_namespace(cls, value: Any) -> Namespace:
        return normalize_namespace(value)

    # ------------------------------------------------------------------ read

    async def _aget(self, messages: Optional[list[ChatMessage]] = None, **block_kwargs: Any) -> str:
        """Recall memories that match the latest messages; returns them one per line, or ``""``."""
        if not messages or self.similarity_top_k == 0:
            return ""
        queries = self._queries(messages)
        if not queries:
            return ""
        result_lists = await asyncio.gather(
            *(
                self.memory.arecall(query, self.similarity_top_k, hops=self.hops, namespace=self.namespace)
                for query in queries
            )
        )
        return _render(_merge(result_lists, self.similarity_top_k))

    def _queries(self, messages: list[ChatMessage]) -> list[str]:
        """Build the recall queries: the newest user message, then the recent window."""
        texts = [(message.role, _text_of(message)) for message in messages]
        texts = [(role, text) for role, text in texts if text]
        if not texts:
            return []
        queries = []
        newest_user = next((text for role, text in reversed(texts) if role == MessageRole.USER), None)
        if newest_user is not None:
            queries.append(newest_user)

        # The window goes newest first: the embedding model reads only the start
        # of a long text, and the latest messages matter most.
        window = [text for _, text in reversed(texts[-self.retrieval_context_window :])]
        joined = "\n".join(window)
        if joined not in queries:
            queries.append(joined)
        return queries

    async def atruncate(self, content: str, tokens_to_truncate: int) -> Optional[str]:
        """Drop the lowest-ranked memories until about ``tokens_to_truncate`` tokens are gone.

        Tokens are counted with LlamaIndex's global tokenizer, the one ``Memory``
        uses by default. Returns ``None`` when nothing is left.
        """
        if not content or tokens_to_truncate <= 0:
            return content or None
        tokenizer = get_tokenizer()
        lines = content.split("\n")
        removed = 0
        while lines and removed < tokens_to_truncate:
            removed += len(tokenizer(lines.pop())) + 1
        return "\n".join(lines) if lines else None

    # ------------------------------------------------------------------ write

    async def aput(
        self,
        messages: list[ChatMessage],
        from_short_term_memory: bool = False,
        session_id: Optional[str] = None,
    ) -> None:
        """Store messages, one memory per message with text, in one session.

        Args:
            messages: The messages, oldest first; they are not modified.
            from_short_term_memory: Whether ``Memory`` flushed them out of its
                short-term window; such messages are ignored when
                ``accept_short_term_memory`` is false.
            session_id: Session of the ``Memory`` that sends them; used when the
                block's own ``session_id`` is ``None``.
        """
        if from_short_term_memory and not self.accept_short_term_memory:
            return
        await self._store(messages, session_id)

    async def _aput(self, messages: list[ChatMessage]) -> None:
        await self._store(messages, None)

    async def _store(self, messages: list[ChatMessage], session_id: Optional[str]) -> None:
        items = []
        for message in messages:
            text = _text_of(message)
            if text:
                items.append(MemoryItem(text=text, metadata={ROLE_KEY: _role_name(message.role)}))
        if not items:
            return
        session = self.session_id or session_id or self._default_session
        await self.memory.aadd_many(items, namespace=self.namespace, session=session)


def _text_of(message: ChatMessage) -> str:
    """Text of a message's text blocks, or ``""`` when it has none."""
    return "\n".join(block.text for block in message.blocks if isinstance(block, TextBlock)).strip()


def _role_name(role: Union[MessageRole, str]) -> str:
    return role.value if isinstance(role, MessageRole) else str(role)


def _merge(result_lists: list[list[RecallResult]], k: int) -> list[RecallResult]:
    """Merge recall results by id, keeping each memory's best score; returns the top ``k``."""
    best: dict[str, RecallResult] = {}
    for results in result_lists:
        for result in results:
            current = best.get(result.id)
            if current is None or result.score > current.score:
                best[result.id] = result
    ranked = sorted(best.values(), key=lambda result: (-result.score, result.hops))
    return ranked[:k]


def _render(results: list[RecallResult]) -> str:
    """Format memories one per line, best first, with line breaks inside a memory turned into spaces."""
    lines = []
    for result in results:
        text = " ".join(result.text.split())
        role = result.metadata.get(ROLE_KEY)
        lines.append(f"- {role}: {text}" if isinstance(role, str) else f"- {text}")
    return "\n".join(lines)
