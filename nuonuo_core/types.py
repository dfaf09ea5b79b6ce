"""Records that the memory takes in and hands out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Namespace = tuple[str, ...]


@dataclass(frozen=True)
class MemoryItem:
    """One memory to add, for :meth:`AssociativeMemory.add_many`."""

    text: str
    """The text to remember."""

    id: str | None = None
    """Id of the memory; a random one is made when ``None``."""

    metadata: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable values stored and returned with the memory."""

    timestamp: float | None = None
    """When the remembered event happened, as POSIX seconds."""

    cues: tuple[str, ...] = ()
    """Extra texts that should recall this memory, such as paraphrases of it."""

    session: str | None = None
    """Conversation or document this memory belongs to. Memories added one after
    another in the same session are linked."""


@dataclass(frozen=True)
class MemoryRecord:
    """A stored memory."""

    id: str
    """Id of the memory."""

    text: str
    """The stored text, exactly as given."""

    namespace: Namespace
    """Namespace the memory belongs to."""

    metadata: dict[str, Any]
    """A copy of the stored metadata."""

    timestamp: float | None
    """When the remembered event happened, as POSIX seconds, if given."""

    created_at: float
    """When the memory was stored, as POSIX seconds."""

    session: str | None
    """Session the memory was added in, if any."""

    cues: tuple[str, ...]
    """Texts of every cue that recalls the memory, the text itself first."""


@dataclass(frozen=True)
class RecallResult:
    """A memory returned by recall."""

    id: str
    """Id of the memory."""

    text: str
    """The stored text."""

    score: float
    """Activation of the memory, from 0 to 1; results are ranked by it. A direct
    hit gets its Hopfield attention among the candidates; a memory reached through
    links gets the attention spread to it, times ``hop_decay`` per hop."""

    similarity: float
    """Cosine similarity of the memory's best cue to the query, from -1 to 1,
    comparable across queries."""

    metadata: dict[str, Any]
    """A copy of the stored metadata."""

    namespace: Namespace
    """Namespace of the memory."""

    timestamp: float | None
    """When the remembered event happened, as POSIX seconds, if given."""

    hops: int
    """0 for a memory the query found directly, n for one reached through n links."""

    path: tuple[str, ...]
    """Ids of the memories from the direct hit to this one; ``(id,)`` for a direct hit."""

    cue: str
    """Text of the cue that matched the query best (for associative hits, of the
    direct hit the chain started from)."""
