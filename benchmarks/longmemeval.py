"""LongMemEval retrieval: a loader, an evaluator and a runner for its file format.

A LongMemEval file is a JSON list of question records with ``question_id``,
``question_type``, ``question``, ``answer``, ``question_date``,
``haystack_session_ids``, ``haystack_dates``, ``haystack_sessions`` (one list of
``{"role", "content"}`` turns per session; turns that hold the answer carry
``"has_answer": true``) and ``answer_session_ids``.

Ids. A session is named by its id. A turn is named ``"<session_id>:<turn index>"``,
the index counting from 0 within its session.

Rankings. A system ranks turns. The session ranking is derived from it: each
session in the order of its best-ranked turn, repeats removed.

Metrics, for one question, a ranking ``r`` (session or turn ids, best first), the
set ``R`` of relevant ids and a cut-off ``k`` (1, 3, 5 and 10):

- ``recall_any@k`` = 1 if some id of ``R`` is among ``r[:k]``, else 0;
- ``recall_all@k`` = 1 if every id of ``R`` is among ``r[:k]``, else 0;
- ``ndcg@k`` = DCG@k / IDCG@k with binary relevance and log2 discounts:
  ``DCG@k = sum(1 / log2(i + 1))`` over the ranks ``i`` (from 1) of the relevant
  ids among ``r[:k]``, and ``IDCG@k = sum(1 / log2(i + 1) for i in 1 .. min(|R|, k))``,
  the DCG of a ranking that puts as many relevant ids first as ``k`` allows.

Session level: ``R`` = ``answer_session_ids``. Turn level: ``R`` = the turns with
``has_answer`` true. Reported figures are means over questions. Abstention
questions (``question_id`` ending in ``_abs``) are left out; a question without
relevant ids at a level is left out of that level's means, and the report says
how many questions each mean covers.

Runner: every question's haystack goes into its own corpus (a NuoNuo namespace),
one memory per turn with text ``"<role>: <content>"``, the session id as NuoNuo
session (so consecutive turns are linked) and the session date as timestamp.
Each system of :mod:`benchmarks.quality` retrieves the top ``--depth`` turns for
the question; the corpus is dropped before the next question.

Run: ``python -m benchmarks.longmemeval --file longmemeval_s.json``. The official
files are not part of this repository. NOTE: their haystacks hold about 500 turns
per question, so embedding a whole file on a CPU takes hours; ``--limit`` runs
the first questions only and ``--cache`` keeps the embeddings between runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    CachingEmbedder,
    apply_overrides,
    describe_overrides,
    embed_ahead,
    format_table,
    machine_description,
    program_name,
    ndcg_at,
    progress,
    recall_all_at,
    recall_any_at,
    source_revision,
    unique_in_order,
)
from benchmarks.datasets import Document
from benchmarks.quality import NUONUO_SYSTEMS, SYSTEM_CHOICES, build_systems
from nuonuo_core.embedding import Embedder, load_embedder
from nuonuo_core.errors import InvalidInputError, NuoNuoError

K_VALUES = (1, 3, 5, 10)
LEVELS = ("session", "turn")
METRICS = ("recall_any", "recall_all", "ndcg")
DEFAULT_DEPTH = 100
"""Turns each system retrieves per question; the session ranking is read from them.

