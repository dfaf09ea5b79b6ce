"""Speed, memory and scale of NuoNuo beside FAISS and LangGraph's InMemoryStore.

Scale runs store random unit vectors of dimension 384 (no embedding model), N
of them, each memory linked to the one before it as in a conversation. For
every N the same vectors go into NuoNuo (exact first stage, and from
``--ann-from`` on also its quantized first stage), a FAISS ``IndexFlatIP``
(exact), a FAISS HNSW index and, up to ``--store-limit``, LangGraph's
``InMemoryStore``. Queries are held-out random unit vectors. End-to-end runs
use the real LoCoMo turns and questions with all-MiniLM-L6-v2.

Random vectors are the hardest case for approximate search: in 384 dimensions
the ten nearest of a million random points are barely nearer than the rest, so
graph search (HNSW) finds few of them, while a quantized scan over every row
followed by exact rescoring still does. Recall against exact search is
reported for random vectors and for real embeddings.

Run: ``python -m benchmarks.speed [--sizes 1000,20000,100000,1000000] [--out DIR]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.common import default_data_dir, machine_description, program_name
from nuonuo_core import AssociativeMemory, MemoryConfig
from nuonuo_core import functional
from nuonuo_core.association import Association
from nuonuo_core.functional import hebbian_update_, make_projection, project, winner_take_all

DIM = 384
QUERIES = 200
# Embedding backends of the end-to-end runs: the default ("auto": ONNX Runtime
# for short calls, bfloat16 PyTorch batches where the CPU has bfloat16), float32
# PyTorch, float32 ONNX Runtime, and 8-bit ONNX Runtime.
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
# The FAISS HNSW baseline: links per node and candidate list while building,
# the settings of NuoNuo's earlier HNSW first stage.
HNSW_LINKS = 16
HNSW_EF_CONSTRUCTION = 64


class VectorTable:
    """An embedder that looks vectors up by text: ``"v12"`` is row 12 of ``vectors``."""

    name = "random-vectors"
    dim = DIM

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def encode(self, texts, *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        return self.vectors[[int(t[1:]) for t in texts]]


def unit_vectors(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((count, DIM), dtype=np.float32)
    for start in range(0, count, 100_000):
        block = rng.standard_normal((min(100_000, count - start), DIM)).astype(np.float32)
        out[start : start + block.shape[0]] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    values = np.asarray(samples) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def timed(function: Callable[[], Any], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return samples


def timed_in_turns(count: int, variants: Sequence[int], run: Callable[[int, int], Any]) -> dict[int, list[float]]:
    """Time ``run(variant, i)`` for every ``i`` below ``count`` and every variant.

    The variants take turns, a quarter of the ``i`` each time, so that a slower
    stretch of the machine falls on all of them alike. Returns variant -> seconds
    per call, in the order of ``i``.
    """
    samples_of: dict[int, list[float]] = {variant: [] for variant in variants}
    quarter = max(1, count // 4)
    for first in range(0, count, quarter):
        for variant, samples in samples_of.items():
            for i in range(first, min(first + quarter, count)):
                started = time.perf_counter()
                run(variant, i)
                samples.append(time.perf_counter() - started)
    return samples_of


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def recall_at_10(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(t[:10].tolist())) / 10 for f, t in zip(found, truth)]))


# ---------------------------------------------------------------------- learning


def measure_learning(vectors: np.ndarray, device: str = "cpu") -> dict[str, float]:
    """Learning excluding embedding: pattern separation plus the factored Hebbian update.

    Each memory gets its code (projection and winner-take-all) and is linked to
    the one before it, which is what ``add_many`` does for the association.
    After one untimed pass over the first 4,096 rows (the first call after other
    work ran measurably slower), the whole learning is timed seven times up to
    20K rows, three times up to 100K and once above, and the median run is
    reported. A run of 1K rows takes about 20 ms, so one slow stretch of the
    machine can halve a single timing of it.
    """
    projection = make_projection(DIM, 16384, 32, 0, device=device)
    inputs = torch.from_numpy(vectors).to(device)
    warm_codes = winner_take_all(inputs[:4096], projection, 50).cpu().numpy()
    Association(16384, 50, {"session": 1.0}).set_codes(np.arange(warm_codes.shape[0]), warm_codes)
    count = vectors.shape[0]
    repeats = 1
    if count <= 20_000:
        repeats = 7
    elif count <= 100_000:
        repeats = 3
    runs = []
    for _ in range(repeats):
        association = Association(16384, 50, {"session": 1.0})
        started = time.perf_counter()
        codes = winner_take_all(inputs, projection, 50).cpu().numpy()
        separated = time.perf_counter()
        association.set_codes(np.arange(vectors.shape[0]), codes)
        association.link_many(zip(range(count - 1), range(1, count)), "session", 1.0)
        finished = time.perf_counter()
        runs.append((finished - started, separated - started, finished - separated))
        del association
    total, separation, linking = sorted(runs)[len(runs) // 2]

    # Separation once more with the winners picked by tensor operations (the
    # path on CUDA or without Numba), to compare with the compiled selection.
    functional._COMPILED = False
    try:
        started = time.perf_counter()
        winner_take_all(inputs, projection, 50)
        tensor_separation = time.perf_counter() - started
    finally:
        functional._COMPILED = None

    # The projection alone, in the same batches as winner_take_all, to show
    # what the selection of the winners adds to it.
    projection_started = time.perf_counter()
    for start in range(0, vectors.shape[0], 128):
        project(inputs[start : start + 128], projection)
    projected = time.perf_counter()
    return {
        "learn_per_s": vectors.shape[0] / total,
        "separation_per_s": vectors.shape[0] / separation,
        "tensor_separation_per_s": vectors.shape[0] / tensor_separation,
        "projection_per_s": vectors.shape[0] / (projected - projection_started),
        "association_per_s": vectors.shape[0] / linking,
    }


def measure_dense_reference(vectors: np.ndarray, updates: int = 4) -> float:
    """The prototype's learning: codes plus a dense outer-product update of a 1 GB matrix."""
    projection = make_projection(DIM, 16384, 32, 0)
    matrix = torch.zeros(16384, 16384, dtype=torch.float32)
    codes = winner_take_all(torch.from_numpy(vectors[: updates + 1]), projection, 50)
    hebbian_update_(matrix, codes[:1], codes[1:2])  # first touch of the pages
    started = time.perf_counter()
    for i in range(updates):
        fresh = winner_take_all(torch.from_numpy(vectors[i : i + 2]), projection, 50)
        hebbian_update_(matrix, fresh[:1], fresh[1:2])
    rate = updates / (time.perf_counter() - started)
    del matrix
    gc.collect()
    return rate


