"""Tensor mathematics of the memory as plain functions.

Pattern separation (a fixed random projection followed by winner-take-all), the
two-stage Hopfield settle, and the dense Hebbian outer-product update that the
factored association in :mod:`nuonuo_core.association` reproduces exactly.

None of these functions keeps state. Recall-side functions run under
``torch.no_grad()``; the one function that writes (:func:`hebbian_update_`) says
so in its name and docstring.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Projection:
    """A fixed random projection from embedding space to code space.

    The embedding is rotated by ``rotation`` and split into ``blocks`` equal parts;
    part ``g`` is multiplied by ``weights[g]``. The result has
    ``blocks * weights.shape[2]`` units, ordered block by block.
    """

    rotation: torch.Tensor
    """Orthogonal matrix. Shape ``(input_dim, input_dim)``, float32."""

    weights: torch.Tensor
    """Gaussian blocks. Shape ``(blocks, input_dim / blocks, code_dim / blocks)``, float32."""

    @property
    def input_dim(self) -> int:
        return self.rotation.shape[0]

    @property
    def code_dim(self) -> int:
        return self.weights.shape[0] * self.weights.shape[2]

    @property
    def blocks(self) -> int:
        return self.weights.shape[0]

    def to(self, device: torch.device) -> Projection:
        """Return the projection on ``device``: itself when it is already there."""
        if self.rotation.device == device:
            return self
        return Projection(self.rotation.to(device), self.weights.to(device))

    def dense(self) -> torch.Tensor:
        """Return the projection as one dense matrix of shape ``(input_dim, code_dim)``.

        ``x @ projection.dense()`` equals :func:`project` up to float rounding.
        """
        block_diagonal = torch.block_diag(*self.weights.unbind(0))
        return self.rotation @ block_diagonal


def make_projection(
    input_dim: int,
    code_dim: int,
    blocks: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Projection:
    """Draw the fixed random projection used for pattern separation.

    The same arguments always give the same projection, on every platform, because
    the numbers are drawn on the CPU from a generator seeded with ``seed``.

    Args:
        input_dim: Embedding dimension. Must be divisible by ``blocks``.
        code_dim: Number of code units. Must be divisible by ``blocks``.
        blocks: Number of diagonal blocks; 1 gives a dense Gaussian projection.
        seed: Seed of the generator.
        device: Device of the returned tensors.

    Returns:
        A :class:`Projection` with float32 tensors on ``device``.
    """
    if input_dim % blocks or code_dim % blocks:
        raise ValueError(
            f"blocks ({blocks}) must divide both input_dim ({input_dim}) and code_dim ({code_dim})"
        )
    key = (input_dim, code_dim, blocks, seed)
    with _PROJECTION_LOCK:
        cached = _PROJECTIONS.get(key)
        if cached is None:
            cached = _draw_projection(*key)
            _PROJECTIONS[key] = cached
    return cached.to(torch.device(device))


def _draw_projection(input_dim: int, code_dim: int, blocks: int, seed: int) -> Projection:
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(input_dim, input_dim, generator=generator, dtype=torch.float64)
    # One thread: a multithreaded QR of this small matrix is slower, badly so on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rotation, upper = torch.linalg.qr(gaussian)
    finally:
        torch.set_num_threads(threads)
    # Fix the signs so the rotation does not depend on the QR implementation.
    rotation = rotation * torch.sign(torch.diagonal(upper)).unsqueeze(0)
    weights = torch.randn(
        blocks, input_dim // blocks, code_dim // blocks, generator=generator, dtype=torch.float64
    )
    return Projection(rotation.to(torch.float32), weights.to(torch.float32))


# Projections already drawn in this process, on the CPU, by their arguments.
_PROJECTIONS: dict[tuple[int, int, int, int], Projection] = {}
_PROJECTION_LOCK = threading.Lock()


@torch.no_grad()
def project(embeddings: torch.Tensor, projection: Projection) -> torch.Tensor:
    """Project embeddings into code space.

    Shape:
        embeddings: ``(n, input_dim)``, float32.
        return: ``(blocks, n, code_dim / blocks)``, float32, block-major: unit
        ``u`` of row ``i`` is ``result[u // block_size, i, u % block_size]``.
    """
    n = embeddings.shape[0]
    rotated = embeddings @ projection.rotation
    parts = rotated.view(n, projection.blocks, -1).transpose(0, 1)
    return torch.bmm(parts, projection.weights)


@torch.no_grad()
def winner_take_all(
    embeddings: torch.Tensor, projection: Projection, k: int, rows_per_step: int = 128
) -> torch.Tensor:
    """Turn embeddings into sparse codes: project, then keep the ``k`` largest units.

    The top ``k`` units are found exactly without a full sort of every row: each
    row is cut into tiles of 32 units, only the ``k`` tiles with the largest
    maxima can hold a winner (a winner's tile maximum is at least the winner,
    and fewer than ``k`` values exceed it), and the winners are picked among
    those tiles' units that reach the ``k``-th largest tile maximum. On the CPU,
    with Numba installed, a compiled loop makes that choice
    (:mod:`nuonuo_core._winners`); elsewhere tensor operations do. The rotation
    is applied to :data:`_ROWS_PER_ROTATION` rows at a time, and the block
    products and the selection to ``rows_per_step`` rows at a time, so the
    rotated rows and the projected activity stay in the CPU cache.

    Raises:
        ValueError: if an embedding contains NaN or infinity, or ``k`` is not
            from 1 to ``code_dim - 1``.

    Shape:
        embeddings: ``(n, input_dim)``, float32.
        return: ``(n, k)``, int64, the indices of the active units in ascending order.
    """
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k < projection.code_dim:
        raise ValueError(f"invalid k {k!r}: expected an int from 1 to {projection.code_dim - 1}")
    weights = projection.weights
    count = embeddings.shape[0]
    # One buffer for the activity of every step, because a fresh allocation of
    # this size per step ran measurably slower (its pages are faulted in anew).
    buffer = torch.empty(
        weights.shape[0] * min(rows_per_step, count) * weights.shape[2],
        dtype=weights.dtype,
        device=weights.device,
    )
    if count <= rows_per_step:
        return _winner_take_all_rows(_rotated(embeddings, projection, 0), weights, k, buffer)
    # The rotation runs on a batch of rows at a time, so that the rotated rows
    # are still in the cache when they are projected. Rotating a million rows
    # at once made the whole separation 1.7 times slower in one timing.
    codes = torch.empty((count, k), dtype=torch.int64, device=embeddings.device)
    for batch_start in range(0, count, _ROWS_PER_ROTATION):
        rotated = _rotated(embeddings[batch_start : batch_start + _ROWS_PER_ROTATION], projection, batch_start)
        for start in range(0, rotated.shape[0], rows_per_step):
            rows = rotated[start : start + rows_per_step]
            first = batch_start + start
            codes[first : first + rows.shape[0]] = _winner_take_all_rows(rows, weights, k, buffer)
    return codes


_ROWS_PER_ROTATION = 4096
"""Rows rotated at once by :func:`winner_take_all` (6 MB of float32 at 384 dimensions)."""


def _rotated(embeddings: torch.Tensor, projection: Projection, first_row: int) -> torch.Tensor:
    """Return the rotated embeddings; raises if one is not finite, naming its row from ``first_row``."""
    rotated = embeddings @ projection.rotation
    finite = torch.isfinite(rotated).all(dim=1)
    if not bool(finite.all()):
        row = first_row + int((~finite).nonzero()[0, 0])
        raise ValueError(f"invalid embedding at row {row}: it contains NaN or infinity, expected finite values")
    return rotated


_TILE = 32
"""Units per tile in :func:`winner_take_all`. On a two-core CPU, 32 ran faster than
16 or 64 (an estimate from timing this function on one machine)."""


def _compiled_selection() -> bool:
    """Return whether the compiled selection of :mod:`nuonuo_core._winners` can run here."""
    global _COMPILED
    if _COMPILED is None:
        from nuonuo_core import _winners

        _COMPILED = _winners.AVAILABLE and _winners.TILE == _TILE
    return _COMPILED


_COMPILED: bool | None = None
"""Cached result of :func:`_compiled_selection`, None until it is first called."""


def _winner_take_all_rows(
    rotated: torch.Tensor, weights: torch.Tensor, k: int, buffer: torch.Tensor
) -> torch.Tensor:
    n = rotated.shape[0]
    device = rotated.device
    if n == 0:
        return torch.empty(0, k, dtype=torch.int64, device=device)
    blocks, _, block_size = weights.shape
    activity = buffer[: blocks * n * block_size].view(blocks, n, block_size)
    torch.bmm(rotated.view(n, blocks, -1).transpose(0, 1), weights, out=activity)
    tile = _TILE if block_size % _TILE == 0 else block_size
    tiles_per_block = block_size // tile
    compiled = device.type == "cpu" and activity.dtype == torch.float32 and tile == _TILE
    if compiled and blocks * tiles_per_block > k and _compiled_selection():
        from nuonuo_core import _winners

        return torch.from_numpy(_winners.select_winners(activity.numpy(), k, torch.get_num_threads()))
    if blocks * tiles_per_block <= k:
        flat = activity.transpose(0, 1).reshape(n, -1)
        return flat.topk(k, dim=1).indices.sort(dim=1).values

    # One row per tile, numbered (block, row, tile in block); the maximum of
    # every tile, rearranged to (n, tiles) with tiles numbered block by block.
    tiled = activity.view(blocks * n * tiles_per_block, tile)
    tile_max = tiled.amax(dim=1).view(blocks, n, tiles_per_block)
    tile_max = tile_max.transpose(0, 1).reshape(n, blocks * tiles_per_block)
    tile_values, best_tiles = tile_max.topk(k, dim=1, sorted=False)  # (n, k)
    block_of_tile = best_tiles // tiles_per_block
    tile_in_block = best_tiles - block_of_tile * tiles_per_block
    rows = torch.arange(n, device=device).unsqueeze(1)
    candidates = tiled.index_select(0, ((block_of_tile * n + rows) * tiles_per_block + tile_in_block).view(-1))
    candidates = candidates.view(n, k * tile)

    # Every winner is at least the k-th largest tile maximum, and at least k
    # candidates reach it, so keep those (usually a few more than k) and pick
    # the k largest among them.
    threshold = tile_values.min(dim=1, keepdim=True).values
    kept = (candidates >= threshold).nonzero()  # (m, 2), row by row
    kept_rows, kept_columns = kept[:, 0], kept[:, 1]
    counts = torch.bincount(kept_rows, minlength=n)
    width = int(counts.max())
    column = torch.arange(kept.shape[0], device=device) - (torch.cumsum(counts, 0) - counts)[kept_rows]
    chosen_tile = kept_columns // tile
    units = (
        block_of_tile[kept_rows, chosen_tile] * block_size
        + tile_in_block[kept_rows, chosen_tile] * tile
        + (kept_columns - chosen_tile * tile)
    )
    kept_units = torch.zeros((n, width), dtype=torch.int64, device=device)
    kept_units[kept_rows, column] = units
    if width > k:
        kept_values = torch.full((n, width), float("-inf"), device=device)
        kept_values[kept_rows, column] = candidates[kept_rows, kept_columns]
        winners = kept_values.topk(k, dim=1, sorted=False).indices
        kept_units = torch.gather(kept_units, 1, winners)
    return kept_units.sort(dim=1).values


def codes_to_dense(codes: torch.Tensor, code_dim: int) -> torch.Tensor:
    """Turn index codes into binary vectors.

    Shape:
        codes: ``(n, k)``, int64 unit indices.
        return: ``(n, code_dim)``, float32, with ``k`` ones per row.
    """
    dense = torch.zeros(codes.shape[0], code_dim, dtype=torch.float32, device=codes.device)
    dense.scatter_(1, codes, 1.0)
    return dense


@dataclass(frozen=True)
class SettleResult:
    """Outcome of :func:`hopfield_settle`."""

    state: torch.Tensor
    """The state pattern at the fixed point. Shape ``(dim,)``."""

    attention: torch.Tensor
    """Softmax attention over the stored patterns at the fixed point. Shape ``(n,)``."""

    steps: int
    """Number of update steps taken."""

    converged: bool
    """Whether the state moved less than ``update_steps_eps`` before the step limit."""


@torch.no_grad()
def hopfield_settle(
    state: torch.Tensor,
    stored_patterns: torch.Tensor,
    beta: float,
    update_steps_max: int,
    update_steps_eps: float,
) -> SettleResult:
    """Settle a state pattern on stored patterns with the modern Hopfield update.

    Each step replaces the state ``xi`` by ``X^T softmax(beta X xi)``, a weighted
    mean of the stored patterns ``X``, and renormalises it to unit length, because
    the stored patterns are unit vectors compared by cosine similarity. It stops
    when the state moves less than ``update_steps_eps`` or after
    ``update_steps_max`` steps.

    Shape:
        state: ``(dim,)``, float32.
        stored_patterns: ``(n, dim)``, float32, unit rows, on the device of ``state``.
    """
    if stored_patterns.shape[0] == 0:
        empty = torch.empty(0, dtype=state.dtype, device=state.device)
        return SettleResult(state.clone(), empty, 0, True)
    current = state
    attention = torch.softmax(beta * (stored_patterns @ current), dim=0)
    steps = 0
    converged = False
    while steps < update_steps_max:
        proposal = attention @ stored_patterns
        proposal = proposal / proposal.norm().clamp_min(1e-12)
        steps += 1
        moved = float((proposal - current).norm())
        current = proposal
        attention = torch.softmax(beta * (stored_patterns @ current), dim=0)
        if moved < update_steps_eps:
            converged = True
            break
    return SettleResult(current, attention, steps, converged)


def hebbian_update_(
    matrix: torch.Tensor, pre_codes: torch.Tensor, post_codes: torch.Tensor, weight: float = 1.0
) -> None:
    """Add ``weight`` times the outer product of binary codes to ``matrix``, in place.

    This is the dense reference of the association matrix: ``code_dim ** 2`` cells,
    one gigabyte of float32 at ``code_dim`` 16384. The memory itself keeps the same
    matrix in factored form; tests and benchmarks compare the two.

    Shape:
        matrix: ``(code_dim, code_dim)``, float32, modified in place.
        pre_codes, post_codes: ``(n, k)``, int64 unit indices; row ``i`` of
        ``pre_codes`` is linked to row ``i`` of ``post_codes``.
    """
    code_dim = matrix.shape[0]
    for pre, post in zip(pre_codes, post_codes):
        pre_dense = torch.zeros(code_dim, dtype=matrix.dtype, device=matrix.device)
        post_dense = torch.zeros(code_dim, dtype=matrix.dtype, device=matrix.device)
        pre_dense[pre] = 1.0
        post_dense[post] = 1.0
        matrix.add_(torch.outer(pre_dense, post_dense), alpha=weight)