NOTE: NuoNuo's first stage keeps ``max(hopfield_candidates, k)`` candidates, so
the order of its first turns changes with the depth asked for, while the
baselines' rankings do not. On LoCoMo the first 10 of ``recall(k=100)`` differ
from ``recall(k=10)`` for most questions, at nearly the same recall@10.
"""

_REQUIRED_KEYS = (
    "question_id", "question_type", "question", "answer", "question_date",
    "haystack_session_ids", "haystack_dates", "haystack_sessions", "answer_session_ids",
)


@dataclass(frozen=True)
class Turn:
    """One turn of a haystack session."""

    role: str
    """``"user"`` or ``"assistant"``."""

    content: str
    """Text of the turn."""

    has_answer: bool
    """Whether the turn contains (part of) the answer."""


@dataclass(frozen=True)
class Session:
    """One haystack session."""

    id: str
    """Session id, as in ``haystack_session_ids``."""

    date: str | None
    """Date of the session as written in the file, such as ``"2023/05/20 (Sat) 02:21"``."""

    turns: tuple[Turn, ...]
    """Turns in order; turn ``i`` is named ``"<id>:<i>"``."""


@dataclass(frozen=True)
class LongMemEvalQuestion:
    """A question record of a LongMemEval file."""

    question_id: str
    question_type: str
    question: str
    answer: Any
    question_date: str | None
    sessions: tuple[Session, ...]
    """The haystack: every session the question is asked against, in file order."""
    answer_session_ids: tuple[str, ...]
    """Ids of the sessions that contain the answer."""

    @property
    def is_abstention(self) -> bool:
        """Whether the question has no answer in its haystack (id ends in ``_abs``)."""
        return self.question_id.endswith("_abs")

    @property
    def evidence_turn_ids(self) -> tuple[str, ...]:
        """Ids ``"<session_id>:<index>"`` of the turns with ``has_answer`` true."""
        return tuple(
            turn_id(session.id, index)
            for session in self.sessions
            for index, turn in enumerate(session.turns)
            if turn.has_answer
        )

    def documents(self) -> list[Document]:
        """Turn the haystack into documents for the retrieval systems, one per non-blank turn."""
        return [
            Document(
                id=turn_id(session.id, index),
                text=f"{turn.role}: {turn.content}",
                session=session.id,
                metadata={"session_id": session.id, "turn": index, "role": turn.role, "date": session.date},
                timestamp=parse_date(session.date),
            )
            for session in self.sessions
            for index, turn in enumerate(session.turns)
            if turn.content.strip()
        ]


def turn_id(session_id: str, index: int) -> str:
    """Return the id of turn ``index`` (from 0) of a session."""
    return f"{session_id}:{index}"


def session_of(turn: str) -> str:
    """Return the session id of a turn id. Session ids may themselves contain colons."""
    return turn.rsplit(":", 1)[0]


def parse_date(value: str | None) -> float | None:
    """Parse a LongMemEval date such as ``"2023/05/20 (Sat) 02:21"`` to POSIX seconds (UTC).

    Returns ``None`` for a missing or differently written date.
    """
    if not value:
        return None
    parts = value.split()
    try:
        day = datetime.strptime(parts[0], "%Y/%m/%d")
        if len(parts) >= 3:
            clock = datetime.strptime(parts[-1], "%H:%M")
            day = day.replace(hour=clock.hour, minute=clock.minute)
    except (ValueError, IndexError):
        return None
    return day.replace(tzinfo=timezone.utc).timestamp()


def read_longmemeval(path: str | Path) -> list[LongMemEvalQuestion]:
    """Read a LongMemEval file.

    Raises:
        InvalidInputError: when the file is missing, is not JSON, is not a list of
            question records, or a record lacks a field or has haystack lists of
            different lengths. The message names the record and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"LongMemEval file {str(path)!r} does not exist")
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"{path}: invalid JSON: {error}") from error
    if not isinstance(raw, list):
        raise InvalidInputError(f"{path}: expected a JSON list of question records, got {type(raw).__name__}")
    return [_question(record, position, path) for position, record in enumerate(raw)]


def _question(record: Any, position: int, path: Path) -> LongMemEvalQuestion:
    where = f"{path}: record {position}"
    if not isinstance(record, dict):
        raise InvalidInputError(f"{where}: expected an object, got {type(record).__name__}")
    missing = [key for key in _REQUIRED_KEYS if key not in record]
    if missing:
        raise InvalidInputError(f"{where}: missing fields {missing}; a record needs {', '.join(_REQUIRED_KEYS)}")
    where = f"{path}: question {record['question_id']!r}"
    ids, dates, sessions = record["haystack_session_ids"], record["haystack_dates"], record["haystack_sessions"]
    if not (isinstance(ids, list) and isinstance(dates, list) and isinstance(sessions, list)):
        raise InvalidInputError(f"{where}: haystack_session_ids, haystack_dates and haystack_sessions must be lists")
    if not len(ids) == len(dates) == len(sessions):
        raise InvalidInputError(
            f"{where}: haystack lists differ in length: {len(ids)} session ids, "
            f"{len(dates)} dates, {len(sessions)} sessions"
        )
    parsed_sessions = []
    for session_id, date, turns in zip(ids, dates, sessions):
        if not isinstance(turns, list):
            raise InvalidInputError(f"{where}: session {session_id!r} must be a list of turns")
        parsed_turns = []
        for index, turn in enumerate(turns):
            if not isinstance(turn, dict) or not isinstance(turn.get("content"), str) or "role" not in turn:
                raise InvalidInputError(
                    f"{where}: turn {index} of session {session_id!r} must be an object with "
                    "'role' and a string 'content'"
                )
            parsed_turns.append(Turn(str(turn["role"]), turn["content"], bool(turn.get("has_answer", False))))
        parsed_sessions.append(Session(str(session_id), date, tuple(parsed_turns)))
    return LongMemEvalQuestion(
        question_id=str(record["question_id"]),
        question_type=str(record["question_type"]),
        question=str(record["question"]),
        answer=record["answer"],
        question_date=record["question_date"],
        sessions=tuple(parsed_sessions),
        answer_session_ids=tuple(str(s) for s in record["answer_session_ids"] or ()),
    )


