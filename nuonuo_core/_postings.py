"""Compiled counting sort for the inverted index of the association.

:func:`group_by_unit` lists the slots of a segment unit by unit in two passes
over the codes. The sort it replaces (``argsort`` and a gather) made three
arrays of the entries' size, which at a million memories (50 million entries)
took most of the time of storing their codes.

Importing this module imports Numba; ``AVAILABLE`` is false where Numba is not
installed, and the association sorts with NumPy instead.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

AVAILABLE = numba is not None


def _count(units: np.ndarray, pointers: np.ndarray) -> None:
    for row in range(units.shape[0]):
        for column in range(units.shape[1]):
            pointers[units[row, column] + 1] += 1
    for unit in range(1, pointers.shape[0]):
        pointers[unit] += pointers[unit - 1]


def _place(units: np.ndarray, slots: np.ndarray, pointers: np.ndarray, out: np.ndarray) -> None:
    next_free = pointers[:-1].copy()
    for row in range(units.shape[0]):
        slot = slots[row]
        for column in range(units.shape[1]):
            unit = units[row, column]
            out[next_free[unit]] = slot
            next_free[unit] += 1


if AVAILABLE:
    _count = numba.njit(cache=True, nogil=True, boundscheck=False)(_count)
    _place = numba.njit(cache=True, nogil=True, boundscheck=False)(_place)


def group_by_unit(units: np.ndarray, slots: np.ndarray, code_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the slots listed unit by unit, and where each unit's list starts.

    Row ``i`` of ``units`` lists the units of slot ``slots[i]``. Within a unit
    the slots keep the order of the rows (a stable sort).

    Args:
        units: Units of each row, each below ``code_dim``. Shape ``(n, w)``.
        slots: Slot of each row. Shape ``(n,)``, int32.
        code_dim: Number of units.

    Returns:
        ``(slots, pointers)``: shape ``(n * w,)`` int32, and ``(code_dim + 1,)``
        int64, where the slots of unit ``u`` are ``slots[pointers[u]:pointers[u + 1]]``.
    """
    pointers = np.zeros(code_dim + 1, dtype=np.int64)
    _count(units, pointers)
    grouped = np.empty(units.size, dtype=np.int32)
    _place(units, slots, pointers, grouped)
    return grouped, pointers
