"""Write many memories to one file, close it, reopen it, and report the cost.

Embeddings are pseudo-random unit vectors derived from a hash of each text
(:class:`RandomEmbedder`), so the run measures storage and index building, not
the embedding model. Texts are short synthetic conversation turns of one to
three sentences, each with a unique note number.

Run: ``python -m benchmarks.load_test --count 100000 --out DIR``

Reported: time to write (``add_many`` in batches, one transaction per batch),
time to close, time to reopen (which rebuilds every in-memory index from the
file), time of the first and of later recalls, file size and bytes per memory,
peak resident memory of the process. With ``--profile`` the reopen runs under
cProfile and the slowest functions are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import pstats
import resource
import sqlite3
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np

from benchmarks.common import machine_description, program_name
from nuonuo_core import AssociativeMemory, MemoryConfig
from nuonuo_core.storage import Storage

EMBEDDER_NAME = "random-load-test"

_SUBJECTS = ["I", "My sister", "Our neighbour", "The team", "My friend Ravi", "Grandma", "The doctor", "We"]
_VERBS = ["visited", "talked about", "booked", "cancelled", "recommended", "cooked", "fixed", "painted", "found"]
_OBJECTS = [
    "the museum", "a new recipe", "the flights to Lisbon", "the dentist appointment", "a jazz album",
    "the garden fence", "a vegan lasagne", "the kitchen wall", "an old photo album", "the bike lock",
]
_TAILS = ["last week", "on Sunday", "after work", "in March", "yesterday", "twice", "for the first time"]


class RandomEmbedder:
    """Embedder of pseudo-random unit vectors, one fixed vector per distinct text.

    The vector of a text is drawn from a generator seeded with a hash of the
    text, so the same text always gets the same vector and runs are repeatable.
    """

    def __init__(self, dim: int = 384) -> None:
        self.name = EMBEDDER_NAME
        self.dim = dim

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Return one unit vector per text. Shape ``(len(texts), dim)``, float32."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
            out[row] = np.random.default_rng(seed).standard_normal(self.dim, dtype=np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def synthetic_turn(index: int, rng: np.random.Generator) -> str:
    """A distinct conversation turn of one to three sentences; ``index`` keeps it unique."""
    sentences = []
    for _ in range(int(rng.integers(1, 4))):
        sentences.append(
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
        )
    sentences.append(f"(note {index})")
    return " ".join(sentences)


def file_bytes(path: Path) -> int:
    """Size of the memory file with its write-ahead log and shared-memory file, if present."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        candidate = Path(str(path) + suffix)
        if candidate.exists():
            total += candidate.stat().st_size
    return total


