"""Readers that turn conversation and document files into memories.

Supported inputs: LoCoMo conversation files (one JSON object with ``speaker_a``,
``speaker_b`` and ``session_N`` lists of turns), JSON lines (one object per line
with at least ``text``), a JSON array of such objects, and plain text (one
memory per paragraph, paragraphs separated by blank lines).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from nuonuo_core.errors import InvalidInputError
from nuonuo_core.types import MemoryItem

InputFormat = Literal["auto", "locomo", "json", "jsonl", "text"]

_SESSION_KEY = re.compile(r"^session_(\d+)$")


@dataclass(frozen=True)
class LocomoTurn:
    """One turn of a LoCoMo conversation."""

    dia_id: str
    speaker: str
    text: str
    session: int
    date: str | None
    caption: str | None = None

    @property
    def memory_text(self) -> str:
        """The turn as a memory: ``"<speaker>: <text>"``."""
        return f"{self.speaker}: {self.text}"


@dataclass(frozen=True)
class LocomoQuestion:
    """A question of a LoCoMo conversation with the turns that hold its answer."""

    question: str
    answer: Any
    evidence: tuple[str, ...]
    category: int


@dataclass
class LocomoConversation:
    """A LoCoMo conversation: its turns in order and its questions."""

    name: str
    speakers: tuple[str, str]
    turns: list[LocomoTurn] = field(default_factory=list)
    questions: list[LocomoQuestion] = field(default_factory=list)


def parse_locomo_date(value: str | None) -> float | None:
    """Parse a LoCoMo session date such as ``"1:56 pm on 8 May, 2023"`` to POSIX seconds (UTC)."""
    if not value:
        return None
    try:
        parsed = datetime.strptime(value.strip(), "%I:%M %p on %d %B, %Y")
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc).timestamp()


def read_locomo(path: str | Path) -> LocomoConversation:
    """Read one LoCoMo conversation file.

    Only the turns, speakers, session dates and questions are read; the
    summaries and observations that the dataset's authors wrote with an LLM are
    ignored. Evidence ids are split on ``;`` and white space, and ids that name no
    turn of the conversation are dropped.
    """
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or "speaker_a" not in data:
        raise InvalidInputError(f"{str(path)!r} is not a LoCoMo conversation: no 'speaker_a' key")
    conversation = LocomoConversation(path.stem, (data["speaker_a"], data.get("speaker_b", "")))
    sessions = sorted(int(m.group(1)) for key in data if (m := _SESSION_KEY.match(key)))
    for number in sessions:
        turns = data.get(f"session_{number}") or []
        date = data.get(f"session_{number}_date_time")
        for turn in turns:
            conversation.turns.append(
                LocomoTurn(
                    dia_id=turn["dia_id"], speaker=turn["speaker"], text=turn["text"],
                    session=number, date=date, caption=turn.get("blip_caption"),
                )
            )
    known = {turn.dia_id for turn in conversation.turns}
    for qa in data.get("qa", []):
        evidence = []
        for entry in qa.get("evidence", []) or []:
            for piece in re.split(r"[;\s]+", str(entry)):
                if piece in known and piece not in evidence:
                    evidence.append(piece)
        conversation.questions.append(
            LocomoQuestion(qa.get("question", ""), qa.get("answer"), tuple(evidence), int(qa.get("category", 0)))
        )
    return conversation


def locomo_items(conversation: LocomoConversation) -> list[MemoryItem]:
    """One memory per turn, id ``"<conversation>:<dia_id>"``, one session per LoCoMo session."""
    return [
        MemoryItem(
            text=turn.memory_text,
            id=f"{conversation.name}:{turn.dia_id}",
            metadata={
                "dia_id": turn.dia_id,
                "speaker": turn.speaker,
                "session": turn.session,
                "date": turn.date,
                "conversation": conversation.name,
            },
            timestamp=parse_locomo_date(turn.date),
            session=f"{conversation.name}:session_{turn.session}",
        )
        for turn in conversation.turns
    ]


def read_jsonl(path: str | Path) -> Iterator[MemoryItem]:
    """Read JSON lines: each line an object with ``text`` and optionally ``id``,
    ``metadata``, ``timestamp``, ``cues`` and ``session``."""
    # Split on newlines only, because a JSON string can contain other line separators.
    for number, line in enumerate(_read_utf8(Path(path)).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidInputError(f"{path}:{number}: invalid JSON: {error}") from error
        yield _record_item(record, f"{path}:{number}")


def _record_item(record: Any, where: str) -> MemoryItem:
    """Turn one JSON object with ``text`` and optional fields into a memory item."""
    if not isinstance(record, dict):
        raise InvalidInputError(f"{where}: expected an object with a string 'text', got {type(record).__name__}")
    if "text" not in record:
        raise InvalidInputError(f"{where}: expected an object with a string 'text', got an object without one")
    if not isinstance(record["text"], str):
        raise InvalidInputError(
            f"{where}: expected a string 'text', got {type(record['text']).__name__} {record['text']!r:.60}"
        )
    # Metadata that is not an object is passed on as it is, for the memory to reject by name.
    metadata = record.get("metadata") or {}
    title = record.get("title")
    if isinstance(title, str) and isinstance(metadata, dict) and "title" not in metadata:
        metadata = {**metadata, "title": title}
    return MemoryItem(
        text=record["text"],
        id=record.get("id"),
        metadata=metadata,
        timestamp=record.get("timestamp"),
        cues=tuple(record.get("cues") or ()),
        session=record.get("session"),
    )


def read_json_array(path: str | Path) -> list[MemoryItem]:
    """Read a JSON array of objects with the fields that :func:`read_jsonl` accepts on each line.

    A ``title`` field is kept in the metadata, as in a corpus of titled passages.
    """
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, list):
        raise InvalidInputError(f"{str(path)!r}: expected a JSON array of objects, got {type(data).__name__}")
    return [_record_item(record, f"{path}: item {number}") for number, record in enumerate(data)]


def _load_json(path: Path) -> Any:
    try:
        return json.loads(_read_utf8(path))
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"{str(path)!r} is not valid JSON: {error}") from error


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInputError(
            f"{str(path)!r} is not UTF-8 text (byte {error.start} cannot be decoded); convert it to UTF-8 first"
        ) from error


def read_text(path: str | Path) -> Iterator[MemoryItem]:
    """Read plain text: one memory per paragraph, all in one session named after the file."""
    path = Path(path)
    content = _read_utf8(path)
    for number, paragraph in enumerate(re.split(r"\n\s*\n", content)):
        if paragraph.strip():
            yield MemoryItem(
                text=paragraph.strip(),
                metadata={"source": path.name, "paragraph": number},
                session=path.name,
            )


def detect_format(path: str | Path) -> InputFormat:
    """Guess the format of an input file from its name and first bytes."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
        if '"speaker_a"' in head or '"session_1"' in head:
            return "locomo"
        return "json" if head.lstrip().startswith("[") else "jsonl"
    return "text"


def read_items(path: str | Path, format: InputFormat = "auto") -> list[MemoryItem]:
    """Read memories from a file in any supported format."""
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"input {str(path)!r} is a directory; expected a file")
    if not path.exists():
        raise InvalidInputError(f"input file {str(path)!r} does not exist")
    if not path.is_file():
        raise InvalidInputError(f"input {str(path)!r} is not a regular file; expected a file to read")
    if format == "auto":
        format = detect_format(path)
    if format == "locomo":
        items = locomo_items(read_locomo(path))
    elif format == "jsonl":
        items = list(read_jsonl(path))
    elif format == "json":
        items = read_json_array(path)
    elif format == "text":
        items = list(read_text(path))
    else:
        raise InvalidInputError(f"format must be one of auto, locomo, json, jsonl, text; got {format!r}")
    if not items:
        raise InvalidInputError(
            f"input file {str(path)!r} contains no memories; expected a LoCoMo conversation, "
            "a JSON array or JSON lines of memories, or text with one memory per paragraph"
        )
    return items
