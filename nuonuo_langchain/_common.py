"""Helpers shared by the LangChain and LangGraph adapters."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from nuonuo_core import AssociativeMemory, Embedder, InvalidInputError, InvalidTypeError, MemoryConfig
from nuonuo_core.memory import check_hops, normalize_namespace

__all__ = [
    "check_hops",
    "input_message_text",
    "normalize_namespace",
    "open_memory",
    "output_message_text",
]


def open_memory(
    memory: AssociativeMemory | None,
    path: str | os.PathLike[str] | None,
    config: MemoryConfig | None,
    embedder: Embedder | None,
    *,
    default_config: MemoryConfig | None = None,
) -> AssociativeMemory:
    """Return ``memory``, or a new :class:`AssociativeMemory` built from the other arguments.

    ``memory`` excludes the other three, because an open memory already has its
    file, configuration and embedder. Without ``config``, a memory in RAM or in
    a new file gets ``default_config`` (the core's default when ``None``), and
    an existing file keeps the configuration saved in it.
    """
    if memory is not None:
        if not isinstance(memory, AssociativeMemory):
            raise InvalidTypeError(
                f"memory must be a nuonuo_core.AssociativeMemory, got {type(memory).__name__}"
            )
        conflicting = [
            name for name, value in (("path", path), ("config", config), ("embedder", embedder))
            if value is not None
        ]
        if conflicting:
            raise InvalidInputError(
                f"pass either memory or {', '.join(conflicting)}, not both: an existing memory "
                "already has its file, configuration and embedder"
            )
        return memory
    if config is None and (path is None or not os.path.exists(path)):
        config = default_config
    return AssociativeMemory(path=path, config=config, embedder=embedder)


def input_message_text(value: Any, key: str) -> str:
    """Return the text of the newest human turn held by one chain input.

    ``value`` is a string, a message, or a list of messages such as the one that
    ``RunnableWithMessageHistory`` builds from the stored history and the new
    request. For a list, the new turn is the human messages after the last AI
    message. Older messages were stored when their own turn was saved.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        return value.text
    messages = _as_messages(value, key, "input")
    if not messages:
        return ""
    last_ai = max((i for i, m in enumerate(messages) if isinstance(m, AIMessage)), default=-1)
    newest = [m.text for m in messages[last_ai + 1:] if isinstance(m, HumanMessage)]
    if newest:
        return "\n".join(newest)
    return messages[-1].text


def output_message_text(value: Any, key: str) -> str:
    """Return the text of the AI reply held by one chain output.

    ``value`` is a string, a message, or a list of messages; for a list the last
    AI message is the reply.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        return value.text
    messages = _as_messages(value, key, "output")
    replies = [m for m in messages if isinstance(m, AIMessage)]
    if replies:
        return replies[-1].text
    return messages[-1].text if messages else ""


def _as_messages(value: Any, key: str, kind: str) -> list[BaseMessage]:
    if isinstance(value, Sequence) and all(isinstance(m, BaseMessage) for m in value):
        return list(value)
    raise InvalidTypeError(
        f"{kind} {key!r} must be a str, a message or a list of messages, "
        f"got {type(value).__name__}"
    )
