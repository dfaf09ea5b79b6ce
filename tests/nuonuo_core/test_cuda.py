"""The CUDA path gives the same recall as the CPU path. Skipped without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nuonuo_core import AssociativeMemory, HashingEmbedder, MemoryConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

TEXTS = [f"note {i} about {topic} in {place}" for i, (topic, place) in enumerate(
    (t, p) for t in ("tea", "trains", "cats", "rain", "music") for p in ("Oslo", "Lima", "Pune", "Kyiv")
)]


def build(device: str) -> AssociativeMemory:
    memory = AssociativeMemory(embedder=HashingEmbedder(), config=MemoryConfig(device=device))
    ids = memory.add_many(TEXTS, session="s")
    memory.associate(ids[0], ids[-1])
    return memory


@pytest.mark.parametrize("hops", [1, 3])
def test_cuda_recall_matches_cpu(hops):
    cpu, cuda = build("cpu"), build("cuda")
    assert cuda.device.type == "cuda"
    for query in ("tea in Oslo", "music", "cats in Kyiv"):
        expected = cpu.recall(query, k=8, hops=hops)
        got = cuda.recall(query, k=8, hops=hops)
        assert [r.text for r in got] == [r.text for r in expected]
        assert np.allclose([r.score for r in got], [r.score for r in expected], atol=1e-4)


def test_cuda_codes_match_cpu():
    from nuonuo_core.functional import make_projection, winner_take_all

    x = torch.nn.functional.normalize(torch.randn(512, 384), dim=1)
    projection = make_projection(384, 16384, 32, 0)
    on_cpu = winner_take_all(x, projection, 50)
    on_gpu = winner_take_all(x.cuda(), projection.to(torch.device("cuda")), 50).cpu()
    assert (on_cpu == on_gpu).float().mean() > 0.999
