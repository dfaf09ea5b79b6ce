"""Recall quality of NuoNuo beside flat cosine search, BM25 and their fusion.

Every system runs in the same process on the same data with the same
all-MiniLM-L6-v2 embeddings, computed once and shared through
:class:`~benchmarks.common.CachingEmbedder`.

- LoCoMo evidence recall@5 and @10, overall and per category (multi-hop,
  temporal, open-domain, single-hop): one memory per turn, text
  ``"<speaker>: <text>"``, one namespace per conversation, categories 1-4, and
  recall@k of a question = |evidence turns among the top k| / |evidence turns|,
  averaged over the 951 questions that keep evidence.
- MuSiQue recall@2 and @5 over the 1,890-passage corpus: one memory per
  passage, text ``"<title>\\n<text>"``, the passage's index as its id, and
  recall@k = |supporting titles among the titles of the top k passages| /
  |supporting titles|, averaged over the 100 questions.

The systems are flat cosine search, BM25 and their reciprocal-rank fusion (see
:mod:`benchmarks.baselines`), and the NuoNuo systems of :data:`NUONUO_SYSTEMS`.
``--set field=value`` changes their :class:`MemoryConfig` for ablations.

Run: ``python -m benchmarks.quality --data ../shared/data --out benchmarks/out/quality``
(or ``nuonuo bench quality ...``). The terminal shows the tables; the output
folder gets ``report.md``, ``results.json`` and ``quality.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.baselines import (
    BM25_TOKENIZER,
    FUSION_DEPTH,
    RRF_K,
    BM25Retriever,
    FlatCosineRetriever,
    FusionRetriever,
    Retriever,
)
from benchmarks.common import (
    CachingEmbedder,
    apply_overrides,
    default_data_dir,
    describe_overrides,
    embed_ahead,
    format_table,
    machine_description,
    program_name,
    progress,
    recall_at,
    source_revision,
    unique_in_order,
)
from benchmarks.datasets import Document, RetrievalTask, locomo_task, missing_data_reason, musique_task
from nuonuo_core import AssociativeMemory, MemoryConfig, MemoryItem
from nuonuo_core.embedding import BACKENDS, Embedder, load_embedder
from nuonuo_core.errors import NuoNuoError


@dataclass(frozen=True)
class NuoNuoSystem:
    """A NuoNuo configuration under test."""

    label: str
    """Name printed in tables."""

    config: MemoryConfig
    """Configuration of the memory; ``--set`` overrides apply on top of it."""

    hops: int | None
    """``hops`` passed to ``recall``; ``None`` uses ``config.hops``."""


# The NuoNuo systems compared with the baselines. Change a configuration here,
# or from the command line with --set, which applies to every entry.
NUONUO_SYSTEMS: dict[str, NuoNuoSystem] = {
    "nuonuo": NuoNuoSystem("NuoNuo default", MemoryConfig(), hops=None),
    "nuonuo-1hop": NuoNuoSystem("NuoNuo hops=1", MemoryConfig(), hops=1),
    "nuonuo-2hop": NuoNuoSystem("NuoNuo hops=2", MemoryConfig(), hops=2),
}

BASELINE_SYSTEMS = ("flat", "bm25", "fusion")
OVERRIDE_MARK = " *"
"""Appended to the names of NuoNuo systems whose configuration ``--set`` changed."""
SYSTEM_CHOICES = BASELINE_SYSTEMS + tuple(NUONUO_SYSTEMS)
DATASET_CHOICES = ("locomo", "musique")

# Reference figures of flat all-MiniLM-L6-v2 cosine search that come with the
# benchmark data, under these metric definitions. A flat row further than
# REFERENCE_TOLERANCE from them means that the data, the model or the metric
# differs from the reference setup.
REFERENCE_FLAT = {("LoCoMo", "all@10"): 0.48, ("MuSiQue", "all@2"): 0.49, ("MuSiQue", "all@5"): 0.64}
REFERENCE_TOLERANCE = 0.02

# Recall goals of the default NuoNuo system: (task, metric key, goal). The command
# prints each beside the baselines with whether the default reaches it.
QUALITY_GOALS: tuple[tuple[str, str, float], ...] = (
    ("LoCoMo", "all@10", 0.70),
    ("LoCoMo", "multi-hop@10", 0.50),
    ("MuSiQue", "all@2", 0.58),
    ("MuSiQue", "all@5", 0.75),
)

Scores = dict[str, dict[str, list[float]]]
"""System name -> metric key (``"all@10"``, ``"multi-hop@5"``) -> one value per question."""


class _SharedMemory:
    """One AssociativeMemory per configuration, shared by the systems that use it.

    Memory ids are ``"<corpus>/<document id>"``, so that documents of several
    corpora may share ids. When the memory keeps one copy of a repeated text
    (``config.deduplicate``), the stored memory stands for every document with
    that text: a result expands to all of them, in corpus order.
    """

    def __init__(self, config: MemoryConfig, embedder: Embedder) -> None:
        self.memory = AssociativeMemory(config=config, embedder=embedder)
        self._documents_of: dict[str, dict[str, list[str]]] = {}

    def index(self, corpus: str, documents: Sequence[Document]) -> None:
        if corpus in self._documents_of:
            return
        items = [
            MemoryItem(
                text=d.text, id=f"{corpus}/{d.id}", metadata=d.metadata, timestamp=d.timestamp, session=d.session
            )
            for d in documents
        ]
        stored = self.memory.add_many(items, namespace=(corpus,))
        documents_of: dict[str, list[str]] = defaultdict(list)
        for memory_id, document in zip(stored, documents):
            documents_of[memory_id].append(document.id)
        self._documents_of[corpus] = dict(documents_of)

    def search(self, corpus: str, query: str, k: int, hops: int | None) -> list[str]:
        results = self.memory.recall(query, k=k, hops=hops, namespace=(corpus,))
        documents_of = self._documents_of[corpus]
        found = unique_in_order(d for r in results for d in documents_of[r.id])
        return found[:k]

    def drop(self, corpus: str) -> None:
        if self._documents_of.pop(corpus, None) is not None:
            self.memory.delete_namespace((corpus,))


class NuoNuoRetriever:
    """A NuoNuo system as a :class:`~benchmarks.baselines.Retriever`."""

    def __init__(self, name: str, shared: _SharedMemory, hops: int | None) -> None:
        self.name = name
        self.shared = shared
        self.hops = hops

    def index(self, corpus: str, documents: Sequence[Document]) -> None:
        self.shared.index(corpus, documents)

    def search(self, corpus: str, query: str, k: int) -> list[str]:
        return self.shared.search(corpus, query, k, self.hops)

    def drop(self, corpus: str) -> None:
        self.shared.drop(corpus)


def nuonuo_configs(settings: Sequence[str], systems: Sequence[str]) -> dict[str, MemoryConfig]:
    """Return the configuration of each chosen NuoNuo system with ``settings`` applied."""
    return {
        name: apply_overrides(NUONUO_SYSTEMS[name].config, settings)
        for name in systems
        if name in NUONUO_SYSTEMS
    }


def build_systems(systems: Sequence[str], embedder: Embedder, settings: Sequence[str] = ()) -> list[Retriever]:
    """Create the chosen systems, in the order given.

    NuoNuo systems with equal configurations share one memory, so its corpora
    are ingested once.

    Raises:
        ValueError: for a name not in :data:`SYSTEM_CHOICES`.
        ConfigError: for an invalid setting.
    """
    unknown = [s for s in systems if s not in SYSTEM_CHOICES]
    if unknown:
        raise ValueError(f"unknown systems {unknown}; valid: {', '.join(SYSTEM_CHOICES)}")
    configs = nuonuo_configs(settings, systems)
    memories: dict[MemoryConfig, _SharedMemory] = {}
    built: list[Retriever] = []
    for name in systems:
        if name == "flat":
            built.append(FlatCosineRetriever(embedder))
        elif name == "bm25":
            built.append(BM25Retriever())
        elif name == "fusion":
            built.append(FusionRetriever(embedder))
        else:
            config = configs[name]
            if config not in memories:
                memories[config] = _SharedMemory(config, embedder)
            label = NUONUO_SYSTEMS[name].label + (OVERRIDE_MARK if settings else "")
            built.append(NuoNuoRetriever(label, memories[config], NUONUO_SYSTEMS[name].hops))
    return built


def evaluate_task(task: RetrievalTask, systems: Sequence[Retriever]) -> Scores:
    """Index every corpus of ``task`` in every system and score every question.

    Returns:
        System name -> ``"all@k"`` and ``"<category>@k"`` -> per-question recall@k.
    """
    depth = max(task.ks)
    scores: Scores = {}
    for system in systems:
        for corpus, documents in task.corpora.items():
            system.index(corpus, documents)
        values: dict[str, list[float]] = defaultdict(list)
        for question in progress(task.questions, f"{task.name}: {system.name}"):
            found = task.labels(system.search(question.corpus, question.question, depth))
            for k in task.ks:
                value = recall_at(found, question.relevant, k)
                values[f"all@{k}"].append(value)
                values[f"{question.category}@{k}"].append(value)
        scores[system.name] = dict(values)
    return scores


def mean_of(scores: Scores, system: str, key: str) -> float:
    """Average a metric over questions, or return NaN when no question has it."""
    values = scores[system].get(key, [])
    return float(np.mean(values)) if values else float("nan")


def task_tables(task: RetrievalTask, scores: Scores, *, markdown: bool = False) -> str:
    """Format the tables of one task: one per cut-off, a column per category."""
    columns = ["all", *task.categories]
    counts = {c: len(next(iter(scores.values())).get(f"{c}@{task.ks[0]}", [])) for c in columns}
    headers = ["system"] + [f"{c} ({counts[c]})" if c != "all" else f"all ({counts[c]})" for c in columns]
    parts = []
    for k in task.ks:
        rows = [[system] + [mean_of(scores, system, f"{c}@{k}") for c in columns] for system in scores]
        title = f"{task.name} recall@{k} (questions per column in brackets)"
        parts.append((f"**{title}**\n\n" if markdown else f"{title}\n") + format_table(headers, rows, markdown=markdown))
    return "\n\n".join(parts)


def reference_checks(task: RetrievalTask, scores: Scores) -> list[str]:
    """Compare the flat cosine row with the reference figures; one line per figure."""
    flat = FlatCosineRetriever.name
    if flat not in scores:
        return []
    lines = []
    for (name, key), expected in REFERENCE_FLAT.items():
        if name != task.name:
            continue
        measured = mean_of(scores, flat, key)
        verdict = "ok" if abs(measured - expected) <= REFERENCE_TOLERANCE else "DIFFERS"
        lines.append(
            f"{task.name} flat cosine {key.replace('all@', 'recall@')}: {measured:.3f}, "
            f"reference {expected:.2f} +- {REFERENCE_TOLERANCE}: {verdict}"
        )
    return lines


def goal_summary(results: dict[str, Scores], *, markdown: bool = False) -> str:
    """Format :data:`QUALITY_GOALS` as a table, each goal's measure for the
    baselines and the default NuoNuo system, followed by the measures where
    that system falls below flat cosine. Empty when the default system did not run."""
    label = NUONUO_SYSTEMS["nuonuo"].label
    systems = [FlatCosineRetriever.name, BM25Retriever.name, FusionRetriever.name]
    rows = []
    below = []

    for task_name, scores in results.items():
        default = next((name for name in scores if name.startswith(label)), None)
        if default is None:
            continue
        for task, key, goal in QUALITY_GOALS:
            if task != task_name:
                continue
            measured = mean_of(scores, default, key)
            category, k = key.split("@")
            measure = f"{task} recall@{k}" + ("" if category == "all" else f", {category}")
            row: list[Any] = [measure]
            row += [mean_of(scores, s, key) if s in scores else float("nan") for s in systems]
            row += [measured, goal, "yes" if measured >= goal else "NO"]
            rows.append(row)
        flat = FlatCosineRetriever.name
        if flat in scores:
            below += [
                f"{task_name} {key}" for key in sorted(scores[flat])
                if mean_of(scores, default, key) < mean_of(scores, flat, key)
            ]
    if not rows:
        return ""

    headers = ["measure", *systems, label, "goal", "reached"]
    title = "Recall goals of the default configuration"
    table = (f"**{title}**\n\n" if markdown else f"{title}\n") + format_table(headers, rows, markdown=markdown)
    return table + f"\n\n{label} below flat cosine in: {', '.join(below) if below else 'no measure'}"


def draw_chart(tasks: Sequence[RetrievalTask], results: dict[str, Scores], path: Path) -> None:
    """Draw grouped bars, one panel per task: recall at the largest cut-off per
    category for LoCoMo, recall at every cut-off for MuSiQue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 4.5), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        scores = results[task.name]
        if task.categories:
            k = max(task.ks)
            groups = [(c, f"{c}@{k}") for c in ("all", *task.categories)]
            axis.set_title(f"{task.name} recall@{k}")
        else:
            groups = [(f"recall@{k}", f"all@{k}") for k in task.ks]
            axis.set_title(task.name)
        systems = list(scores)
        width = 0.8 / len(systems)
        positions = np.arange(len(groups))
        for index, system in enumerate(systems):
            heights = [mean_of(scores, system, key) for _, key in groups]
            axis.bar(positions + index * width - 0.4 + width / 2, heights, width, label=system)
        axis.set_xticks(positions, [label for label, _ in groups], rotation=15)
        axis.set_ylim(0, 1)
        axis.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(
    out: Path, tasks: Sequence[RetrievalTask], results: dict[str, Scores], context: dict[str, Any]
) -> None:
    """Write ``report.md`` and ``results.json`` to ``out``."""
    lines = [
        "# NuoNuo recall quality",
        "",
        f"- Command: `{context['command']}`",
        f"- Machine: {context['machine']}",
        f"- Date (UTC): {context['date']}",
        f"- Source revision: {context['revision']}",
        f"- Embedding model: {context['model']}, shared by every system",
        f"- NuoNuo configuration overrides (--set): {context['settings']}",
        f"- BM25: {BM25_TOKENIZER}; fusion: reciprocal rank, k={RRF_K}, top {FUSION_DEPTH} of each",
        f"- Wall time: {context['seconds']:.0f} s, of which {context['embedding_seconds']:.0f} s embedding "
        f"{context['embedded_texts']} texts not in the cache",
        "",
        "The NuoNuo rows reflect the core's configuration and scoring at this revision."
        + (f" Rows marked {OVERRIDE_MARK.strip()} use the overrides above." if context["settings"] != "none" else ""),
        "",
    ]
    for task in tasks:
        lines += [f"## {task.name}", "", task_tables(task, results[task.name], markdown=True), ""]
        checks = reference_checks(task, results[task.name])
        if checks:
            lines += [f"- {line}" for line in checks] + [""]
    summary = goal_summary(results, markdown=True)
    if summary:
        lines += ["## Goals", "", summary, ""]
    lines += ["![recall per system](quality.png)", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")

    summary = {
        **context,
        "results": {
            task.name: {
                system: {key: float(np.mean(values)) for key, values in sorted(per_key.items())}
                for system, per_key in results[task.name].items()
            }
            for task in tasks
        },
        "questions": {
            task.name: {key: len(values) for key, values in next(iter(results[task.name].values())).items()}
            for task in tasks
        },
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name("benchmarks.quality", "quality"),
        description="Recall quality of NuoNuo beside flat cosine search, BM25 and their fusion, in one run.",
    )
    parser.add_argument("--data", default=str(default_data_dir()), help="folder holding locomo/ and musique/ (default: %(default)s)")
    parser.add_argument("--out", default="benchmarks/out/quality", help="folder for report.md, results.json and quality.png (default: %(default)s)")
    parser.add_argument(
        "--systems", nargs="+", default=list(SYSTEM_CHOICES), choices=SYSTEM_CHOICES, metavar="SYSTEM",
        help=f"systems to run, from: {', '.join(SYSTEM_CHOICES)} (default: all)",
    )
    parser.add_argument(
        "--datasets", nargs="+", default=list(DATASET_CHOICES), choices=DATASET_CHOICES, metavar="DATASET",
        help=f"data sets to run, from: {', '.join(DATASET_CHOICES)} (default: all)",
    )
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
        help="override a MemoryConfig field of every NuoNuo system, such as lexical_weight=0.3 "
        "or links.session=0; repeat for several fields",
    )
    parser.add_argument("--cache", help="embedding cache file (.npz) kept between runs (default: none)")
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"],
        help="device of the embedding model; auto takes CUDA when present (default: auto)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="texts per embedding batch (default: 64)")
    parser.add_argument(
        "--backend", default="auto", choices=list(BACKENDS),
        help="embedding backend (see SentenceTransformerEmbedder); give each backend its own --cache "
        "file, because cached vectors are not checked against it (default: auto)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    data_dir = Path(args.data).expanduser()
    reason = missing_data_reason(data_dir)
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    systems_chosen = unique_in_order(args.systems)
    try:
        configs = nuonuo_configs(args.settings, systems_chosen)
    except NuoNuoError as error:
        parser.error(str(error))

    # Load the data and embed every text once, with one progress bar.
    tasks = []
    if "locomo" in args.datasets:
        tasks.append(locomo_task(data_dir))
    if "musique" in args.datasets:
        tasks.append(musique_task(data_dir))
    device = None if args.device == "auto" else args.device
    embedder = CachingEmbedder(load_embedder(device=device, backend=args.backend), args.cache)
    print(f"Embedding the texts not in the cache with {embedder.name}...", file=sys.stderr)
    embedding_started = time.perf_counter()
    missing = embed_ahead(
        embedder,
        (d.text for task in tasks for documents in task.corpora.values() for d in documents),
        (q.question for task in tasks for q in task.questions),
        list(configs.values()),
        batch_size=args.batch_size,
        show_progress=True,
    )
    embedder.save()
    embedding_seconds = time.perf_counter() - embedding_started

    # Every task gets fresh systems, so its corpora are not mixed with another's.
    results: dict[str, Scores] = {}
    for task in tasks:
        systems = build_systems(systems_chosen, embedder, args.settings)
        results[task.name] = evaluate_task(task, systems)
    embedder.save()
    seconds = time.perf_counter() - started

    # Print, then write the report and the chart.
    context = {
        "command": "python -m benchmarks.quality " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_description(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "revision": source_revision(),
        "model": embedder.name,
        "settings": describe_overrides(args.settings),
        "seconds": seconds,
        "embedding_seconds": embedding_seconds,
        "embedded_texts": missing,
    }
    for task in tasks:
        print(f"\n{task_tables(task, results[task.name])}")
        for line in reference_checks(task, results[task.name]):
            print(line)
    summary = goal_summary(results)
    if summary:
        print(f"\n{summary}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, tasks, results, context)
    draw_chart(tasks, results, out / "quality.png")
    print(f"\nNuoNuo configuration overrides (rows marked{OVERRIDE_MARK}): {context['settings']}")
    print(f"Source revision: {context['revision']}")
    print(f"Wrote {out / 'report.md'}, {out / 'results.json'} and {out / 'quality.png'}")
    print(f"{seconds:.0f} s ({embedding_seconds:.0f} s embedding {missing} texts) on {context['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
