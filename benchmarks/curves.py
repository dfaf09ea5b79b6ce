"""Noise tolerance, multi-hop chains and capacity of NuoNuo as curves, each beside a baseline.

Memories are random unit vectors of dimension 384 (Gaussian, normalised, from a
seeded generator), stored through :class:`VectorEmbedder` so that no text model
is involved. A recall is a hit when the right memory comes first (top-1),
unless a curve states otherwise. Systems:

- two-stage Hopfield: ``AssociativeMemory.recall_by_vector(cue, k=1, hops=1)``,
  the memory's own single-hop recall;
- Hebbian-only: the cue's sparse code ``winner_take_all(cue, projection, k)``
  matched against the stored codes through the association's inverted index;
  the answer is the memory with the largest code overlap (the auto-associative
  readout ``C x`` of the Hebbian matrix ``C^T C``), a hit only when that memory
  is the unique maximum;
- flat cosine: the argmax of one matrix product of the cue with every stored
  vector.

Cue corruption by a fraction ``f``: ``round(f * 384)`` coordinates, chosen at
random, are replaced by Gaussian noise whose standard deviation is the root mean
square of the vector's coordinates (``1 / sqrt(384)`` for a unit vector), and the
result is normalised to unit length.

Curves:

1. noise tolerance: top-1 accuracy against corruption from 0 to 50 %, at 1,000
   and 20,000 memories, default configuration;
2. chains: 50 chains of 11 memories linked one to the next with ``associate``,
   among 20,000 unlinked distractors. From the exact vector of a chain's start,
   ``recall_by_vector(start, k=n, hops=h + 1)`` is a hit at hop ``h`` when the
   memory ``h`` links away is among the ``n`` results with the exact path along
   the chain, for ``n`` 50 and 1000. Flat cosine has no path, so its hit is the
   memory ``h`` links away being among its top ``n``; beyond hop 0 that happens
   by chance only (``n / 20,550``). A memory reached through ``h`` links scores
   about ``hop_decay ** h`` of the start's attention, so far hops can rank below
   direct candidates: the two result counts show where;
3. capacity: top-1 accuracy from cues corrupted by 20 % against the number of
   stored memories (1,000 to 100,000), for ``code_dim`` 8192, 16384 and 32768
   with ``k`` 50.

Run: ``python -m benchmarks.curves --out benchmarks/out/curves``. It prints each
curve as a table and writes ``noise.png``, ``chains.png``, ``capacity.png``,
``report.md`` and ``results.json`` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import format_table, machine_description, program_name, progress, source_revision
from nuonuo_core import AssociativeMemory, MemoryConfig, MemoryItem
from nuonuo_core.functional import winner_take_all

DIM = 384
NOISE_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
NOISE_SIZES = (1_000, 20_000)
CHAIN_COUNT = 50
CHAIN_LENGTH = 11
CHAIN_DISTRACTORS = 20_000
CHAIN_RESULTS = (50, 1000)
CAPACITY_SIZES = (1_000, 10_000, 50_000, 100_000)
CAPACITY_CODE_DIMS = (8192, 16384, 32768)
CAPACITY_K = 50
CAPACITY_CORRUPTION = 0.2
DEFAULT_QUERIES = 300
# Memories added per add_many call: codes of a batch are computed at once,
# and at code_dim 32768 each memory needs 128 KiB of activity while coding.
_ADD_BATCH = 2_000

HOPFIELD = "two-stage Hopfield"
HEBBIAN = "Hebbian-only"
FLAT = "flat cosine"


class VectorEmbedder:
    """An embedder whose texts name rows of a fixed matrix: ``"m12"`` is row 12.

    Lets benchmarks store precomputed vectors through the public ``add_many``.

    Args:
        vectors: The vectors. Shape ``(n, dim)``, float32.
    """

    name = "precomputed-vectors"

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors
        self.dim = int(vectors.shape[1])

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Return the rows named by ``texts``. Shape ``(len(texts), dim)``."""
        try:
            rows = [int(text[1:]) for text in texts]
        except ValueError:
            raise ValueError(f"VectorEmbedder texts must look like 'm<row>', got {list(texts)[:3]!r}") from None
        return self.vectors[rows]