# ---------------------------------------------------------------------- scale


def scale_run(count: int, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n== {count:,} memories ==", file=sys.stderr, flush=True)
    vectors = unit_vectors(count, seed=1)
    queries = unit_vectors(QUERIES, seed=2)
    result: dict[str, Any] = {"n": count}
    result.update(measure_learning(vectors, args.device))

    # NuoNuo, exact first stage (threshold above N); the quantized one follows below.
    rss_before = rss_bytes()
    config = MemoryConfig(device=args.device, ann_threshold=max(count + 1, 200_000))
    memory = AssociativeMemory(embedder=VectorTable(vectors), config=config)
    started = time.perf_counter()
    for start in range(0, count, 50_000):
        memory.add_many([f"v{i}" for i in range(start, min(count, start + 50_000))], session="s", batch_size=4096)
    result["add_many_per_s"] = count / (time.perf_counter() - started)
    result["bytes_per_memory_tensors"] = memory.nbytes() / count
    result["bytes_per_memory_rss"] = (rss_bytes() - rss_before) / count
    result["association_bytes"] = memory.association_nbytes()

    query_tensors = torch.from_numpy(queries).to(args.device)
    for i in range(20):
        memory.recall_by_vector(query_tensors[i], 10, hops=3)
    exact_found = []

    def recall(hops: int, i: int) -> None:
        found = memory.recall_by_vector(query_tensors[i], 10, hops=hops)
        if hops == 1:
            exact_found.append([int(r.text[1:]) for r in found])

    for hops, samples in timed_in_turns(QUERIES, (1, 3, 10), recall).items():
        result[f"recall_hops{hops}_p50"], result[f"recall_hops{hops}_p99"] = percentiles(samples)

    # FAISS exact search on the same vectors; its results are the truth for recall@10.
    import faiss

    flat = faiss.IndexFlatIP(DIM)
    started = time.perf_counter()
    flat.add(vectors)
    result["faiss_flat_add_per_s"] = count / (time.perf_counter() - started)
    truth = flat.search(queries, 10)[1]
    samples = []
    for i in range(QUERIES):
        started = time.perf_counter()
        flat.search(queries[i : i + 1], 10)
        samples.append(time.perf_counter() - started)
    result["faiss_flat_p50"], result["faiss_flat_p99"] = percentiles(samples)
    result["faiss_flat_bytes_per_memory"] = DIM * 4
    result["nuonuo_exact_recall_at_10"] = recall_at_10(exact_found, truth)

    if count >= args.ann_from:
        # NuoNuo's own approximate first stage, forced on at this N.
        partition = memory._partitions[()]
        memory.config = config.replace(ann_threshold=1)
        partition.config = memory.config
        started = time.perf_counter()
        partition.build_approximate_index()
        result["nuonuo_ann_build_per_s"] = count / (time.perf_counter() - started)
        samples, found_all = [], []
        for i in range(QUERIES):
            started = time.perf_counter()
            found = memory.recall_by_vector(query_tensors[i], 10, hops=1)
            samples.append(time.perf_counter() - started)
            found_all.append([int(r.text[1:]) for r in found])
        result["nuonuo_ann_p50"], result["nuonuo_ann_p99"] = percentiles(samples)
        result["nuonuo_ann_recall_at_10"] = recall_at_10(found_all, truth)

        # FAISS HNSW as the baseline.
        hnsw = faiss.IndexHNSWFlat(DIM, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        started = time.perf_counter()
        hnsw.add(vectors)
        result["hnsw_build_per_s"] = count / (time.perf_counter() - started)
        for ef in (128, 512):
            hnsw.hnsw.efSearch = ef
            samples, raw = [], []
            for i in range(QUERIES):
                started = time.perf_counter()
                ids = hnsw.search(queries[i : i + 1], 10)[1][0]
                samples.append(time.perf_counter() - started)
                raw.append(ids.tolist())
            result[f"faiss_hnsw_ef{ef}_p50"], _ = percentiles(samples)
            result[f"faiss_hnsw_ef{ef}_recall_at_10"] = recall_at_10(raw, truth)
        del hnsw

    if count <= args.store_limit:
        result.update(measure_inmemory_store(vectors, queries))
    del memory, flat
    gc.collect()
    return result


def measure_inmemory_store(vectors: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """LangGraph's InMemoryStore with an embedding function that looks vectors up."""
    from langgraph.store.memory import InMemoryStore

    lookup = {f"v{i}": vectors[i] for i in range(vectors.shape[0])}
    query_lookup = {f"q{i}": queries[i] for i in range(queries.shape[0])}

    def embed(texts: list[str]) -> list[list[float]]:
        return [(lookup.get(t) if t in lookup else query_lookup[t]).tolist() for t in texts]

    store = InMemoryStore(index={"dims": DIM, "embed": embed, "fields": ["text"]})
    started = time.perf_counter()
    for i in range(vectors.shape[0]):
        store.put(("bench",), str(i), {"text": f"v{i}"})
    put_rate = vectors.shape[0] / (time.perf_counter() - started)
    samples = []
    for i in range(min(QUERIES, 50)):
        started = time.perf_counter()
        store.search(("bench",), query=f"q{i}", limit=10)
        samples.append(time.perf_counter() - started)
    p50, p99 = percentiles(samples)
    return {"store_put_per_s": put_rate, "store_search_p50": p50, "store_search_p99": p99}


# ---------------------------------------------------------------------- end to end


def end_to_end(data_dir: Path, device: str = "cpu") -> dict[str, Any]:
    """Ingestion and query latency with the real model on LoCoMo text."""
    from benchmarks.datasets import load_locomo
    from nuonuo_core.embedding import SentenceTransformerEmbedder, native_bfloat16
    from nuonuo_core.loaders import locomo_items

    conversations, questions = load_locomo(data_dir)
    items = [item for c in conversations for item in locomo_items(c)]
    texts = [item.text for item in items]
    result: dict[str, Any] = {"turns": len(texts)}

    # The baseline: the model's own batched encode, in PyTorch, in float32.
    torch_model = SentenceTransformerEmbedder(backend="torch", device=device, bfloat16=False)
    torch_model.model.encode(texts[:64])
    started = time.perf_counter()
    torch_model.model.encode(texts, batch_size=32)
    result["torch_encode_per_s"] = len(texts) / (time.perf_counter() - started)
    # The same encode under bfloat16 autocast, and how far its vectors move. On a
    # CPU without bfloat16 in hardware, autocast emulates it (0.13x float32 on an
    # AVX2 CPU) and the default backend never uses it, so the line is skipped.
    result["bfloat16_skipped"] = device == "cpu" and not native_bfloat16()
    if device == "cpu" and not result["bfloat16_skipped"]:
        fast = SentenceTransformerEmbedder(backend="torch", device=device, bfloat16=True)
        fast.encode(texts[:64])
        started = time.perf_counter()
        fast_vectors = fast.encode(texts, batch_size=32)
        result["bfloat16_encode_per_s"] = len(texts) / (time.perf_counter() - started)
        reference = torch_model.encode(texts, batch_size=32)
        result["bfloat16_min_cosine"] = float((fast_vectors * reference).sum(axis=1).min())
    result.update(real_embedding_ann(torch_model, texts, [q.question for q in questions], data_dir))

    backends = BACKENDS if device == "cpu" else ("auto",)
    filler = unit_vectors(20_000 - len(texts), seed=3)
    big: AssociativeMemory | None = None
    for backend in backends:
        if backend == "torch":
            embedder = torch_model
        else:
            embedder = SentenceTransformerEmbedder(backend=backend, device=device)  # type: ignore[arg-type]
        memory = AssociativeMemory(embedder=embedder, config=MemoryConfig(device=device))
        started = time.perf_counter()
        for conversation in conversations:
            memory.add_many(locomo_items(conversation), namespace=(conversation.name,))
        result[f"ingest_{backend}_per_s"] = len(texts) / (time.perf_counter() - started)

        if big is None:
            # 20K memories in one namespace: the turns plus random filler.
            mixed = _Mixed(embedder, filler)
            big = AssociativeMemory(embedder=mixed, config=MemoryConfig(device=device))
            big.add_many(texts, session="locomo")
            big.add_many([f"v{i}" for i in range(filler.shape[0])], batch_size=4096)
        else:
            # The memory stored by the first backend serves the others. A query
            # costs the same whichever backend embedded the stored turns.
            mixed.inner = embedder
        sample = [q.question for q in questions[:QUERIES]]
        # Untimed recalls of other questions first, in case the memory's first
        # queries cost more, which would fall on the first backend timed.
        for question in questions[QUERIES : QUERIES + 20]:
            big.recall(question.question, 10, hops=3)
        for hops in (1, 3):
            samples = []
            for question in sample:
                started = time.perf_counter()
                big.recall(question, 10, hops=hops)
                samples.append(time.perf_counter() - started)
            result[f"e2e_{backend}_hops{hops}_p50"], result[f"e2e_{backend}_hops{hops}_p99"] = percentiles(samples)
        samples = timed(lambda: embedder.encode([sample[0]]), 50)
        result[f"query_embed_{backend}_p50"], _ = percentiles(samples)
    if big is not None:
        # The same questions with their vectors looked up: the recall of real
        # text alone, the words and names of the query included.
        mixed.inner = _Remembered(mixed.inner, sample)
        samples_of = timed_in_turns(len(sample), (1, 3), lambda hops, i: big.recall(sample[i], 10, hops=hops))
        for hops, samples in samples_of.items():
            result[f"text_recall_hops{hops}_p50"], result[f"text_recall_hops{hops}_p99"] = percentiles(samples)
    return result


def real_embedding_ann(embedder: Any, turns: list[str], questions: list[str], data_dir: Path) -> dict[str, float]:
    """Recall@10 against exact search on real embeddings: LoCoMo turns and MuSiQue passages.

    NuoNuo's quantized first stage (its rows rescored exactly, as recall does)
    beside FAISS HNSW at the settings of the baseline.
    """
    import faiss

    from benchmarks.datasets import load_musique
    from nuonuo_core.partition import _PQ_ROWS_PER_CANDIDATE, new_approximate_index

    passages = [p.memory_text for p in load_musique(data_dir)[0]] if (data_dir / "musique").is_dir() else []
    corpus = embedder.encode(turns + passages, batch_size=64)
    queries = embedder.encode(questions[:QUERIES], batch_size=64)
    flat = faiss.IndexFlatIP(DIM)
    flat.add(corpus)
    truth = flat.search(queries, 10)[1]
    index = new_approximate_index(corpus)
    index.add(corpus)
    rows = index.search(queries, _PQ_ROWS_PER_CANDIDATE * MemoryConfig().hopfield_candidates)[1]
    found = []
    for query, candidates in zip(queries, rows):
        candidates = candidates[candidates >= 0]
        found.append(candidates[np.argsort(-(corpus[candidates] @ query))[:10]].tolist())
    hnsw = faiss.IndexHNSWFlat(DIM, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    hnsw.hnsw.efSearch = 128
    hnsw.add(corpus)
    return {
        "real_ann_corpus": corpus.shape[0],
        "real_ann_recall_at_10": recall_at_10(found, truth),
        "real_hnsw_recall_at_10": recall_at_10(hnsw.search(queries, 10)[1].tolist(), truth),
    }


class _Mixed:
    """Real embeddings for texts, looked-up vectors for ``"v<i>"`` filler."""

    def __init__(self, inner: Any, filler: np.ndarray) -> None:
        self.inner = inner
        self.filler = filler
        self.name = inner.name
        self.dim = inner.dim

    def encode(self, texts, *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        real = [i for i, t in enumerate(texts) if not (t[:1] == "v" and t[1:].isdigit())]
        real_set = set(real)
        fake = [i for i in range(len(texts)) if i not in real_set]
        if real:
            out[real] = self.inner.encode([texts[i] for i in real], batch_size=batch_size)
        if fake:
            out[fake] = self.filler[[int(texts[i][1:]) for i in fake]]
        return out


class _Remembered:
    """An embedder that returns the vectors it computed once for ``texts``."""

    def __init__(self, inner: Any, texts: list[str]) -> None:
        self.name = inner.name
        self.dim = inner.dim
        self.vectors = dict(zip(texts, inner.encode(texts)))

    def encode(self, texts, *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


# ---------------------------------------------------------------------- report


def report(scale: list[dict[str, Any]], dense_rate: float, e2e: dict[str, Any] | None) -> str:
    lines = ["## Learning, excluding embedding (code_dim 16384, k 50)", ""]
    lines.append(
        "| N | NuoNuo learning /s | separation /s | separation, tensor selection /s "
        "| of which projection alone /s | association /s | add_many /s | dense outer-product reference /s |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in scale:
        lines.append(
            f"| {r['n']:,} | {r['learn_per_s']:,.0f} | {r['separation_per_s']:,.0f} | "
            f"{r['tensor_separation_per_s']:,.0f} | {r['projection_per_s']:,.0f} | {r['association_per_s']:,.0f} | {r['add_many_per_s']:,.0f} | "
            f"{dense_rate:,.1f} |"
        )
    lines += ["", "## Recall latency, excluding embedding (ms, p50 / p99, k = 10)", ""]
    lines.append(
        "| N | NuoNuo 1 hop | 3 hops | 10 hops | FAISS flat | NuoNuo 1 hop, quantized first stage (recall@10) "
        "| FAISS HNSW ef128 (recall@10) | FAISS HNSW ef512 (recall@10) | InMemoryStore |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in scale:
        def pair(key: str) -> str:
            return f"{r[key + '_p50']:.2f} / {r[key + '_p99']:.2f}" if key + "_p50" in r else "-"

        def ann(prefix: str) -> str:
            if prefix + "_p50" not in r:
                return "-"
            return f"{r[prefix + '_p50']:.2f} ({r[prefix + '_recall_at_10']:.2f})"

        store = pair("store_search")
        lines.append(
            f"| {r['n']:,} | {pair('recall_hops1')} | {pair('recall_hops3')} | {pair('recall_hops10')} | "
            f"{pair('faiss_flat')} | {ann('nuonuo_ann')} | {ann('faiss_hnsw_ef128')} | "
            f"{ann('faiss_hnsw_ef512')} | {store} |"
        )
    lines += ["", "## Memory", ""]
    lines.append(
        "| N | NuoNuo tensors B/memory | NuoNuo RSS B/memory | association (MB) | FAISS flat B/memory "
        "| NuoNuo quantized index build /s | FAISS HNSW build /s |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|")
    for r in scale:
        def rate(key: str) -> str:
            return f"{r[key]:,.0f}" if key in r else "-"

        lines.append(
            f"| {r['n']:,} | {r['bytes_per_memory_tensors']:,.0f} | {r['bytes_per_memory_rss']:,.0f} | "
            f"{r['association_bytes'] / 1e6:.1f} | {r['faiss_flat_bytes_per_memory']:,} | "
            f"{rate('nuonuo_ann_build_per_s')} | {rate('hnsw_build_per_s')} |"
        )
    if e2e:
        lines += ["", f"## End to end with all-MiniLM-L6-v2 (LoCoMo, {e2e['turns']:,} turns)", ""]
        lines.append(
            f"- model's own batched encode (PyTorch, float32, batches of 32): "
            f"{e2e['torch_encode_per_s']:,.0f} texts/s"
        )
        if e2e.get("bfloat16_skipped"):
            lines.append("- the same encode under bfloat16 autocast: skipped, this CPU has no bfloat16 in hardware")
        if "bfloat16_encode_per_s" in e2e:
            lines.append(
                f"- the same encode under bfloat16 autocast: {e2e['bfloat16_encode_per_s']:,.0f} texts/s "
                f"({e2e['bfloat16_encode_per_s'] / e2e['torch_encode_per_s']:.2f}x), lowest cosine to the "
                f"float32 vectors {e2e['bfloat16_min_cosine']:.5f}"
            )
        lines.append(
            f"- on real embeddings ({e2e['real_ann_corpus']:,} LoCoMo turns and MuSiQue passages, LoCoMo "
            f"questions), recall@10 against exact search: NuoNuo's quantized first stage "
            f"{e2e['real_ann_recall_at_10']:.3f}, FAISS HNSW ef128 {e2e['real_hnsw_recall_at_10']:.3f}"
        )
        for backend in BACKENDS:
            if f"ingest_{backend}_per_s" not in e2e:
                continue
            lines.append(
                f"- NuoNuo ingestion, {backend} backend: {e2e[f'ingest_{backend}_per_s']:,.0f} memories/s "
                f"({e2e[f'ingest_{backend}_per_s'] / e2e['torch_encode_per_s']:.2f}x the model's encode)"
            )
        for backend in BACKENDS:
            key = f"e2e_{backend}_hops1"
            if key + "_p50" in e2e:
                lines.append(
                    f"- query embedding + recall at 20,000 memories, {backend}: 1 hop "
                    f"{e2e[key + '_p50']:.1f} / {e2e[key + '_p99']:.1f} ms, 3 hops "
                    f"{e2e[f'e2e_{backend}_hops3_p50']:.1f} / {e2e[f'e2e_{backend}_hops3_p99']:.1f} ms "
                    f"(p50 / p99; embedding alone {e2e[f'query_embed_{backend}_p50']:.1f} ms)"
                )
        if "text_recall_hops1_p50" in e2e:
            one_hop, three_hops = e2e["text_recall_hops1_p50"], e2e["text_recall_hops3_p50"]
            lines.append(
                f"- recall of the same questions at 20,000 memories, embedding excluded: 1 hop "
                f"{one_hop:.2f} / {e2e['text_recall_hops1_p99']:.2f} ms, 3 hops {three_hops:.2f} / "
                f"{e2e['text_recall_hops3_p99']:.2f} ms (p50 / p99; 3 hops {three_hops / one_hop:.1f}x 1 hop)"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=program_name("benchmarks.speed", "speed"), description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sizes", default="1000,20000,100000,1000000", help="comma-separated N (default: %(default)s)")
    parser.add_argument("--out", default="benchmarks/out/speed", help="output folder (default: %(default)s)")
    parser.add_argument("--data", default=str(default_data_dir()), help="data folder with locomo/ for the end-to-end runs")
    parser.add_argument(
        "--ann-from", type=int, default=100_000,
        help="measure NuoNuo's quantized first stage and FAISS HNSW from this N on (default: %(default)s)",
    )
    parser.add_argument("--store-limit", type=int, default=20_000, help="largest N for InMemoryStore (default: %(default)s)")
    parser.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end runs with the model")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the memories (default: cpu)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    torch.manual_seed(0)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    dense_rate = measure_dense_reference(unit_vectors(8, seed=4))
    scale = [scale_run(n, args) for n in sizes]
    e2e = None
    if not args.skip_e2e:
        if (Path(args.data) / "locomo").is_dir():
            e2e = end_to_end(Path(args.data), args.device)
        else:
            print(f"skipping end-to-end runs: {Path(args.data) / 'locomo'} not found", file=sys.stderr)
    text = report(scale, dense_rate, e2e)
    footer = (
        f"\n{time.perf_counter() - started:.0f} s on {machine_description()}, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB\n"
    )
    print(text + footer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text + footer, encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"scale": scale, "dense_reference_per_s": dense_rate, "e2e": e2e}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
