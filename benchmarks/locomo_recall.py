"""LoCoMo evidence recall of NuoNuo beside flat cosine search, in one run.

One memory per turn (``"<speaker>: <text>"``), one namespace per conversation;
categories 1-4; recall@k = share of a question's evidence turns among the top k.
Both systems use the same all-MiniLM-L6-v2 embeddings, computed once.

Run: ``python -m benchmarks.locomo_recall [--data DIR] [--hops N]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import numpy as np

from benchmarks.common import CachingEmbedder, default_data_dir, machine_description, program_name, recall_at
from benchmarks.datasets import LOCOMO_CATEGORIES, load_locomo
from nuonuo_core import AssociativeMemory, MemoryConfig
from nuonuo_core.embedding import load_embedder
from nuonuo_core.loaders import locomo_items


def evaluate(data_dir, hops: int | None, device: str) -> dict[str, dict[str, list[float]]]:
    conversations, questions = load_locomo(data_dir)
    embedder = CachingEmbedder(load_embedder(device=device))
    texts = [item.text for c in conversations for item in locomo_items(c)]
    print(f"Embedding {len(texts)} turns and {len(questions)} questions...", file=sys.stderr)
    embedder.encode(texts + [q.question for q in questions], show_progress=True)

    memory = AssociativeMemory(embedder=embedder, config=MemoryConfig(device=device))
    flat: dict[str, tuple[list[str], np.ndarray]] = {}
    for conversation in conversations:
        items = locomo_items(conversation)
        memory.add_many(items, namespace=(conversation.name,))
        flat[conversation.name] = ([i.id for i in items], embedder.encode([i.text for i in items]))

    scores: dict[str, dict[str, list[float]]] = {"flat cosine": defaultdict(list), "NuoNuo": defaultdict(list)}
    for question in questions:
        query = embedder.encode([question.question])[0]
        ids, matrix = flat[question.corpus]
        flat_top = [ids[i] for i in np.argsort(-(matrix @ query), kind="stable")[:10]]
        found = [r.id for r in memory.recall(question.question, k=10, hops=hops, namespace=(question.corpus,))]
        for system, ranking in (("flat cosine", flat_top), ("NuoNuo", found)):
            for k in (5, 10):
                value = recall_at(ranking, question.relevant, k)
                scores[system][f"all@{k}"].append(value)
                scores[system][f"{question.category}@{k}"].append(value)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=program_name("benchmarks.locomo_recall", "locomo"), description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", default=str(default_data_dir()), help="data folder holding locomo/ (default: %(default)s)")
    parser.add_argument("--hops", type=int, default=None, help="hops for NuoNuo recall (default: the configuration's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device (default: cpu)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    from pathlib import Path

    scores = evaluate(Path(args.data), args.hops, args.device)
    columns = ["all"] + list(LOCOMO_CATEGORIES.values())
    print(f"\nLoCoMo evidence recall, {len(scores['NuoNuo']['all@10'])} questions")
    print(f"{'system':<14}" + "".join(f"{c + '@5':>15}{c + '@10':>15}" for c in columns))
    for system, values in scores.items():
        row = "".join(f"{np.mean(values[f'{c}@5']):>15.3f}{np.mean(values[f'{c}@10']):>15.3f}" for c in columns)
        print(f"{system:<14}{row}")
    print(f"\n{time.perf_counter() - started:.0f} s on {machine_description()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