def random_unit_vectors(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian vectors normalised to unit length. Shape ``(count, dim)``, float32."""
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def corrupt(vectors: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Replace ``round(fraction * dim)`` random coordinates of each row by Gaussian
    noise of the row's root-mean-square scale, then renormalise the rows.

    Shape: ``vectors`` is ``(n, dim)``; the result has the same shape, float32.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be from 0 to 1, got {fraction!r}")
    corrupted = np.array(vectors, dtype=np.float32, copy=True)
    count, dim = corrupted.shape
    replaced = int(round(fraction * dim))
    if replaced == 0:
        return corrupted
    scale = np.sqrt(np.mean(corrupted**2, axis=1))
    for row in range(count):
        positions = rng.choice(dim, replaced, replace=False)
        corrupted[row, positions] = rng.normal(0.0, scale[row], replaced)
    return corrupted / np.linalg.norm(corrupted, axis=1, keepdims=True)


@dataclass
class VectorMemory:
    """An AssociativeMemory holding rows of a vector matrix as memories ``"m<row>"``."""

    memory: AssociativeMemory
    vectors: np.ndarray
    """Every vector the memory may hold. Shape ``(n, dim)``."""
    stored: int = 0
    """Rows ``0 .. stored - 1`` are stored."""

    @classmethod
    def create(cls, vectors: np.ndarray, config: MemoryConfig) -> VectorMemory:
        memory = AssociativeMemory(config=config, embedder=VectorEmbedder(vectors))
        return cls(memory, vectors)

    def fill(self, count: int) -> None:
        """Store rows until ``count`` are stored."""
        for start in range(self.stored, count, _ADD_BATCH):
            end = min(start + _ADD_BATCH, count)
            self.memory.add_many([MemoryItem(text=f"m{i}", id=f"m{i}") for i in range(start, end)])
        self.stored = max(self.stored, count)

    def hopfield_top1(self, cue: np.ndarray) -> int | None:
        """Row of the first result of single-hop recall."""
        results = self.memory.recall_by_vector(cue, k=1, hops=1)
        return int(results[0].id[1:]) if results else None

    def hebbian_top1(self, cues: np.ndarray) -> list[int | None]:
        """Row with the unique largest code overlap for each cue; ``None`` on a tie or no overlap.

        Shape: ``cues`` is ``(m, dim)``.
        """
        # Internal access: the partition of the default namespace and the fixed projection.
        partition = self.memory._partitions[()]
        projection = self.memory._get_projection()
        codes = winner_take_all(torch.from_numpy(np.ascontiguousarray(cues)), projection, self.memory.config.k)
        answers: list[int | None] = []
        for code in codes.numpy():
            slots, overlap = partition.association.overlaps(code)
            if overlap.size == 0:
                answers.append(None)
                continue
            winners = slots[overlap == overlap.max()]
            entry = partition.entries[int(winners[0])] if winners.size == 1 else None
            answers.append(int(entry.id[1:]) if entry is not None else None)
        return answers

    def flat_ranking(self, cue: np.ndarray, depth: int) -> np.ndarray:
        """Rows of the ``depth`` stored vectors most similar to ``cue``, best first."""
        scores = self.vectors[: self.stored] @ cue
        if depth == 1:
            return np.array([int(np.argmax(scores))])
        return np.argsort(-scores, kind="stable")[:depth]


def top1_accuracy(store: VectorMemory, targets: np.ndarray, cues: np.ndarray, methods: Sequence[str]) -> dict[str, float]:
    """Share of cues whose top-1 result is their target row, per method."""
    hits = {method: 0 for method in methods}
    if HEBBIAN in methods:
        answers = store.hebbian_top1(cues)
        hits[HEBBIAN] = sum(int(a == t) for a, t in zip(answers, targets.tolist()))
    for target, cue in zip(targets.tolist(), cues):
        if HOPFIELD in methods:
            hits[HOPFIELD] += int(store.hopfield_top1(cue) == target)
        if FLAT in methods:
            hits[FLAT] += int(store.flat_ranking(cue, 1)[0] == target)
    return {method: hits[method] / len(targets) for method in methods}


def noise_curve(
    sizes: Sequence[int] = NOISE_SIZES,
    fractions: Sequence[float] = NOISE_FRACTIONS,
    queries: int = DEFAULT_QUERIES,
    seed: int = 0,
) -> dict[int, dict[str, list[float]]]:
    """Top-1 accuracy against cue corruption.

    Returns:
        Memories -> method -> accuracy at each fraction of ``fractions``.
    """
    rng = np.random.default_rng(seed)
    methods = (HOPFIELD, HEBBIAN, FLAT)
    curve: dict[int, dict[str, list[float]]] = {}
    for size in sizes:
        store = VectorMemory.create(random_unit_vectors(size, DIM, rng), MemoryConfig(device="cpu"))
        store.fill(size)
        curve[size] = {method: [] for method in methods}
        for fraction in progress(fractions, f"noise, {size} memories"):
            targets = rng.choice(size, min(queries, size), replace=False)
            cues = corrupt(store.vectors[targets], fraction, rng)
            accuracy = top1_accuracy(store, targets, cues, methods)
            for method in methods:
                curve[size][method].append(accuracy[method])
    return curve


def chain_curve(
    chains: int = CHAIN_COUNT,
    length: int = CHAIN_LENGTH,
    distractors: int = CHAIN_DISTRACTORS,
    result_counts: Sequence[int] = CHAIN_RESULTS,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Hit rate at hop 0 .. ``length - 1`` along stored chains.

    Returns:
        Curve label (method and result count) -> hit rate at each hop.
    """
    rng = np.random.default_rng(seed)
    total = chains * length + distractors
    store = VectorMemory.create(random_unit_vectors(total, DIM, rng), MemoryConfig(device="cpu"))
    store.fill(total)
    # Rows of the chains are spread over the matrix, so chain members are not neighbours in storage.
    rows = rng.permutation(total)[: chains * length].reshape(chains, length)
    for chain in rows:
        for a, b in zip(chain[:-1], chain[1:]):
            store.memory.associate(f"m{a}", f"m{b}")

    hits: dict[str, np.ndarray] = {}
    for count in result_counts:
        hits[f"{HOPFIELD} + association, top {count}"] = np.zeros(length)
        hits[f"{FLAT}, top {count}"] = np.zeros(length)
    for chain in progress(rows, "chains"):
        start = store.vectors[chain[0]]
        for count in result_counts:
            flat_top = set(store.flat_ranking(start, count).tolist())
            for hop in range(length):
                found = store.memory.recall_by_vector(start, k=count, hops=hop + 1)
                expected_path = tuple(f"m{r}" for r in chain[: hop + 1])
                if any(r.id == f"m{chain[hop]}" and r.path == expected_path for r in found):
                    hits[f"{HOPFIELD} + association, top {count}"][hop] += 1
                if int(chain[hop]) in flat_top:
                    hits[f"{FLAT}, top {count}"][hop] += 1
    return {label: (values / chains).tolist() for label, values in hits.items()}


def capacity_curve(
    sizes: Sequence[int] = CAPACITY_SIZES,
    code_dims: Sequence[int] = CAPACITY_CODE_DIMS,
    k: int = CAPACITY_K,
    corruption: float = CAPACITY_CORRUPTION,
    queries: int = DEFAULT_QUERIES,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Top-1 accuracy from corrupted cues against the number of stored memories.

    The same vectors and cues are used for every ``code_dim``.

    Returns:
        Curve label (method and ``code_dim``; flat cosine once) -> accuracy at each size.
    """
    rng = np.random.default_rng(seed)
    vectors = random_unit_vectors(max(sizes), DIM, rng)
    targets = {size: rng.choice(size, min(queries, size), replace=False) for size in sizes}
    cues = {size: corrupt(vectors[targets[size]], corruption, rng) for size in sizes}
    curve: dict[str, list[float]] = {}
    for index, code_dim in enumerate(code_dims):
        store = VectorMemory.create(vectors, MemoryConfig(code_dim=code_dim, k=k, device="cpu"))
        methods = (HOPFIELD, HEBBIAN, FLAT) if index == 0 else (HOPFIELD, HEBBIAN)
        for size in progress(sorted(sizes), f"capacity, code_dim {code_dim}"):
            store.fill(size)
            accuracy = top1_accuracy(store, targets[size], cues[size], methods)
            for method in methods:
                label = FLAT if method == FLAT else f"{method}, code_dim {code_dim}"
                curve.setdefault(label, []).append(accuracy[method])
        del store
    return curve


def _plot(path: Path, x: Sequence[float], series: dict[str, list[float]], *, title: str, xlabel: str, ylabel: str, log_x: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    # Curves often coincide at 1.0, so each method gets its own marker and line style.
    styles = {HOPFIELD: ("o", "-"), HEBBIAN: ("s", "-."), FLAT: ("x", "--")}
    for label, values in series.items():
        marker, linestyle = next((style for method, style in styles.items() if label.startswith(method)), ("o", "-"))
        axis.plot(x, values, marker=marker, linestyle=linestyle, label=label, alpha=0.85)
    if log_x:
        axis.set_xscale("log")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name("benchmarks.curves", "curves"),
        description="Noise tolerance, multi-hop chains and capacity of NuoNuo as curves, each beside a baseline.",
    )
    parser.add_argument("--out", default="benchmarks/out/curves", help="folder for the PNGs, report.md and results.json (default: %(default)s)")
    parser.add_argument("--curves", nargs="+", default=["noise", "chains", "capacity"], choices=["noise", "chains", "capacity"], help="curves to run (default: all)")
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES, help="cues per point of the noise and capacity curves (default: %(default)s)")
    parser.add_argument("--noise-sizes", type=int, nargs="+", default=list(NOISE_SIZES), metavar="N", help="memories of the noise curve (default: %(default)s)")
    parser.add_argument("--chains", type=int, default=CHAIN_COUNT, help="chains of the chain curve (default: %(default)s)")
    parser.add_argument("--chain-length", type=int, default=CHAIN_LENGTH, help="memories per chain, so hops 0 .. length-1 (default: %(default)s)")
    parser.add_argument("--distractors", type=int, default=CHAIN_DISTRACTORS, help="unlinked memories beside the chains (default: %(default)s)")
    parser.add_argument("--capacity-sizes", type=int, nargs="+", default=list(CAPACITY_SIZES), metavar="N", help="memories of the capacity curve (default: %(default)s)")
    parser.add_argument("--code-dims", type=int, nargs="+", default=list(CAPACITY_CODE_DIMS), metavar="D", help="code_dim values of the capacity curve (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the vectors, cues and noise (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the curves; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("queries", "chains", "chain_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("noise_sizes", "capacity_sizes", "code_dims"):
        if min(getattr(args, name)) < 1:
            parser.error(f"--{name.replace('_', '-')} values must be >= 1, got {getattr(args, name)}")
    if args.distractors < 0:
        parser.error(f"--distractors must be >= 0, got {args.distractors}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    command = "python -m benchmarks.curves " + " ".join(sys.argv[1:] if argv is None else argv)
    report = [
        "# NuoNuo curves",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine_description()}",
        f"- Date (UTC): {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M')}",
        f"- Source revision: {source_revision()}",
        f"- Random unit vectors of dimension {DIM}, seed {args.seed}",
        "",
    ]
    summary: dict[str, object] = {"command": command}

    if "noise" in args.curves:
        noise = noise_curve(args.noise_sizes, NOISE_FRACTIONS, args.queries, args.seed)
        headers = ["memories", "method"] + [f"{int(f * 100)}%" for f in NOISE_FRACTIONS]
        rows = [[size, method] + values for size, per in noise.items() for method, values in per.items()]
        title = f"Noise tolerance: top-1 accuracy against cue corruption, {args.queries} cues per point"
        print(f"\n{title}\n{format_table(headers, rows)}")
        report += [f"## {title}", "", format_table(headers, rows, markdown=True), "", "![noise](noise.png)", ""]
        series = {f"{method}, {size} memories": values for size, per in noise.items() for method, values in per.items()}
        _plot(out / "noise.png", [100 * f for f in NOISE_FRACTIONS], series, title="Noise tolerance", xlabel="cue corruption (%)", ylabel="top-1 accuracy")
        summary["noise"] = {"fractions": list(NOISE_FRACTIONS), "curves": {str(s): v for s, v in noise.items()}}

    if "chains" in args.curves:
        chains = chain_curve(args.chains, args.chain_length, args.distractors, CHAIN_RESULTS, args.seed)
        headers = ["method"] + [f"hop {h}" for h in range(args.chain_length)]
        rows = [[method] + values for method, values in chains.items()]
        title = (
            f"Chains: hit rate at each hop, {args.chains} chains of {args.chain_length} among "
            f"{args.distractors} distractors"
        )
        print(f"\n{title}\n{format_table(headers, rows)}")
        report += [f"## {title}", "", format_table(headers, rows, markdown=True), "", "![chains](chains.png)", ""]
        _plot(out / "chains.png", list(range(args.chain_length)), chains, title="Chains", xlabel="hops from the cue", ylabel="hit rate")
        summary["chains"] = chains

    if "capacity" in args.curves:
        capacity = capacity_curve(args.capacity_sizes, args.code_dims, CAPACITY_K, CAPACITY_CORRUPTION, args.queries, args.seed)
        sizes = sorted(args.capacity_sizes)
        headers = ["method"] + [str(s) for s in sizes]
        rows = [[label] + values for label, values in capacity.items()]
        title = (
            f"Capacity: top-1 accuracy from cues corrupted by {int(CAPACITY_CORRUPTION * 100)}%, "
            f"k {CAPACITY_K}, {args.queries} cues per point"
        )
        print(f"\n{title}\n{format_table(headers, rows)}")
        report += [f"## {title}", "", format_table(headers, rows, markdown=True), "", "![capacity](capacity.png)", ""]
        _plot(out / "capacity.png", sizes, capacity, title="Capacity", xlabel="stored memories", ylabel="top-1 accuracy", log_x=True)
        summary["capacity"] = {"sizes": sizes, "curves": capacity}

    seconds = time.perf_counter() - started
    report.append(f"Wall time: {seconds:.0f} s")
    (out / "report.md").write_text("\n".join(report) + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"\nWrote the PNGs, report.md and results.json to {out}")
    print(f"{seconds:.0f} s on {machine_description()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
