"""Curves of noise tolerance, chains and capacity, at sizes small enough for a test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.curves import (
    FLAT,
    HEBBIAN,
    HOPFIELD,
    VectorEmbedder,
    VectorMemory,
    capacity_curve,
    chain_curve,
    corrupt,
    main,
    noise_curve,
    random_unit_vectors,
)
from nuonuo_core import MemoryConfig


def test_corrupt_replaces_the_stated_share():
    rng = np.random.default_rng(1)
    vectors = random_unit_vectors(5, 384, rng)
    corrupted = corrupt(vectors, 0.25, rng)
    np.testing.assert_allclose(np.linalg.norm(corrupted, axis=1), 1.0, rtol=1e-5)
    # Renormalising scales the kept coordinates equally: 288 of 384 keep their ratio.
    for original, changed in zip(vectors, corrupted):
        ratio = changed / original
        kept = np.isclose(ratio, np.median(ratio), rtol=1e-4)
        assert kept.sum() == 384 - 96


def test_corrupt_zero_keeps_vectors():
    rng = np.random.default_rng(2)
    vectors = random_unit_vectors(3, 16, rng)
    np.testing.assert_array_equal(corrupt(vectors, 0.0, rng), vectors)


def test_corrupt_rejects_bad_fraction():
    with pytest.raises(ValueError, match="fraction must be from 0 to 1, got 1.5"):
        corrupt(np.ones((1, 4), dtype=np.float32), 1.5, np.random.default_rng(0))


def test_vector_embedder_returns_named_rows():
    vectors = random_unit_vectors(4, 8, np.random.default_rng(3))
    embedder = VectorEmbedder(vectors)
    np.testing.assert_array_equal(embedder.encode(["m2", "m0"]), vectors[[2, 0]])
    with pytest.raises(ValueError, match="must look like 'm<row>'"):
        embedder.encode(["hello"])


def test_vector_memory_readouts_find_exact_cues():
    vectors = random_unit_vectors(300, 384, np.random.default_rng(4))
    store = VectorMemory.create(vectors, MemoryConfig(device="cpu"))
    store.fill(300)
    assert len(store.memory) == 300
    assert store.hopfield_top1(vectors[17]) == 17
    assert store.hebbian_top1(vectors[[5, 250]]) == [5, 250]
    assert store.flat_ranking(vectors[99], 1).tolist() == [99]


def test_noise_curve_shape_and_clean_cues():
    curve = noise_curve(sizes=(200,), fractions=(0.0, 0.5), queries=40, seed=0)
    assert set(curve) == {200}
    for method in (HOPFIELD, HEBBIAN, FLAT):
        values = curve[200][method]
        assert len(values) == 2
        assert values[0] == 1.0, method
        assert all(0.0 <= v <= 1.0 for v in values)


def test_chain_curve_follows_links():
    curve = chain_curve(chains=3, length=4, distractors=300, result_counts=(20,), seed=0)
    nuonuo = f"{HOPFIELD} + association, top 20"
    flat = f"{FLAT}, top 20"
    assert set(curve) == {nuonuo, flat}
    assert len(curve[nuonuo]) == 4
    assert curve[nuonuo][0] == 1.0
    assert curve[flat][0] == 1.0
    # One link away, only the association can reach the next memory with its path.
    assert curve[nuonuo][1] == 1.0


def test_capacity_curve_labels():
    curve = capacity_curve(sizes=(100, 300), code_dims=(1024, 2048), k=20, corruption=0.2, queries=30, seed=0)
    assert set(curve) == {
        FLAT,
        f"{HOPFIELD}, code_dim 1024", f"{HEBBIAN}, code_dim 1024",
        f"{HOPFIELD}, code_dim 2048", f"{HEBBIAN}, code_dim 2048",
    }
    assert all(len(values) == 2 for values in curve.values())


def test_command_writes_tables_and_charts(tmp_path, capsys):
    out = tmp_path / "curves"
    status = main([
        "--out", str(out), "--queries", "20", "--noise-sizes", "150", "--chains", "2", "--chain-length", "3",
        "--distractors", "100", "--capacity-sizes", "100", "200", "--code-dims", "1024",
    ])
    assert status == 0
    printed = capsys.readouterr().out
    assert "Noise tolerance" in printed
    assert "Chains" in printed
    assert "Capacity" in printed
    for name in ("noise.png", "chains.png", "capacity.png", "report.md"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["capacity"]["sizes"] == [100, 200]


def test_command_rejects_bad_counts(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--queries", "0"])
    assert "--queries must be >= 1, got 0" in capsys.readouterr().err