# ---------------------------------------------------------------------- metrics


def session_ranking(turn_ranking: Sequence[str]) -> list[str]:
    """Sessions in the order of their best-ranked turn."""
    return unique_in_order(session_of(t) for t in turn_ranking)


def score_question(
    question: LongMemEvalQuestion, turn_ranking: Sequence[str], ks: Sequence[int] = K_VALUES
) -> dict[str, float]:
    """Compute every metric of one question, keyed ``"<level>/<metric>@<k>"``.

    A level whose relevant set is empty is left out of the result.
    """
    relevant = {"session": question.answer_session_ids, "turn": question.evidence_turn_ids}
    rankings = {"session": session_ranking(turn_ranking), "turn": list(turn_ranking)}
    scores: dict[str, float] = {}
    for level in LEVELS:
        if not relevant[level]:
            continue
        for k in ks:
            scores[f"{level}/recall_any@{k}"] = recall_any_at(rankings[level], relevant[level], k)
            scores[f"{level}/recall_all@{k}"] = recall_all_at(rankings[level], relevant[level], k)
            scores[f"{level}/ndcg@{k}"] = ndcg_at(rankings[level], relevant[level], k)
    return scores


@dataclass
class Evaluation:
    """Metrics of one system over a set of questions."""

    means: dict[str, float]
    """``"<level>/<metric>@<k>"`` -> mean over the questions that have it."""

    counts: dict[str, int]
    """Level -> number of questions in its means."""

    by_type: dict[str, dict[str, float]]
    """Question type -> metric key -> mean over the questions of that type."""

    skipped_abstention: int
    """Abstention questions left out."""


def evaluate(
    questions: Sequence[LongMemEvalQuestion], rankings: Mapping[str, Sequence[str]], ks: Sequence[int] = K_VALUES
) -> Evaluation:
    """Average :func:`score_question` over the questions, abstention questions left out.

    Args:
        questions: The questions.
        rankings: ``question_id`` -> turn ids, best first. Every non-abstention
            question needs one.

    Raises:
        KeyError: when a non-abstention question has no ranking.
    """
    values: dict[str, list[float]] = defaultdict(list)
    typed: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    counts = {level: 0 for level in LEVELS}
    skipped = 0
    for question in questions:
        if question.is_abstention:
            skipped += 1
            continue
        if question.question_id not in rankings:
            raise KeyError(f"no ranking for question {question.question_id!r}")
        scores = score_question(question, rankings[question.question_id], ks)
        for level in LEVELS:
            if any(key.startswith(f"{level}/") for key in scores):
                counts[level] += 1
        for key, value in scores.items():
            values[key].append(value)
            typed[question.question_type][key].append(value)
    return Evaluation(
        means={key: float(np.mean(v)) for key, v in values.items()},
        counts=counts,
        by_type={t: {key: float(np.mean(v)) for key, v in per.items()} for t, per in typed.items()},
        skipped_abstention=skipped,
    )


# ---------------------------------------------------------------------- runner


def run(
    questions: Sequence[LongMemEvalQuestion],
    systems: Sequence[str],
    embedder: Embedder,
    settings: Sequence[str] = (),
    depth: int = DEFAULT_DEPTH,
) -> dict[str, dict[str, list[str]]]:
    """Retrieve turns for every non-abstention question with every system.

    Each question's haystack is indexed as its own corpus and dropped after the
    question, so memory use stays that of one haystack.

    Returns:
        System name -> ``question_id`` -> turn ids, best first.
    """
    retrievers = build_systems(systems, embedder, settings)
    configs = [apply_overrides(NUONUO_SYSTEMS[s].config, settings) for s in systems if s in NUONUO_SYSTEMS]
    rankings: dict[str, dict[str, list[str]]] = {r.name: {} for r in retrievers}
    answerable = [q for q in questions if not q.is_abstention]
    for question in progress(answerable, "LongMemEval questions"):
        documents = question.documents()

        # Embed the haystack, its NuoNuo cues and the question ahead, in batches.
        embed_ahead(embedder, (d.text for d in documents), [question.question], configs)

        for retriever in retrievers:
            retriever.index(question.question_id, documents)
            rankings[retriever.name][question.question_id] = retriever.search(
                question.question_id, question.question, depth
            )
            retriever.drop(question.question_id)
    return rankings


