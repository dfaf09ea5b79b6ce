"""Pattern separation and the Hopfield settle."""

from __future__ import annotations

import pytest
import torch

from nuonuo_core import _winners, functional
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


@pytest.mark.skipif(not _winners.AVAILABLE, reason="Numba is not installed, so there is no compiled selection")
@pytest.mark.parametrize("code_dim, k, rows_per_step", [(16384, 50, 128), (4096, 8, 7), (8192, 100, 1000)])
def test_compiled_matches_tensor_selection(monkeypatch, code_dim, k, rows_per_step):
    projection = make_projection(384, code_dim, blocks=32, seed=0)
    x = unit_rows(500, seed=5)
    compiled = winner_take_all(x, projection, k, rows_per_step)
    monkeypatch.setattr(functional, "_COMPILED", False)
    assert torch.equal(compiled, winner_take_all(x, projection, k, rows_per_step))


@pytest.mark.skipif(not _winners.AVAILABLE, reason="Numba is not installed, so there is no compiled selection")
def test_compiled_ties_in_unit_order():
    # Four blocks of 64 units; unit u of a row is activity[u // 64, row, u % 64].
    activity = torch.zeros(4, 3, 64)
    activity[1, 0, 5] = 2.0  # row 0: unit 69 wins, nine more tie at 0
    activity[:, 2] = -1.0
    activity[3, 2, 60:] = 1.0  # row 2: units 252-255 win, six more tie at -1
    codes = _winners.select_winners(activity.numpy(), 10, threads=2)
    assert codes[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 69]
    assert codes[1].tolist() == list(range(10))
    assert codes[2].tolist() == [0, 1, 2, 3, 4, 5, 252, 253, 254, 255]


def test_winner_take_all_rejects_nan():
    projection = make_projection(384, 4096, blocks=16, seed=0)
    x = unit_rows(4)
    x[2, 7] = float("nan")
    with pytest.raises(ValueError, match="invalid embedding at row 2"):
        winner_take_all(x, projection, 20)


def test_rotation_batches_keep_codes(monkeypatch):
    projection = make_projection(384, 4096, blocks=16, seed=0)
    x = unit_rows(700, seed=2)
    whole = winner_take_all(x, projection, 20, rows_per_step=64)
    monkeypatch.setattr(functional, "_ROWS_PER_ROTATION", 300)
    assert torch.equal(winner_take_all(x, projection, 20, rows_per_step=64), whole)
    x[650, 3] = float("inf")
    with pytest.raises(ValueError, match="invalid embedding at row 650"):
        winner_take_all(x, projection, 20, rows_per_step=64)


@pytest.mark.parametrize("k", [0, -1, 4096, 2.5])
def test_winner_take_all_rejects_bad_k(k):
    projection = make_projection(384, 4096, blocks=16, seed=0)
    with pytest.raises(ValueError, match=f"invalid k {k!r}: expected an int from 1 to 4095"):
        winner_take_all(unit_rows(2), projection, k)


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
