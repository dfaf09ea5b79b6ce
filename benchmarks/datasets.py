"""The real benchmark data sets, read the way ``../shared/data/README.md`` defines them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nuonuo_core.loaders import LocomoConversation, read_locomo

LOCOMO_CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}


@dataclass(frozen=True)
class RetrievalQuestion:
    """A question and the ids of the memories that hold its answer."""

    question: str
    relevant: tuple[str, ...]
    category: str
    corpus: str
    """Name of the corpus (conversation) the question is asked against."""


def missing_data_reason(data_dir: Path) -> str | None:
    """Return why the data cannot be used, or ``None`` when it is all there."""
    for needed in ("locomo", "musique/corpus.json", "musique/questions.json"):
        if not (data_dir / needed).exists():
            return f"benchmark data not found: {data_dir / needed} is missing (set NUONUO_DATA)"
    return None


def load_locomo(data_dir: Path) -> tuple[list[LocomoConversation], list[RetrievalQuestion]]:
    """Read every LoCoMo conversation and its answerable questions.

    Categories 1-4 only; evidence ids that name no turn are dropped, and questions
    left without evidence are dropped. Memory ids are ``"<conversation>:<dia_id>"``.
    """
    conversations = [read_locomo(path) for path in sorted((data_dir / "locomo").glob("*.json"))]
    questions = []
    for conversation in conversations:
        for qa in conversation.questions:
            if qa.category not in LOCOMO_CATEGORIES or not qa.evidence:
                continue
            questions.append(
                RetrievalQuestion(
                    question=qa.question,
                    relevant=tuple(f"{conversation.name}:{e}" for e in qa.evidence),
                    category=LOCOMO_CATEGORIES[qa.category],
                    corpus=conversation.name,
                )
            )
    return conversations, questions


@dataclass(frozen=True)
class Passage:
    """A MuSiQue corpus passage."""

    title: str
    text: str

    @property
    def memory_text(self) -> str:
        return f"{self.title}\n{self.text}"


def load_musique(data_dir: Path) -> tuple[list[Passage], list[RetrievalQuestion]]:
    """Read the MuSiQue passage corpus and its questions; relevant ids are passage titles."""
    with open(data_dir / "musique" / "corpus.json", encoding="utf-8") as handle:
        corpus = [Passage(p["title"], p["text"]) for p in json.load(handle)]
    with open(data_dir / "musique" / "questions.json", encoding="utf-8") as handle:
        raw = json.load(handle)
    questions = [
        RetrievalQuestion(
            question=q["question"],
            relevant=tuple(dict.fromkeys(p["title"] for p in q["paragraphs"] if p["is_supporting"])),
            category="multi-hop",
            corpus="musique",
        )
        for q in raw
    ]
    return corpus, questions
