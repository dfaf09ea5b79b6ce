"""Helpers shared by the benchmarks: data location, embedding cache, metrics."""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nuonuo_core.embedding import Embedder

REPO_ROOT = Path(__file__).resolve().parent.parent


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
            data = np.load(self.path)
            for key, vector in zip(data["keys"], data["vectors"]):
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

    def save(self) -> None:
        """Write the cache to ``path``."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._vectors.keys()))
        vectors = np.stack(list(self._vectors.values())) if self._vectors else np.zeros((0, self.dim), np.float32)
        np.savez(self.path, keys=keys, vectors=vectors)


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
