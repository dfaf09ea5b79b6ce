"""Pattern separation and the Hopfield settle."""

from __future__ import annotations

import torch

from nuonuo_core.functional import codes_to_dense, hopfield_settle, make_projection, project, winner_take_all


def unit_rows(count: int, dim: int = 384, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(count, dim, generator=generator), dim=1)


def test_projection_is_deterministic():
    first = make_projection(384, 4096, blocks=16, seed=3)
    second = make_projection(384, 4096, blocks=16, seed=3)
    other = make_projection(384, 4096, blocks=16, seed=4)
    assert torch.equal(first.rotation, second.rotation)
    assert torch.equal(first.weights, second.weights)
    assert not torch.equal(first.weights, other.weights)


def test_block_projection_equals_dense_matrix():
    projection = make_projection(384, 4096, blocks=16, seed=0)
    x = unit_rows(5)
    blockwise = project(x, projection).transpose(0, 1).reshape(5, -1)
    assert torch.allclose(blockwise, x @ projection.dense(), atol=1e-4)


def test_winner_take_all_equals_full_topk():
    projection = make_projection(384, 16384, blocks=32, seed=0)
    x = unit_rows(300, seed=1)
    codes = winner_take_all(x, projection, 50)
    reference = (x @ projection.dense()).topk(50, dim=1).indices.sort(dim=1).values
    assert torch.equal(codes, reference)


def test_winner_take_all_dense_projection():
    projection = make_projection(384, 2048, blocks=1, seed=0)
    x = unit_rows(20, seed=2)
    codes = winner_take_all(x, projection, 30)
    reference = (x @ projection.dense()).topk(30, dim=1).indices.sort(dim=1).values
    assert torch.equal(codes, reference)


def test_similar_inputs_share_units():
    projection = make_projection(384, 16384, blocks=32, seed=0)
    x = unit_rows(200, seed=3)
    noise = unit_rows(200, seed=4)
    near = torch.nn.functional.normalize(0.9 * x + 0.1 * noise, dim=1)
    overlap_near = (codes_to_dense(winner_take_all(x, projection, 50), 16384)
                    * codes_to_dense(winner_take_all(near, projection, 50), 16384)).sum(1).mean()
    overlap_far = (codes_to_dense(winner_take_all(x, projection, 50), 16384)
                   * codes_to_dense(winner_take_all(noise, projection, 50), 16384)).sum(1).mean()
    assert overlap_near > 35
    assert overlap_far < 2


def test_settle_converges_to_stored_pattern():
    patterns = unit_rows(20, seed=5)
    cue = torch.nn.functional.normalize(patterns[7] + 0.3 * unit_rows(1, seed=6)[0], dim=0)
    result = hopfield_settle(cue, patterns, beta=16.0, update_steps_max=50, update_steps_eps=1e-6)
    assert result.converged
    assert int(result.attention.argmax()) == 7
    assert float(result.state @ patterns[7]) > 0.99


def test_settle_respects_step_limit():
    patterns = unit_rows(20, seed=7)
    result = hopfield_settle(patterns[0], patterns, beta=1.0, update_steps_max=2, update_steps_eps=1e-12)
    assert result.steps == 2
    assert not result.converged
