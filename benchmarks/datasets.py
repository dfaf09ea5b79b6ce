"""The real benchmark data sets, read the way ``../shared/data/README.md`` defines them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nuonuo_core.loaders import LocomoConversation, locomo_items, read_locomo

LOCOMO_CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}


@dataclass(frozen=True)
class Document:
    """One item of a corpus: a memory for NuoNuo, a row or a document for the baselines."""

    id: str
    """Id the metrics compare against the relevant ids."""

    text: str
    """Text that is embedded and indexed."""

    session: str | None = None
    """Conversation session; NuoNuo links consecutive items of one session."""

    metadata: dict[str, Any] = field(default_factory=dict)
    """Values stored with the memory; no system ranks by them."""

    timestamp: float | None = None
    """When the item happened, as POSIX seconds."""


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


@dataclass
class RetrievalTask:
    """A data set ready for evaluation: corpora to index and questions to ask."""

    name: str
    """Name printed in tables, such as ``"LoCoMo"``."""

    corpora: dict[str, list[Document]]
    """Corpus name -> its documents. Each corpus is indexed on its own."""

    questions: list[RetrievalQuestion]
    """Questions; each names the corpus it is asked against."""

    ks: tuple[int, ...]
    """Cut-offs at which recall is reported."""

    categories: tuple[str, ...] = ()
    """Question categories reported on their own, in this order."""

    label_of: dict[str, str] | None = None
    """Document id -> the label that relevant ids name (MuSiQue: the title);
    ``None`` when relevant ids are document ids."""

    def labels(self, ids: list[str]) -> list[str]:
        """Map retrieved document ids to the labels the relevant ids use."""
        if self.label_of is None:
            return ids
        return [self.label_of[i] for i in ids]


def locomo_task(data_dir: Path) -> RetrievalTask:
    """LoCoMo evidence recall: one document per turn, one corpus per conversation.

    Document text is ``"<speaker>: <text>"`` with the session date as metadata
    and timestamp; the session of a turn is its LoCoMo session.
    """
    conversations, questions = load_locomo(data_dir)
    corpora = {}
    for conversation in conversations:
        corpora[conversation.name] = [
            Document(item.id, item.text, item.session, dict(item.metadata), item.timestamp)  # type: ignore[arg-type]
            for item in locomo_items(conversation)
        ]
    return RetrievalTask("LoCoMo", corpora, questions, (5, 10), tuple(LOCOMO_CATEGORIES.values()))


def musique_task(data_dir: Path) -> RetrievalTask:
    """MuSiQue supporting-passage recall over its 1,890-passage corpus.

    Titles are not unique, so each passage's id is its index in ``corpus.json``;
    recall compares the titles of the retrieved passages with the supporting
    titles. Document text is ``"<title>\n<text>"``; passages have no session.
    """
    passages, questions = load_musique(data_dir)
    documents = [
        Document(str(index), passage.memory_text, metadata={"title": passage.title})
        for index, passage in enumerate(passages)
    ]
    label_of = {str(index): passage.title for index, passage in enumerate(passages)}
    return RetrievalTask("MuSiQue", {"musique": documents}, questions, (2, 5), label_of=label_of)
