"""Helpers shared by the benchmarks: data location, embedding cache, metrics,
configuration overrides and output formatting."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import math
import os
import platform
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from nuonuo_core.config import LinkWeights, MemoryConfig
from nuonuo_core.cues import derive_cues, group_for_embedding
from nuonuo_core.embedding import Embedder, Spans, encode_spans_separately
from nuonuo_core.errors import ConfigError

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent


def program_name(module: str, command: str) -> str:
    """Return the command a benchmark was started with, for its usage and error
    lines: ``nuonuo bench <command>`` from the ``nuonuo`` tool, else
    ``python -m <module>``."""
    if Path(sys.argv[0]).name == "nuonuo":
        return f"nuonuo bench {command}"
    return f"python -m {module}"


def default_data_dir() -> Path:
    """``$NUONUO_DATA`` when set, else ``../shared/data`` next to the repository."""
    env = os.environ.get("NUONUO_DATA")
    if env:
        return Path(env).expanduser()
    return REPO_ROOT.parent / "shared" / "data"


class CachingEmbedder:
    """Wraps an embedder and remembers every vector it made, by text.

    All systems of one benchmark run share one instance, so each text is embedded
    once. With ``path`` the cache is also kept in a ``.npz`` file between runs.
    """

    def __init__(self, inner: Embedder, path: str | os.PathLike[str] | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.path = Path(path) if path else None
        self._vectors: dict[str, np.ndarray] = {}
        self.misses = 0
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        with np.load(path) as data:
            model = str(data["model"]) if "model" in data.files else None
            if model is not None and model != self.name:
                raise ConfigError(
                    f"embedding cache {str(path)!r} contains vectors of model {model!r}, "
                    f"not {self.name!r}; pass another cache path or delete the file"
                )
            vectors = data["vectors"]
            if vectors.size and vectors.shape[1] != self.dim:
                raise ConfigError(
                    f"embedding cache {str(path)!r} contains {vectors.shape[1]}-dimensional vectors, "
                    f"but model {self.name!r} makes {self.dim}"
                )
            for key, vector in zip(data["keys"], vectors):
                self._vectors[str(key)] = vector

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self._vectors}.items())
        if missing:
            self.misses += len(missing)
            vectors = self.inner.encode([t for _, t in missing], batch_size=batch_size, show_progress=show_progress)
            for (key, _), vector in zip(missing, np.asarray(vectors, dtype=np.float32)):
                self._vectors[key] = vector
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vectors[k] for k in keys])

    def encode_with_spans(
        self, texts: Sequence[str], spans: Sequence[Spans], *, batch_size: int = 64, show_progress: bool = False
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Embed texts and spans of them as the wrapped embedder does, remembering both."""
        inner = getattr(self.inner, "encode_with_spans", None)
        if inner is None:
            return encode_spans_separately(self, texts, spans, batch_size=batch_size, show_progress=show_progress)
        span_keys = [[self._span_key(t, a, b) for a, b in s] for t, s in zip(texts, spans)]
        missing: dict[str, int] = {}
        for row, (text, keys) in enumerate(zip(texts, span_keys)):
            if self._key(text) not in self._vectors or any(k not in self._vectors for k in keys):
                missing.setdefault(text, row)
        if missing:
            self.misses += len(missing)
            rows = list(missing.values())
            vectors, span_vectors = inner(
                [texts[r] for r in rows], [spans[r] for r in rows], batch_size=batch_size, show_progress=show_progress
            )
            for row, vector, pieces in zip(rows, np.asarray(vectors, dtype=np.float32), span_vectors):
                self._vectors[self._key(texts[row])] = vector
                for key, piece in zip(span_keys[row], np.asarray(pieces, dtype=np.float32)):
                    self._vectors[key] = piece
        text_vectors = (
            np.stack([self._vectors[self._key(t)] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
        )
        return text_vectors, [
            np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)
            for keys in span_keys
        ]

    @staticmethod
    def _span_key(text: str, start: int, end: int) -> str:
        return hashlib.sha1(f"span {start} {end} {text}".encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self._vectors)

    def count_missing(self, texts: Sequence[str]) -> int:
        """Return how many distinct texts of ``texts`` are not cached yet."""
        return sum(1 for key in {self._key(t) for t in texts} if key not in self._vectors)

    def save(self) -> None:
        """Write the cache to ``path``, replacing the file in one step."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._vectors.keys()))
        vectors = np.stack(list(self._vectors.values())) if self._vectors else np.zeros((0, self.dim), np.float32)
        # Write through a handle, because np.savez appends ".npz" to a bare name
        # that lacks it, and the next run would not find the file.
        partial = self.path.with_name(self.path.name + ".partial")
        with open(partial, "wb") as handle:
            np.savez(handle, keys=keys, vectors=vectors, model=np.array(self.name))
        os.replace(partial, self.path)


def embed_ahead(
    embedder: Embedder,
    documents: Iterable[str],
    others: Iterable[str],
    configs: Iterable[MemoryConfig],
    *,
    batch_size: int = 64,
    show_progress: bool = False,
) -> int:
    """Embed, once, every text a run will ask for, and return how many were not cached.

    ``documents`` are stored as NuoNuo memories under each of ``configs``: each
    gets its cues, and its sentence cues come from the pass over the document
    where the embedder pools spans, as the memory does. ``others`` (questions)
    are embedded as they are. Without a cache there is nothing to embed ahead.
    """
    if not isinstance(embedder, CachingEmbedder):
        return 0
    before = embedder.misses
    documents = list(dict.fromkeys(documents))
    memories = [(text, *derive_cues(text, [], config)) for config in set(configs) for text in documents]
    pooled, plain = group_for_embedding(memories, getattr(embedder.inner, "encode_with_spans", None) is not None)
    if pooled:
        embedder.encode_with_spans(
            list(pooled), list(pooled.values()), batch_size=batch_size, show_progress=show_progress
        )
    embedder.encode(list(dict.fromkeys([*others, *plain])), batch_size=batch_size, show_progress=show_progress)
    return embedder.misses - before


def machine_description() -> str:
    """One line naming the CPU, core count and Python version of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def recall_at(found: Sequence[str], relevant: Sequence[str], k: int) -> float:
    """Share of ``relevant`` among the first ``k`` of ``found``."""
    if not relevant:
        return 0.0
    top = set(found[:k])
    return sum(1 for r in set(relevant) if r in top) / len(set(relevant))


def recall_any_at(found: Sequence[str], relevant: Sequence[str], k: int) -> float:
    """1.0 when at least one of ``relevant`` is among the first ``k`` of ``found``, else 0.0."""
    top = set(found[:k])
    return 1.0 if any(r in top for r in relevant) else 0.0


def recall_all_at(found: Sequence[str], relevant: Sequence[str], k: int) -> float:
    """1.0 when every one of ``relevant`` is among the first ``k`` of ``found``, else 0.0.

    An empty ``relevant`` gives 0.0, as in :func:`recall_at`. Callers leave such
    questions out.
    """
    if not relevant:
        return 0.0
    top = set(found[:k])
    return 1.0 if all(r in top for r in relevant) else 0.0


def ndcg_at(found: Sequence[str], relevant: Sequence[str], k: int) -> float:
    """Binary-relevance NDCG of the first ``k`` of ``found``.

    ``DCG@k = sum(1 / log2(i + 1))`` over the ranks ``i`` (from 1) of the
    relevant items among the first ``k``. The ideal DCG is that of
    ``min(len(set(relevant)), k)`` relevant items at ranks 1, 2, and so on. A
    repeated id in ``found`` counts only at its first rank. Empty ``relevant``
    gives 0.0.
    """
    wanted = set(relevant)
    if not wanted or k <= 0:
        return 0.0
    seen: set[str] = set()
    dcg = 0.0
    for rank, item in enumerate(found[:k], start=1):
        if item in wanted and item not in seen:
            dcg += 1.0 / math.log2(rank + 1)
        seen.add(item)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(wanted), k) + 1))
    return dcg / ideal


