"""The ``nuonuo`` command-line tool: demo, ingest, recall, bench and chat."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from nuonuo_core.errors import InvalidInputError, NuoNuoError

logger = logging.getLogger(__name__)

# A conversation written for the demo: facts spread over turns, so that some
# answers need a chain of turns.
DEMO_CONVERSATION = [
    ("user", "I just adopted a border collie puppy and named her Biscuit."),
    ("assistant", "Congratulations! Border collies are clever and full of energy."),
    ("user", "Biscuit is terrified of thunderstorms, she hides under the bed."),
    ("user", "My sister Lena is a veterinarian in Porto."),
    ("assistant", "Handy to have a vet in the family."),
    ("user", "Lena recommended a calming vest for storm nights."),
    ("user", "Next month I start a new job as a structural engineer in Lisbon."),
    ("user", "The office in Lisbon is next to the Tagus river ferry terminal."),
    ("user", "I commute by ferry from Barreiro every morning."),
    ("user", "My favourite food is grilled sardines with roasted peppers."),
    ("user", "I'm allergic to penicillin, found out as a child."),
]


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _print_results(results, show_path: bool = True) -> None:
    if not results:
        print("  (nothing recalled)")
    for rank, result in enumerate(results, start=1):
        print(f"  {rank}. [{result.score:.3f}] {result.id}: {result.text}")
        if show_path and result.hops > 0:
            print(f"       reached in {result.hops} hop(s) via: {' -> '.join(result.path)}")


def run_demo(args: argparse.Namespace) -> int:
    """Store the demo conversation in RAM and show the three kinds of recall."""
    from nuonuo_core import AssociativeMemory, MemoryItem

    memory = AssociativeMemory()
    print("Storing a short conversation (one memory per turn, linked in order)...")
    items = [
        MemoryItem(text=text, id=f"turn-{number}", metadata={"role": role}, session="demo")
        for number, (role, text) in enumerate(DEMO_CONVERSATION, start=1)
    ]
    memory.add_many(items)
    for item in items:
        print(f"  {item.id}: ({item.metadata['role']}) {item.text}")

    print('\n1. Single-hop recall (hops=1): "What is my dog called?"')
    _print_results(memory.recall("What is my dog called?", k=2, hops=1))

    print('\n2. Recall from a reworded cue (hops=1): "which medicine must I avoid"')
    _print_results(memory.recall("which medicine must I avoid", k=2, hops=1))

    print("\n3. Multi-hop recall along a chain of associations.")
    print("   Consecutive turns were linked as they were stored, and so were turns that")
    print("   name the same rare name (Biscuit, Lena). One more link is added by hand:")
    print("   associate('turn-3', 'turn-6'), because the calming vest is for Biscuit.")
    memory.associate("turn-3", "turn-6")
    query = "my new puppy"
    print(f'   Query: "{query}", hops=3')
    results = memory.recall(query, k=5, hops=3)
    _print_results(results)
    for result in results:
        if result.hops >= 2:
            print(f"\n   '{result.text}' does not resemble the query; it was reached")
            print(f"   through the chain {' -> '.join(result.path)}.")
    return 0


def _open_memory(path: str | None, must_exist: bool = False):
    """Open the memory file at ``path`` or the default one; return the memory and its path.

    With ``must_exist``, a missing file raises instead of being created, so that
    a mistyped path on a read-only command creates nothing.
    """
    from nuonuo_core import AssociativeMemory
    from nuonuo_core.storage import default_memory_path

    target = Path(path) if path else default_memory_path()
    if target.is_dir():
        raise InvalidInputError(
            f"memory file {str(target)!r} is a folder; expected the path of a memory file, "
            f"such as {str(target / 'memory.db')!r}"
        )
    if must_exist and not target.is_file():
        raise InvalidInputError(
            f"memory file {str(target)!r} does not exist; "
            f"store memories in it first with 'nuonuo ingest FILE --memory {target}'"
        )
    return AssociativeMemory(target), target


def run_ingest(args: argparse.Namespace) -> int:
    """Read a file and store its memories in the memory file."""
    from nuonuo_core.loaders import read_items

    if args.batch_size < 1:
        raise InvalidInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    items = read_items(args.input, args.format)
    memory, target = _open_memory(args.memory)
    namespace = tuple(args.namespace or ())
    with memory:
        # An item whose id is already stored in this namespace was ingested
        # before, so ingesting the same file again adds nothing instead of failing.
        new_items = [
            item for item in items
            if item.id is None or item.id not in memory or memory.get(item.id).namespace != namespace
        ]
        before = len(memory)
        if new_items:
            memory.add_many(new_items, namespace=namespace, show_progress=not args.quiet, batch_size=args.batch_size)
        added = len(memory) - before
    print(f"Stored {added} new memories from {args.input} in {target} ({len(items) - added} already there).")
    return 0


def run_recall(args: argparse.Namespace) -> int:
    """Recall from the memory file and print the results."""
    memory, target = _open_memory(args.memory, must_exist=True)
    with memory:
        if len(memory) == 0:
            print(f"{target} holds no memories yet; store some with 'nuonuo ingest FILE'.", file=sys.stderr)
            return 1
        results = memory.recall(args.query, k=args.k, hops=args.hops, namespace=tuple(args.namespace or ()))
    if args.json:
        print(json.dumps([
            {
                "id": r.id, "text": r.text, "score": r.score, "similarity": r.similarity,
                "hops": r.hops, "path": list(r.path), "metadata": r.metadata,
            }
            for r in results
        ], indent=2, ensure_ascii=False))
    else:
        _print_results(results)
    return 0


def run_bench(args: argparse.Namespace, rest: list[str]) -> int:
    """Run one of the benchmarks in ``benchmarks/``."""
    import importlib

    modules = {
        "quality": "benchmarks.quality",
        "speed": "benchmarks.speed",
        "curves": "benchmarks.curves",
        "longmemeval": "benchmarks.longmemeval",
        "load": "benchmarks.load_test",
        "locomo": "benchmarks.locomo_recall",
    }
    try:
        module = importlib.import_module(modules[args.benchmark])
    except ModuleNotFoundError as error:
        print(f"benchmark {args.benchmark!r} is not available: {error}", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


def run_chat(rest: list[str]) -> int:
    """Start the example chatbot."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "examples" / "chatbot.py"
    if not path.exists():
        print(f"the chatbot example is not installed; expected {path}", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("nuonuo_chatbot", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    # Registered first, so that pydantic can resolve the module's annotations.
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return int(module.main(rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nuonuo", description="Associative long-term memory for LLM applications.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("demo", help="store a short conversation and show single-hop, reworded and multi-hop recall")

    memory_help = "memory file (default: $NUONUO_HOME/memory.db or ~/.local/share/nuonuo/memory.db)"
    ingest = commands.add_parser("ingest", help="store the memories of a file in the memory file")
    ingest.add_argument("input", help="LoCoMo conversation (.json), JSON array of objects (.json), JSON lines (.jsonl) or plain text file")
    ingest.add_argument("--format", choices=["auto", "locomo", "json", "jsonl", "text"], default="auto", help="input format (default: from the file name and content)")
    ingest.add_argument("--memory", help=memory_help)
    ingest.add_argument("--namespace", nargs="*", help="namespace labels to store under (default: the root namespace)")
    ingest.add_argument("--batch-size", type=int, default=64, help="texts per embedding batch (default: 64)")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")

    recall = commands.add_parser("recall", help="recall memories for a query")
    recall.add_argument("query", help="the query text")
    recall.add_argument("-k", type=int, default=5, help="number of results (default: 5)")
    recall.add_argument("--hops", type=int, default=None, help="hops through the association (default: from the configuration)")
    recall.add_argument("--memory", help=memory_help)
    recall.add_argument("--namespace", nargs="*", help="namespace labels to search (default: the root namespace)")
    recall.add_argument("--json", action="store_true", help="print results as JSON")

    bench = commands.add_parser("bench", help="run a benchmark; options after the name go to it", add_help=False)
    bench.add_argument(
        "benchmark",
        choices=["quality", "speed", "curves", "longmemeval", "load", "locomo"],
        help="which benchmark",
    )

    commands.add_parser("chat", help="the example chatbot; options after 'chat' go to it", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # bench and chat pass their remaining options through, after the tool's own -v.
    verbose = bool(argv) and argv[0] in ("-v", "--verbose")
    command = argv[1:] if verbose else argv
    if command and command[0] in ("chat", "bench"):
        _configure_logging(verbose)
        if command[0] == "chat":
            return run_chat(command[1:])
        if len(command) < 2 or command[1] in ("-h", "--help"):
            parser.parse_args(["bench", "--help"] if len(command) > 1 else ["bench"])
        args = parser.parse_args(command[:2])
        return run_bench(args, command[2:])
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        if args.command == "demo":
            return run_demo(args)
        if args.command == "ingest":
            return run_ingest(args)
        if args.command == "recall":
            return run_recall(args)
    except NuoNuoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
