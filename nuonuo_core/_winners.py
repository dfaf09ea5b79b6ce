"""Compiled selection of the winning units, for pattern separation on the CPU.

:func:`select_winners` picks the ``k`` largest units of every row of a
block-major activity array in loops compiled by Numba, the rows split among the
CPU's threads. The tensor path of :func:`nuonuo_core.functional.winner_take_all`
needs about a dozen operations per batch for the same choice, each one a pass
over memory. This one reads each row once, and then only the tiles that can hold
a winner. Both give the same units.

Importing this module imports Numba; ``AVAILABLE`` is false where Numba is not
installed, and the tensor path runs instead.
"""

from __future__ import annotations

import threading

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

AVAILABLE = numba is not None

TILE = 32
"""Units per tile: a row is cut into tiles of 32 consecutive units."""


def _tile_maxima(values: np.ndarray, out: np.ndarray) -> None:
    """Write the maximum of every tile of ``values`` into ``out``."""
    for t in range(out.shape[0]):
        best = values[t * TILE]
        for j in range(1, TILE):
            best = max(best, values[t * TILE + j])
        out[t] = best


def _tile_threshold(tile_max: np.ndarray, k: int) -> float:
    """Return a value that at least ``k`` tile maxima, and usually at most ``k + 8``, reach.

    A bisection between the smallest and the largest maximum that counts without
    branches. On 512 maxima it ran several times faster than a quickselect (an
    estimate from timing both once on one machine).
    """
    low = tile_max.min()
    high = tile_max.max()
    for _ in range(32):
        middle = np.float32(0.5) * (low + high)
        reached = 0
        for i in range(tile_max.shape[0]):
            reached += tile_max[i] >= middle
        if reached < k:
            high = middle
        else:
            low = middle
            if reached <= k + 8:
                break
    return low


def _kth_largest(values: np.ndarray, count: int, k: int) -> float:
    """Return the ``k``-th largest of ``values[:count]``, reordering them in place."""
    target = count - k  # its position in ascending order
    low, high = 0, count - 1
    while low < high:
        pivot = values[(low + high) // 2]
        i, j = low, high
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if target <= j:
            high = j
        elif target >= i:
            low = i
        else:
            break
    return values[target]


def _select_rows(activity: np.ndarray, k: int, out: np.ndarray, first: int, last: int) -> None:
    blocks, _, block_size = activity.shape
    tiles_per_block = block_size // TILE
    tiles = blocks * tiles_per_block
    tile_max = np.empty(tiles, dtype=np.float32)
    candidate_values = np.empty(tiles * TILE, dtype=np.float32)
    candidate_units = np.empty(tiles * TILE, dtype=np.int64)
    scratch = np.empty(tiles * TILE, dtype=np.float32)
    for row in range(first, last):
        for block in range(blocks):
            _tile_maxima(activity[block, row], tile_max[block * tiles_per_block : (block + 1) * tiles_per_block])
        # At least k tiles reach the threshold, so at least k units do, and so
        # does every winner. Gather the units that reach it, in unit order.
        threshold = _tile_threshold(tile_max, k)
        candidate_count = 0
        for tile in range(tiles):
            if tile_max[tile] < threshold:
                continue
            block = tile // tiles_per_block
            values = activity[block, row]
            start = (tile - block * tiles_per_block) * TILE
            for unit in range(start, start + TILE):
                if values[unit] >= threshold:
                    candidate_values[candidate_count] = values[unit]
                    candidate_units[candidate_count] = block * block_size + unit
                    candidate_count += 1
        # The winners are the candidates above the k-th largest candidate value, and
        # as many units equal to it as make k, taken in unit order.
        scratch[:candidate_count] = candidate_values[:candidate_count]
        cut = _kth_largest(scratch, candidate_count, k)
        ties = k
        for i in range(candidate_count):
            ties -= candidate_values[i] > cut
        chosen = out[row]
        filled = 0
        for i in range(candidate_count):
            value = candidate_values[i]
            if value > cut or (value == cut and ties > 0):
                if value == cut:
                    ties -= 1
                chosen[filled] = candidate_units[i]
                filled += 1


def _select_winners(activity: np.ndarray, k: int, out: np.ndarray, parts: int) -> None:
    n = activity.shape[1]
    for part in numba.prange(parts):
        _select_rows(activity, k, out, part * n // parts, (part + 1) * n // parts)


if AVAILABLE:
    # Fast math lets the compiler vectorise the maxima. It assumes no NaN, which
    # select_winners's caller guarantees.
    _tile_maxima = numba.njit(cache=True, nogil=True, fastmath=True)(_tile_maxima)
    _tile_threshold = numba.njit(cache=True, nogil=True)(_tile_threshold)
    _kth_largest = numba.njit(cache=True, nogil=True)(_kth_largest)
    _select_rows = numba.njit(cache=True, nogil=True, boundscheck=False)(_select_rows)
    _select_winners = numba.njit(cache=True, nogil=True, parallel=True)(_select_winners)


def select_winners(activity: np.ndarray, k: int, threads: int) -> np.ndarray:
    """Return the ``k`` largest units of every row, in ascending order.

    Args:
        activity: Shape ``(blocks, n, block_size)``, float32, C-contiguous, all
            finite; unit ``u`` of row ``i`` is
            ``activity[u // block_size, i, u % block_size]``. ``block_size`` is
            a multiple of :data:`TILE`, and a row has more than ``k`` tiles.
        k: Number of winners per row.
        threads: Number of threads to split the rows among.

    Returns:
        Shape ``(n, k)``, int64.
    """
    n = activity.shape[1]
    out = np.empty((n, k), dtype=np.int64)
    parts = min(n, threads, numba.get_num_threads())
    if parts <= 1:
        _select_rows(activity, k, out, 0, n)
        return out
    # Numba's fallback threading layer, workqueue, is not thread-safe (its
    # threading-layer documentation), so one batch runs at a time.
    with PARALLEL_LOCK:
        _select_winners(activity, k, out, parts)
    return out


PARALLEL_LOCK = threading.Lock()
"""Held while a parallel compiled function runs; every module that runs one takes it."""
