"""Compiled first-stage scan of the cue rows over an 8-bit copy, for recall on the CPU.

Stage 1 of recall scores the query against every cue row, and on the CPU that
scan is bound by the bytes it reads. :class:`QuantizedRows` keeps a second copy
of the half-precision cue rows as int8 values with one float32 scale per row,
half the bytes, and scans it in a loop compiled by Numba with the rows split
among the threads. Each score comes with a bound on its distance from the
float32 score of the stored row, so that recall can rescore exactly every row
that may rank among its candidates (see ``Partition._rescore_near_top``).

``AVAILABLE`` is false where Numba is not installed; recall then scans the
half-precision rows with torch.
"""

from __future__ import annotations

import numpy as np

from nuonuo_core import _winners

numba = _winners.numba
AVAILABLE = _winners.AVAILABLE

# Below this many rows one thread scans them all; a guess, not measured, that
# starting the other threads costs more than it saves there.
_PARALLEL_ROWS = 4_096


def _scan_rows(codes: np.ndarray, scales: np.ndarray, query: np.ndarray, out: np.ndarray, first: int, last: int) -> None:
    dim = codes.shape[1]
    for row in range(first, last):
        total = np.float32(0.0)
        for j in range(dim):
            total += query[j] * np.float32(codes[row, j])
        out[row] = total * scales[row]


def _scan_parts(codes: np.ndarray, scales: np.ndarray, query: np.ndarray, out: np.ndarray, count: int, parts: int) -> None:
    for part in numba.prange(parts):
        _scan_rows(codes, scales, query, out, part * count // parts, (part + 1) * count // parts)


if AVAILABLE:
    # Fast math lets the compiler reorder the sum into vector lanes; the error
    # bound of QuantizedRows.scan allows for any order of the additions.
    _scan_rows = numba.njit(cache=True, nogil=True, fastmath=True, boundscheck=False)(_scan_rows)
    _scan_parts = numba.njit(cache=True, nogil=True, parallel=True)(_scan_parts)


class QuantizedRows:
    """An int8 copy of float rows with a scale per row, grown and compacted with them.

    Row ``i`` is stored as ``scales[i] * codes[i]``, with ``scales[i]`` its
    largest magnitude divided by 127, so each element is off by at most half a
    scale step. The largest scale and the largest Euclidean distance of a row
    from its copy are kept to bound the error of a scan.

    Args:
        dim: Elements per row.
        capacity: Rows to allocate at first.
    """

    def __init__(self, dim: int, capacity: int) -> None:
        self.codes = np.zeros((capacity, dim), dtype=np.int8)
        self.scales = np.zeros(capacity, dtype=np.float32)
        self.residuals = np.zeros(capacity, dtype=np.float32)
        self.max_scale = 0.0
        self.max_residual = 0.0
        # Scores of the last scan. Reused, because a fresh array per scan faults
        # its pages in again: a quarter of a scan of 20K rows in one timing.
        self._scores = np.zeros(capacity, dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scales.nbytes + self.residuals.nbytes

    def grow(self, capacity: int, count: int) -> None:
        """Reallocate for ``capacity`` rows, keeping the first ``count``."""
        codes = np.zeros((capacity, self.codes.shape[1]), dtype=np.int8)
        codes[:count] = self.codes[:count]
        scales = np.zeros(capacity, dtype=np.float32)
        scales[:count] = self.scales[:count]
        residuals = np.zeros(capacity, dtype=np.float32)
        residuals[:count] = self.residuals[:count]
        self.codes, self.scales, self.residuals = codes, scales, residuals
        self._scores = np.zeros(capacity, dtype=np.float32)

    def write(self, start: int, rows: np.ndarray) -> None:
        """Store float ``rows`` from row ``start`` on.

        Shape:
            rows: ``(count, dim)``, finite.
        """
        rows = rows.astype(np.float64)
        peak = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(rows.shape[0])
        scales = peak / 127.0
        safe = np.where(scales > 0, scales, 1.0)
        codes = np.clip(np.rint(rows / safe[:, None]), -127, 127)
        # The scale is rounded to float32 first, so that the residual is taken
        # from the row the scan multiplies out.
        scales32 = scales.astype(np.float32)
        residuals = np.linalg.norm(rows - scales32.astype(np.float64)[:, None] * codes, axis=1)
        end = start + rows.shape[0]
        self.codes[start:end] = codes.astype(np.int8)
        self.scales[start:end] = scales32
        self.residuals[start:end] = residuals
        if rows.shape[0]:
            self.max_scale = max(self.max_scale, float(scales32.max()))
            self.max_residual = max(self.max_residual, float(residuals.max()))

    def clear(self, rows: list[int]) -> None:
        """Zero the given rows, as the rows of a deleted memory are zeroed."""
        self.codes[rows] = 0
        self.scales[rows] = 0.0
        self.residuals[rows] = 0.0

    def compact(self, keep: np.ndarray, count: int) -> None:
        """Move rows ``keep`` (ascending) to the front and zero the rest of the first ``count``."""
        live = keep.shape[0]
        self.codes[:live] = self.codes[keep]
        self.scales[:live] = self.scales[keep]
        self.residuals[:live] = self.residuals[keep]
        self.codes[live:count] = 0
        self.scales[live:count] = 0.0
        self.residuals[live:count] = 0.0
        self.max_scale = float(self.scales[:live].max()) if live else 0.0
        self.max_residual = float(self.residuals[:live].max()) if live else 0.0

    def scan(self, query: np.ndarray, count: int, threads: int) -> tuple[np.ndarray, float]:
        """Return the dot product of ``query`` with each of the first ``count`` rows, and an error bound.

        Every score is within the returned bound of the float32 dot product of
        the query with the row as it was written. The scores are a view of a
        buffer that the next scan overwrites.

        Shape:
            query: ``(dim,)``, float32, finite.
        """
        out = self._scores[:count]
        query = np.ascontiguousarray(query, dtype=np.float32)
        parts = min(threads, numba.get_num_threads(), max(1, count // _PARALLEL_ROWS))
        if parts <= 1:
            _scan_rows(self.codes, self.scales, query, out, 0, count)
        else:
            # Numba's fallback threading layer, workqueue, is not thread-safe.
            with _winners.PARALLEL_LOCK:
                _scan_parts(self.codes, self.scales, query, out, count, parts)
        return out, self.error_bound(query)

    def error_bound(self, query: np.ndarray) -> float:
        """Bound the distance of a scanned score from the float32 one for ``query``.

        Rounding a row moves its dot product by at most half a scale step times
        the query's L1 norm. By Cauchy-Schwarz it also moves it by at most the
        row's residual norm times the query's L2 norm, so the smaller bound holds.
        The float32 sums of the scan and of the exact score each add at most
        ``dim * 2**-24`` times the sum of the magnitudes of their terms.
        """
        query64 = query.astype(np.float64)
        l1 = float(np.abs(query64).sum())
        l2 = float(np.sqrt(query64 @ query64))
        rounding = min(0.5 * self.max_scale * l1, self.max_residual * l2)
        magnitudes = l1 * 127.0 * self.max_scale
        summing = 2.0 * self.codes.shape[1] * 2.0**-24 * magnitudes
        return rounding + summing + 1e-6