def unique_in_order(items: Iterable[T]) -> list[T]:
    """Return ``items`` with repeats removed, keeping the first occurrence of each."""
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------------- configuration


def _parse_value(text: str) -> Any:
    """Read a command-line value: a Python literal (number, bool, None, quoted
    string) when it parses as one, ``true``/``false`` in any case as bools, and
    otherwise the text itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def apply_overrides(config: MemoryConfig, settings: Sequence[str]) -> MemoryConfig:
    """Return ``config`` with ``field=value`` settings applied, such as
    ``lexical_weight=0.3`` or ``links.session=0`` (a field of :class:`LinkWeights`).

    Raises:
        ConfigError: on a setting without ``=``, an unknown field, or a value the
            configuration rejects; the message names the setting.
    """
    config_fields = {f.name for f in dataclasses.fields(MemoryConfig)}
    link_fields = {f.name for f in dataclasses.fields(LinkWeights)}
    changes: dict[str, Any] = {}
    link_changes: dict[str, Any] = {}
    for setting in settings:
        name, separator, raw = setting.partition("=")
        name = name.strip()
        if not separator or not name:
            raise ConfigError(f"invalid setting {setting!r}: expected field=value, such as lexical_weight=0.3")
        value = _parse_value(raw)
        if name.startswith("links."):
            link_name = name[len("links."):]
            if link_name not in link_fields:
                raise ConfigError(
                    f"unknown link kind {link_name!r} in {setting!r}; valid: "
                    + ", ".join(f"links.{n}" for n in sorted(link_fields))
                )
            link_changes[link_name] = value
        elif name in config_fields and name != "links":
            changes[name] = value
        else:
            raise ConfigError(
                f"unknown MemoryConfig field {name!r} in {setting!r}; valid: "
                + ", ".join(sorted(config_fields - {"links"}) + [f"links.{n}" for n in sorted(link_fields)])
            )
    if link_changes:
        changes["links"] = dataclasses.replace(config.links, **link_changes)
    try:
        return config.replace(**changes)
    except ConfigError as error:
        raise ConfigError(f"invalid setting among {list(settings)!r}: {error}") from error


def describe_overrides(settings: Sequence[str]) -> str:
    """Join the settings into one line for reports, or return ``"none"`` when there are none."""
    return ", ".join(settings) if settings else "none"


# ---------------------------------------------------------------------- output


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on standard error."""
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, file=sys.stderr, mininterval=1.0, leave=False)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, markdown: bool = False) -> str:
    """Lay out rows as an aligned text table, or as a Markdown table.

    Floats are written with three decimals. Columns that hold a number are
    right-aligned, the others left-aligned.
    """
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [
        any(isinstance(row[i], (int, float, np.number)) and not isinstance(row[i], bool) for row in rows)
        for i in range(len(headers))
    ]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join("---:" if n else ":---" for n in numeric) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in cells)
        return "\n".join(lines)
    widths = [max([len(str(h))] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    return "\n".join([line([str(h) for h in headers]), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def source_revision() -> str:
    """Return the git commit of the working tree, marked when ``nuonuo_core`` has uncommitted changes.

    Returns ``"unknown"`` outside a git checkout.
    """
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", "nuonuo_core"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} with uncommitted changes in nuonuo_core" if changes else commit