def tables(evaluations: Mapping[str, Evaluation], *, markdown: bool = False, ks: Sequence[int] = K_VALUES) -> str:
    """Format one table per level: a row per system, a column per metric and cut-off."""
    parts = []
    short = {"recall_any": "any", "recall_all": "all", "ndcg": "ndcg"}
    for level in LEVELS:
        headers = ["system"] + [f"{short[m]}@{k}" for m in METRICS for k in ks]
        rows = [
            [name] + [evaluation.means.get(f"{level}/{m}@{k}", float("nan")) for m in METRICS for k in ks]
            for name, evaluation in evaluations.items()
        ]
        count = next(iter(evaluations.values())).counts[level] if evaluations else 0
        title = f"{level} level, {count} questions (any = recall_any, all = recall_all)"
        parts.append((f"**{title}**\n\n" if markdown else f"{title}\n") + format_table(headers, rows, markdown=markdown))
    return "\n\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name("benchmarks.longmemeval", "longmemeval"),
        description="LongMemEval session- and turn-level retrieval of NuoNuo beside flat cosine search, BM25 and their fusion.",
    )
    parser.add_argument("--file", required=True, help="LongMemEval JSON file, such as longmemeval_s.json")
    parser.add_argument("--out", default="benchmarks/out/longmemeval", help="folder for report.md and results.json (default: %(default)s)")
    parser.add_argument(
        "--systems", nargs="+", default=list(SYSTEM_CHOICES), choices=SYSTEM_CHOICES, metavar="SYSTEM",
        help=f"systems to run, from: {', '.join(SYSTEM_CHOICES)} (default: all)",
    )
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
        help="override a MemoryConfig field of every NuoNuo system, such as links.session=0; repeatable",
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N questions of the file (default: all)")
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="turns retrieved per question (default: %(default)s)")
    parser.add_argument("--cache", help="embedding cache file (.npz) kept between runs (default: none)")
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"],
        help="device of the embedding model; auto takes CUDA when present (default: auto)",
    )
    return parser


def main(argv: list[str] | None = None, embedder: Embedder | None = None) -> int:
    """Run the benchmark; returns the process exit status.

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when ``None``.
        embedder: Embedding model; all-MiniLM-L6-v2 when ``None``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    if args.depth < max(K_VALUES):
        parser.error(f"--depth must be >= {max(K_VALUES)}, got {args.depth}")
    started = time.perf_counter()
    systems = unique_in_order(args.systems)
    try:
        for name in systems:
            if name in NUONUO_SYSTEMS:
                apply_overrides(NUONUO_SYSTEMS[name].config, args.settings)
        questions = read_longmemeval(args.file)
    except NuoNuoError as error:
        parser.error(str(error))
    if args.limit is not None:
        questions = questions[: args.limit]

    cache = CachingEmbedder(embedder or load_embedder(device=None if args.device == "auto" else args.device), args.cache)
    rankings = run(questions, systems, cache, args.settings, args.depth)
    cache.save()
    evaluations = {name: evaluate(questions, per_question) for name, per_question in rankings.items()}
    seconds = time.perf_counter() - started

    # Print, then write the report.
    skipped = sum(q.is_abstention for q in questions)
    header = (
        f"LongMemEval retrieval: {args.file}, {len(questions)} questions, "
        f"{skipped} abstention questions left out, top {args.depth} turns per question"
    )
    print(f"\n{header}\n\n{tables(evaluations)}")
    revision = source_revision()
    command = "python -m benchmarks.longmemeval " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = [
        "# NuoNuo on LongMemEval retrieval",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine_description()}",
        f"- Source revision: {revision}",
        f"- Embedding model: {cache.name}, shared by every system",
        f"- NuoNuo configuration overrides (--set): {describe_overrides(args.settings)}",
        f"- Wall time: {seconds:.0f} s",
        "",
        header,
        "",
        tables(evaluations, markdown=True),
        "",
    ]
    (out / "report.md").write_text("\n".join(report), encoding="utf-8")
    summary = {
        "command": command,
        "revision": revision,
        "settings": list(args.settings),
        "results": {
            name: {"means": e.means, "counts": e.counts, "by_type": e.by_type, "abstention_left_out": e.skipped_abstention}
            for name, e in evaluations.items()
        },
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"\nWrote {out / 'report.md'} and {out / 'results.json'}")
    print(f"{seconds:.0f} s on {machine_description()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
