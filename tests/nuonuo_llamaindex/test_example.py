"""The LlamaIndex example runs offline and shows association paths."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_query_example_prints_paths():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "llamaindex_query.py")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "path: archive -> flood" in completed.stdout
    assert "hops=1" in completed.stdout
    assert "Query: Did anything happen" in completed.stdout