def count_rows(path: Path, table: str) -> int:
    """Number of rows of ``table`` in the closed memory file."""
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(count: int, out: Path, batch_size: int, namespaces: int, profile: bool, seed: int) -> dict:
    """Write ``count`` memories to ``out/load_test.db``, reopen it and return the figures."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "load_test.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    embedder = RandomEmbedder()
    config = MemoryConfig(device="cpu")
    rng = np.random.default_rng(seed)

    # Write in batches, spread round-robin over the namespaces.
    started = time.perf_counter()
    started_cpu = time.process_time()
    memory = AssociativeMemory(path, config=config, embedder=embedder)
    written = 0
    batch_number = 0
    while written < count:
        size = min(batch_size, count - written)
        texts = [synthetic_turn(written + i, rng) for i in range(size)]
        memory.add_many(texts, namespace=(f"user-{batch_number % namespaces}",), session=f"s{batch_number}")
        written += size
        batch_number += 1
        if batch_number % 20 == 0:
            print(f"  {written} / {count} written", file=sys.stderr)
    write_seconds = time.perf_counter() - started
    write_cpu_seconds = time.process_time() - started_cpu
    started = time.perf_counter()
    memory.close()
    close_seconds = time.perf_counter() - started
    size_bytes = file_bytes(path)
    cue_count = count_rows(path, "cues")

    # Reading the rows alone, to tell file reading from index building.
    started = time.perf_counter()
    storage = Storage(path)
    loaded_count = len(storage.load(None))
    storage.close()
    read_seconds = time.perf_counter() - started

    # Reopen, optionally under the profiler. CPU time is reported beside wall
    # time because other processes on a shared machine inflate the latter.
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    started_cpu = time.process_time()
    if profiler is not None:
        profiler.enable()
    reopened = AssociativeMemory(path, embedder=embedder)
    if profiler is not None:
        profiler.disable()
    reopen_seconds = time.perf_counter() - started
    reopen_cpu_seconds = time.process_time() - started_cpu
    reopened_count = len(reopened)

    # The first recall after reopening may build an index lazily, so it is
    # timed apart from the next ones.
    queries = ["Who fixed the bike lock?", "the flights to Lisbon", "a vegan lasagne on Sunday", "the museum"]
    started = time.perf_counter()
    first_results = reopened.recall(queries[0], k=5, namespace=("user-0",))
    first_recall_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    for query in queries[1:]:
        reopened.recall(query, k=5, namespace=("user-0",))
    recall_ms = (time.perf_counter() - started) / (len(queries) - 1) * 1000

    # Once a large namespace's approximate index is built, recall uses it.
    started = time.perf_counter()
    for partition in reopened._partitions.values():
        partition.build_approximate_index()
    index_wait_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for query in queries:
        reopened.recall(query, k=5, namespace=("user-0",))
    indexed_recall_ms = (time.perf_counter() - started) / len(queries) * 1000
    reopened.close()

    figures = {
        "count": count,
        "reopened_count": reopened_count,
        "namespaces": namespaces,
        "batch_size": batch_size,
        "cues": int(cue_count),
        "write_seconds": round(write_seconds, 2),
        "write_cpu_seconds": round(write_cpu_seconds, 2),
        "memories_per_second": round(count / write_seconds, 1),
        "close_seconds": round(close_seconds, 2),
        "read_seconds": round(read_seconds, 2),
        "read_count": loaded_count,
        "reopen_seconds": round(reopen_seconds, 2),
        "reopen_cpu_seconds": round(reopen_cpu_seconds, 2),
        "file_bytes": size_bytes,
        "bytes_per_memory": round(size_bytes / max(count, 1), 1),
        "first_recall_ms": round(first_recall_ms, 1),
        "first_recall_results": len(first_results),
        "recall_ms": round(recall_ms, 1),
        "index_wait_seconds": round(index_wait_seconds, 1),
        "indexed_recall_ms": round(indexed_recall_ms, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "embeddings": "pseudo-random unit vectors seeded by a hash of each text (RandomEmbedder)",
        "machine": machine_description(),
    }
    if profiler is not None:
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(25)
        figures["reopen_profile"] = stream.getvalue()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=program_name("benchmarks.load_test", "load"), description=__doc__.splitlines()[0]
    )
    parser.add_argument("--count", type=int, default=100_000, help="memories to write (default: %(default)s)")
    parser.add_argument("--out", required=True, help="folder for the memory file and load_test.json")
    parser.add_argument("--batch-size", type=int, default=1000, help="memories per add_many call (default: %(default)s)")
    parser.add_argument("--namespaces", type=int, default=1, help="namespaces to spread the memories over (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic texts (default: %(default)s)")
    parser.add_argument("--profile", action="store_true", help="profile the reopen and print the slowest functions")
    args = parser.parse_args(argv)
    if args.count < 1 or args.batch_size < 1 or args.namespaces < 1:
        parser.error("--count, --batch-size and --namespaces must be positive")

    out = Path(args.out)
    figures = run(args.count, out, args.batch_size, args.namespaces, args.profile, args.seed)
    profile_text = figures.pop("reopen_profile", None)
    (out / "load_test.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")

    print(f"\nLoad test: {figures['count']} memories ({figures['cues']} cues) in {figures['namespaces']} namespace(s)")
    print(
        f"  write:   {figures['write_seconds']:.1f} s, {figures['write_cpu_seconds']:.1f} s of CPU "
        f"({figures['memories_per_second']:.0f} memories/s, batches of {figures['batch_size']})"
    )
    print(f"  close:   {figures['close_seconds']:.1f} s")
    print(f"  read:    {figures['read_seconds']:.1f} s (the rows alone, no indexes)")
    print(
        f"  reopen:  {figures['reopen_seconds']:.1f} s, {figures['reopen_cpu_seconds']:.1f} s of CPU "
        f"({figures['reopened_count']} memories)"
    )
    print(f"  file:    {figures['file_bytes'] / 2**20:.1f} MiB, {figures['bytes_per_memory']:.0f} bytes per memory")
    print(
        f"  recall:  {figures['first_recall_ms']:.1f} ms for the first query after reopening, "
        f"then {figures['recall_ms']:.1f} ms per query while the approximate index builds"
    )
    print(
        f"           {figures['indexed_recall_ms']:.1f} ms per query once it is built "
        f"({figures['index_wait_seconds']:.1f} s more to wait for it)"
    )
    print(f"  peak RSS {figures['peak_rss_mib']:.0f} MiB; {figures['machine']}")
    if profile_text:
        print("\nReopen profile (cumulative):\n" + profile_text)
    if figures["reopened_count"] != figures["count"] or figures["read_count"] != figures["count"]:
        print("error: the reopened memory contains a different number of memories", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
