"""Benchmark helpers: metrics, configuration overrides, embedding cache, tables."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from benchmarks.common import (
    CachingEmbedder,
    apply_overrides,
    format_table,
    ndcg_at,
    program_name,
    recall_all_at,
    recall_any_at,
    recall_at,
)
from nuonuo_core import HashingEmbedder, MemoryConfig
from nuonuo_core.errors import ConfigError


def test_recall_at_counts_share_of_relevant():
    assert recall_at(["a", "x", "b"], ["a", "b"], 2) == 0.5
    assert recall_at(["a", "x", "b"], ["a", "b"], 3) == 1.0
    assert recall_at(["a"], [], 1) == 0.0


def test_recall_any_and_all():
    assert recall_any_at(["x", "a"], ["a", "b"], 1) == 0.0
    assert recall_any_at(["x", "a"], ["a", "b"], 2) == 1.0
    assert recall_all_at(["x", "a"], ["a", "b"], 2) == 0.0
    assert recall_all_at(["b", "a"], ["a", "b"], 2) == 1.0
    assert recall_all_at(["a"], [], 1) == 0.0


def test_ndcg_hand_computed():
    # Relevant at ranks 1 and 3 of 3; ideal has both at ranks 1 and 2.
    expected = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at(["a", "x", "b"], ["a", "b"], 3) == pytest.approx(expected)
    # Ideal DCG is capped at k: one relevant slot at k = 1.
    assert ndcg_at(["a", "x"], ["a", "b"], 1) == 1.0
    # A repeated id counts once.
    assert ndcg_at(["x", "a", "a"], ["a"], 3) == pytest.approx(1 / math.log2(3))
    assert ndcg_at(["a"], [], 3) == 0.0


def test_apply_overrides_sets_fields_and_links():
    config = apply_overrides(MemoryConfig(), ["lexical_weight=0.25", "links.session=0", "sentence_cues=false", "device=cpu"])
    assert config.lexical_weight == 0.25
    assert config.links.session == 0
    assert config.links.explicit == MemoryConfig().links.explicit
    assert config.sentence_cues is False
    assert config.device == "cpu"


def test_apply_overrides_without_settings_keeps_config():
    assert apply_overrides(MemoryConfig(), []) == MemoryConfig()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("lexical_weight", "expected field=value"),
        ("no_such_field=1", "unknown MemoryConfig field 'no_such_field'"),
        ("links.gossip=1", "unknown link kind 'gossip'"),
        ("beta=-1", "beta must be a positive finite number"),
    ],
)
def test_apply_overrides_rejects_bad_settings(setting, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(MemoryConfig(), [setting])


class CountingEmbedder(HashingEmbedder):
    """A hashing embedder that counts the texts it embeds."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.encoded = 0

    def encode(self, texts, *, batch_size=64, show_progress=False):
        self.encoded += len(texts)
        return super().encode(texts, batch_size=batch_size, show_progress=show_progress)


def test_caching_embedder_embeds_each_text_once():
    inner = CountingEmbedder()
    cache = CachingEmbedder(inner)
    first = cache.encode(["a b", "c d", "a b"])
    second = cache.encode(["c d"])
    assert inner.encoded == 2
    np.testing.assert_array_equal(first[1], second[0])
    np.testing.assert_array_equal(first[0], first[2])


def test_caching_embedder_file_round_trip(tmp_path):
    # A name without the .npz suffix must still be found by the next run.
    path = tmp_path / "embeddings.cache"
    cache = CachingEmbedder(CountingEmbedder(), path)
    vectors = cache.encode(["one", "two"])
    cache.save()
    assert path.exists()
    inner = CountingEmbedder()
    reopened = CachingEmbedder(inner, path)
    np.testing.assert_array_equal(reopened.encode(["two", "one"]), vectors[::-1])
    assert inner.encoded == 0


def test_caching_embedder_rejects_other_model(tmp_path):
    path = tmp_path / "embeddings.npz"
    cache = CachingEmbedder(CountingEmbedder(), path)
    cache.encode(["one"])
    cache.save()
    with pytest.raises(ConfigError, match="contains vectors of model 'hashing'"):
        CachingEmbedder(HashingEmbedder(dim=64, name="other"), path)


def test_format_table_aligns_and_rounds():
    text = format_table(["system", "recall"], [["flat", 0.5], ["NuoNuo", float("nan")]])
    lines = text.splitlines()
    assert lines[0].split() == ["system", "recall"]
    assert lines[2].split() == ["flat", "0.500"]
    assert lines[3].split() == ["NuoNuo", "n/a"]
    markdown = format_table(["system", "recall"], [["flat", 0.5]], markdown=True)
    assert markdown.splitlines() == ["| system | recall |", "|:---|---:|", "| flat | 0.500 |"]


def test_program_name_nuonuo_tool_and_python_module(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/nuonuo", "bench", "quality"])
    assert program_name("benchmarks.quality", "quality") == "nuonuo bench quality"
    monkeypatch.setattr(sys, "argv", ["/repo/benchmarks/quality.py", "--help"])
    assert program_name("benchmarks.quality", "quality") == "python -m benchmarks.quality"
