"""The Hebbian association matrix, kept in factored form.

Every link between memories ``a`` and ``b`` with weight ``w`` adds
``w * outer(c_a, c_b) + w * outer(c_b, c_a)`` to the association matrix ``W``,
where ``c_a`` is the binary sparse code of ``a`` (``k`` ones out of ``code_dim``).
Summed over all links this is ``W = C^T L C``: ``C`` holds one code per memory
(``n x code_dim``, ``k`` ones per row) and ``L`` is the symmetric ``n x n`` matrix
of link weights. Storing ``C`` as ``n x k`` indices and ``L`` as adjacency lists
costs ``O(n k + links)`` memory instead of ``code_dim ** 2``, and applying ``W`` to
a code costs time proportional to the memories it touches, not to ``code_dim ** 2``.

Multiplying a code-space state ``x`` by ``W`` runs in three sparse steps:

1. overlaps ``o = C x``: how much of each memory's code is active, read from an
   inverted index from units to memories;
2. spreading ``s = L o``: the activity of each memory passes along its links;
3. back to code space ``y = C^T s``.

:meth:`Association.apply` computes exactly that. Recall uses
:meth:`Association.spread`, which applies ``W`` to the code of each active memory
separately, drops the crosstalk between codes, stops after step 2 (``s`` already
says which memories are activated) and records through which memory each one
was reached.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from nuonuo_core import _postings

# Links a memory spreads activation along, strongest first; the rest carry a
# share too small to change a ranking and would make every hop slow.
MAX_NEIGHBOURS = 32
# Codes set one by one are collected in a dictionary until this many become a segment.
_MIN_SEGMENT = 256
# Values of Association._home that are not segment ids.
_PENDING = -1
_NOWHERE = -2


@dataclass(frozen=True)
class SpreadStep:
    """Memories reached by one hop of spreading activation."""

    slots: np.ndarray
    """Slots of the reached memories. Shape ``(m,)``, int64."""

    activation: np.ndarray
    """Activation of each reached memory. Shape ``(m,)``, float64."""

    predecessor: np.ndarray
    """Slot of the memory through which each one was reached. Shape ``(m,)``, int64."""


# The best_from entry of a memory that nothing has reached yet.
_NOTHING = (0.0, -1)


def _strongest(weights: dict[int, float]) -> dict[int, float]:
    """Return the ``MAX_NEIGHBOURS`` largest of ``weights``."""
    if len(weights) <= MAX_NEIGHBOURS:
        return weights
    strongest = sorted(weights, key=weights.__getitem__, reverse=True)[:MAX_NEIGHBOURS]
    return {n: weights[n] for n in strongest}


def _unit_dtype(code_dim: int) -> type[np.integer]:
    """Return the smallest integer type for unit indices below ``code_dim``."""
    return np.uint16 if code_dim <= 65536 else np.int32


class _Postings:
    """One segment of the inverted index: for each unit, the slots whose code has it."""

    __slots__ = ("pointers", "slots", "segment_id")

    def __init__(self, units: np.ndarray, slots: np.ndarray, code_dim: int, segment_id: int) -> None:
        """Index the units of each slot: row ``i`` of ``units`` (shape ``(n, w)``)
        lists the units of ``slots[i]``."""
        units = units.astype(_unit_dtype(code_dim), copy=False)
        # Four bytes a posting: slots beyond 2**31 do not occur in one namespace.
        slots = slots.astype(np.int32, copy=False)
        # A stable sort by unit, so slots stay in insertion order within each unit.
        if _postings.AVAILABLE:
            self.slots, self.pointers = _postings.group_by_unit(units, slots, code_dim)
        else:
            flat = units.reshape(-1)
            self.slots = np.repeat(slots, units.shape[1])[np.argsort(flat, kind="stable")]
            self.pointers = np.zeros(code_dim + 1, dtype=np.int64)
            np.cumsum(np.bincount(flat, minlength=code_dim), out=self.pointers[1:])
        self.segment_id = segment_id

    def __len__(self) -> int:
        return self.slots.shape[0]

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """Return every (unit, slot) pair of the segment."""
        code_dim = self.pointers.shape[0] - 1
        units = np.repeat(np.arange(code_dim, dtype=_unit_dtype(code_dim)), np.diff(self.pointers))
        return units, self.slots

    def lookup(self, units: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the slots listed under ``units`` and the value of the unit that listed each."""
        starts = self.pointers[units]
        lengths = self.pointers[units + 1] - starts
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        # Positions of all posting lists at once: start of each list plus 0..length-1.
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        positions = np.arange(total, dtype=np.int64) + offsets
        return self.slots[positions], np.repeat(values, lengths)


class Association:
    """Codes and links of the memories of one namespace, addressed by slot.

    Slots are dense integers handed out by the caller; a dead slot keeps its code
    until it is overwritten and is ignored meanwhile. Links are symmetric and named
    by kind; the effective weight of a link is the sum over kinds of the stored
    weight times the kind's weight in ``kind_weights``.

    The inverted index from units to slots is a list of immutable segments, each
    a sorted posting array, plus a small dictionary of codes set since the last
    segment was written. Each slot's current code lives in exactly one of them
    (its home); entries elsewhere are stale and skipped. Segments of similar size
    are merged, so adding ``n`` codes costs ``O(n k log n)`` in total, one by one
    or in batches.

    This class does no locking; its owner serialises access.
    """

    def __init__(self, code_dim: int, k: int, kind_weights: dict[str, float]) -> None:
        self.code_dim = code_dim
        self.k = k
        self.kind_weights = dict(kind_weights)
        # Unit indices fit two bytes up to code_dim 65536.
        self._code_dtype = _unit_dtype(code_dim)
        self._codes = np.zeros((0, k), dtype=self._code_dtype)
        self._alive = np.zeros(0, dtype=bool)
        # slot -> {neighbour slot -> {kind -> weight}}
        # slot -> {neighbour slot -> ((kind, weight), ...)}; the tuples are shared
        # between links with the same kinds and weights, which most links have.
        self._links: list[dict[int, tuple[tuple[str, float], ...]]] = []
        self._interned: dict[tuple[tuple[str, float], ...], tuple[tuple[str, float], ...]] = {}
        self._segments: list[_Postings] = []
        self._next_segment_id = 0
        # Segment id that holds each slot's current code; _PENDING while it is in
        # the dictionary below.
        self._home = np.zeros(0, dtype=np.int32)
        self._pending_postings: dict[int, list[int]] = {}
        self._pending_slots: set[int] = set()
        self.derived: dict[str, Callable[[int], dict[int, float]]] = {}
        """Link kinds computed on demand instead of stored: kind -> function from a
        slot to its neighbours and their weights. Their weights in ``kind_weights``
        apply as for stored kinds."""
        self.volatile: set[str] = set()
        """Derived kinds whose neighbours depend on the query being recalled (see
        :meth:`query_context`). While a context is active, they are recomputed on
        every call instead of cached."""
        self._context_active = False
        self._context_affects: Callable[[int], bool] | None = None
        # Results of neighbours() and neighbours_by_kind(), valid until anything that
        # links memories changes. Inside a query context, volatile kinds bypass them.
        self._neighbour_cache: dict[int, dict[int, float]] = {}
        self._kind_cache: dict[int, dict[str, dict[int, float]]] = {}

    # ------------------------------------------------------------------ codes

    @property
    def capacity(self) -> int:
        """Number of slots allocated so far."""
        return self._codes.shape[0]

    def set_codes(self, slots: np.ndarray, codes: np.ndarray | torch.Tensor) -> None:
        """Store codes for slots, growing the arrays when needed; marks the slots alive.

        Shape:
            slots: ``(n,)``, int, without repeats.
            codes: ``(n, k)``, unit indices of each code.
        """
        self.forget_cached_links()
        if isinstance(codes, torch.Tensor):
            codes = codes.to("cpu").numpy()
        slots = np.asarray(slots, dtype=np.int64)
        if slots.size == 0:
            return
        # The compiled index build does not check bounds, so a unit outside the
        # code would write outside its arrays.
        if codes.shape != (slots.shape[0], self.k) or codes.min() < 0 or codes.max() >= self.code_dim:
            raise ValueError(
                f"invalid codes: expected shape ({slots.shape[0]}, {self.k}) with units from 0 to "
                f"{self.code_dim - 1}, got shape {codes.shape} with units from {codes.min()} to {codes.max()}"
            )
        self._grow(int(slots.max()) + 1)
        for slot in slots.tolist():
            if slot in self._pending_slots:
                # Set again before reaching a segment: drop it from its old units.
                for unit in self._codes[slot].tolist():
                    self._pending_postings[unit].remove(slot)
                self._pending_slots.discard(slot)
        self._codes[slots] = codes.astype(self._code_dtype)
        self._alive[slots] = True

        if slots.shape[0] >= _MIN_SEGMENT:
            # A large batch becomes a segment of its own right away.
            self._add_segment(slots)
            return
        self._home[slots] = _PENDING
        for slot, code in zip(slots.tolist(), self._codes[slots].tolist()):
            self._pending_slots.add(slot)
            for unit in code:
                self._pending_postings.setdefault(unit, []).append(slot)
        if len(self._pending_slots) >= _MIN_SEGMENT:
            self._flush_pending()

    def code(self, slot: int) -> np.ndarray:
        """Return a copy of the code of ``slot``. Shape ``(k,)``, uint16 (int32 above code_dim 65536)."""
        return self._codes[slot].copy()

    def kill(self, slot: int) -> None:
        """Mark ``slot`` dead and remove all its links."""
        self.forget_cached_links()
        for neighbour in list(self._links[slot]):
            self._links[neighbour].pop(slot, None)
        self._links[slot] = {}
        self._alive[slot] = False

    def _grow(self, size: int) -> None:
        if size <= self.capacity:
            return
        new_capacity = max(size, 2 * self.capacity, 64)
        old = self.capacity
        self._codes = np.concatenate((self._codes, np.zeros((new_capacity - old, self.k), self._code_dtype)))
        self._alive = np.concatenate((self._alive, np.zeros(new_capacity - old, dtype=bool)))
        self._home = np.concatenate((self._home, np.full(new_capacity - old, _NOWHERE, np.int32)))
        self._links.extend({} for _ in range(new_capacity - old))

    def _flush_pending(self) -> None:
        if not self._pending_slots:
            return
        slots = np.fromiter(self._pending_slots, dtype=np.int64)
        self._pending_postings = {}
        self._pending_slots = set()
        self._add_segment(slots)

    def _add_segment(self, slots: np.ndarray) -> None:
        """Write the current codes of ``slots`` as a new segment, then merge segments."""
        if slots[-1] - slots[0] + 1 == slots.shape[0] and bool((np.diff(slots) == 1).all()):
            codes = self._codes[slots[0] : slots[-1] + 1]  # consecutive slots: no copy
        else:
            codes = self._codes[slots]
        segment = self._new_segment(slots, codes)
        self._home[slots] = segment.segment_id
        self._segments.append(segment)
        # Merge while the newest segment is at least half the size of the one before.
        while len(self._segments) >= 2 and 2 * len(self._segments[-1]) >= len(self._segments[-2]):
            newer = self._segments.pop()
            older = self._segments.pop()
            units_a, slots_a = older.entries()
            units_b, slots_b = newer.entries()
            # An entry stays while its slot is alive and its code still lives in that segment.
            keep_a = self._alive[slots_a] & (self._home[slots_a] == older.segment_id)
            keep_b = self._alive[slots_b] & (self._home[slots_b] == newer.segment_id)
            slots_all = np.concatenate((slots_a[keep_a], slots_b[keep_b]))
            merged = self._new_segment(slots_all, np.concatenate((units_a[keep_a], units_b[keep_b]))[:, None])
            self._home[slots_all] = merged.segment_id
            self._segments.append(merged)

    def _new_segment(self, slots: np.ndarray, units: np.ndarray) -> _Postings:
        segment = _Postings(units, slots, self.code_dim, self._next_segment_id)
        self._next_segment_id += 1
        return segment

    def rebuild_index(self) -> None:
        """Fold every segment and pending code into one segment."""
        self._pending_postings = {}
        self._pending_slots = set()
        self._segments = []
        live = np.nonzero(self._alive)[0]
        if live.size:
            self._add_segment(live)

    # ------------------------------------------------------------------ links

    def link(self, a: int, b: int, kind: str, weight: float) -> None:
        """Add a symmetric link of ``kind`` between slots ``a`` and ``b``.

        Weights of the same kind between the same pair add up, as repeated Hebbian
        updates do. A memory is never linked to itself.
        """
        self.link_many(((a, b),), kind, weight)

    def link_many(self, pairs: Iterable[tuple[int, int]], kind: str, weight: float) -> None:
        """Add a link of ``kind`` and ``weight`` between each pair of slots, as
        :meth:`link` does for one pair, with the per-call work done once."""
        self.forget_cached_links()
        only = ((kind, 0.0 + weight),)
        only = self._interned.setdefault(only, only)
        all_links = self._links
        for a, b in pairs:
            if a == b:
                continue
            links_a = all_links[a]
            links_b = all_links[b]
            if b not in links_a and a not in links_b:
                # The common case, a first link between the two: one kind, nothing to add up.
                links_a[b] = only
                links_b[a] = only
                continue
            for links, target in ((links_a, b), (links_b, a)):
                kinds = dict(links.get(target, ()))
                kinds[kind] = kinds.get(kind, 0.0) + weight
                links[target] = self._intern(kinds)

    def _intern(self, kinds: dict[str, float]) -> tuple[tuple[str, float], ...]:
        key = tuple(sorted(kinds.items()))
        return self._interned.setdefault(key, key)

    def unlink(self, a: int, b: int, kind: str | None = None) -> None:
        """Remove the link of ``kind`` (all kinds when ``None``) between ``a`` and ``b``."""
        self.forget_cached_links()
        for source, target in ((a, b), (b, a)):
            stored = self._links[source].get(target)
            if stored is None:
                continue
            kinds = {} if kind is None else {k: w for k, w in stored if k != kind}
            if kinds:
                self._links[source][target] = self._intern(kinds)
            else:
                del self._links[source][target]

    def links_of(self, slot: int) -> dict[int, dict[str, float]]:
        """Return a copy of the stored links of ``slot``: neighbour -> kind -> weight."""
        return {n: dict(kinds) for n, kinds in self._links[slot].items()}

    def link_count(self) -> int:
        """Number of stored links, each pair counted once per kind."""
        return sum(len(kinds) for links in self._links for kinds in links.values()) // 2

    def forget_cached_links(self) -> None:
        """Drop cached neighbours; call after anything a derived kind reads changes."""
        self._neighbour_cache.clear()
        self._kind_cache.clear()

    @contextmanager
    def query_context(self, affected: Callable[[int], bool] | None = None) -> Iterator[None]:
        """Recompute the derived kinds in :attr:`volatile` on every call while inside,
        because what they return depends on the query being recalled.

        Args:
            affected: Which slots' volatile links the query can change; the
                others keep their cached links. ``None``: every slot.
        """
        self._context_active = True
        self._context_affects = affected
        try:
            yield
        finally:
            self._context_active = False
            self._context_affects = None

    def _context_applies(self) -> bool:
        """Return whether a query context is active and some volatile kind is derived."""
        return self._context_active and any(kind in self.derived for kind in self.volatile)

    def _in_context(self, slot: int) -> bool:
        """Return whether the volatile links of ``slot`` must be derived for the current query."""
        if not self._context_applies():
            return False
        return self._context_affects is None or self._context_affects(slot)

    def neighbours_by_kind(self, slot: int) -> dict[str, dict[int, float]]:
        """Return the effective link weights from ``slot``, kept apart by kind.

        Each kind's weights are its stored (or derived) weights times its weight
        in ``kind_weights``. Kinds with no positive link are left out, and each
        kind keeps only its ``MAX_NEIGHBOURS`` strongest links. Cached like
        :meth:`neighbours`, except volatile kinds inside a query context;
        callers must not modify the result.
        """
        return self._links_by_kind(slot, self._context_applies())

    def _links_by_kind(self, slot: int, context: bool) -> dict[str, dict[int, float]]:
        """Return :meth:`neighbours_by_kind` of ``slot``, given :meth:`_context_applies`."""
        in_context = context and (self._context_affects is None or self._context_affects(slot))
        cached = self._kind_cache.get(slot)
        if cached is not None and not in_context:
            return cached
        result: dict[str, dict[int, float]] = {}
        weights = self.kind_weights
        if cached is not None:
            result = {kind: links for kind, links in cached.items() if kind not in self.volatile}
        else:
            for neighbour, kinds in self._links[slot].items():
                for kind, weight in kinds:
                    total = weight * weights.get(kind, 0.0)
                    if total > 0.0:
                        result.setdefault(kind, {})[neighbour] = total
            for kind in self.derived:
                # The weight is checked before the call, because a call per kind and slot
                # was a large part of a cold hop in a profile.
                if weights.get(kind, 0.0) > 0.0 and not (in_context and kind in self.volatile):
                    self._add_derived(result, kind, slot)
        if in_context:
            for kind in self.volatile:
                if kind in self.derived:
                    self._add_derived(result, kind, slot)
        for kind, links in result.items():
            if len(links) > MAX_NEIGHBOURS:
                result[kind] = _strongest(links)
        if not in_context:
            self._kind_cache[slot] = result
        return result

    def _add_derived(self, into: dict[str, dict[int, float]], kind: str, slot: int) -> None:
        factor = self.kind_weights.get(kind, 0.0)
        if factor <= 0.0:
            return
        found: dict[int, float] = {}
        for neighbour, weight in self.derived[kind](slot).items():
            if neighbour != slot and self._alive[neighbour] and weight > 0.0:
                found[neighbour] = found.get(neighbour, 0.0) + factor * weight
        if found:
            into[kind] = found

    def neighbours(self, slot: int) -> dict[int, float]:
        """Return the effective link weight from ``slot`` to each linked slot.

        Stored and derived kinds are summed, each times its weight in
        ``kind_weights``; only the ``MAX_NEIGHBOURS`` strongest are kept. The
        result is cached until links, codes or derived inputs change (volatile
        kinds are recomputed while a query context is active); callers must not
        modify it.
        """
        volatile = self._in_context(slot)
        cached = None if volatile else self._neighbour_cache.get(slot)
        if cached is not None:
            return cached
        weights: dict[int, float] = {}
        for neighbour, kinds in self._links[slot].items():
            total = sum(w * self.kind_weights.get(kind, 0.0) for kind, w in kinds)
            if total > 0.0:
                weights[neighbour] = total
        for kind, derive in self.derived.items():
            factor = self.kind_weights.get(kind, 0.0)
            if factor <= 0.0:
                continue
            for neighbour, weight in derive(slot).items():
                if neighbour != slot and self._alive[neighbour]:
                    weights[neighbour] = weights.get(neighbour, 0.0) + factor * weight
        weights = _strongest(weights)
        if not volatile:
            self._neighbour_cache[slot] = weights
        return weights

    # ------------------------------------------------------------------ products

    def overlaps(self, units: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Compute ``o = C x`` for a sparse code-space state ``x``.

        Args:
            units: Active units of ``x``. Shape ``(m,)``, int.
            values: Activity of each unit; ones when ``None``. Shape ``(m,)``.

        Returns:
            ``(slots, overlap)``: the live slots whose code shares a unit with
            ``x`` and the summed activity of the shared units. int64 and float64.
        """
        units = np.asarray(units, dtype=np.int64)
        if values is None:
            values = np.ones(units.shape[0], dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        found_slots = []
        found_values = []
        for segment in self._segments:
            seg_slots, seg_values = segment.lookup(units, values)
            # Skip entries of slots whose current code lives elsewhere.
            keep = self._home[seg_slots] == segment.segment_id
            found_slots.append(seg_slots[keep])
            found_values.append(seg_values[keep])

        # Codes set since the last segment was written.
        if self._pending_postings:
            extra_slots: list[int] = []
            extra_values: list[float] = []
            for unit, value in zip(units.tolist(), values.tolist()):
                posting = self._pending_postings.get(unit)
                if posting:
                    extra_slots.extend(posting)
                    extra_values.extend([value] * len(posting))
            found_slots.append(np.asarray(extra_slots, dtype=np.int64))
            found_values.append(np.asarray(extra_values, dtype=np.float64))

        if not found_slots:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        hit_slots = np.concatenate(found_slots)
        hit_values = np.concatenate(found_values)
        if hit_slots.size == 0:
            return hit_slots, hit_values
        slots, inverse = np.unique(hit_slots, return_inverse=True)
        overlap = np.bincount(inverse, weights=hit_values)
        alive = self._alive[slots]
        return slots[alive], overlap[alive]

    def spread(
        self,
        activation: dict[int, float],
        blocked: dict[int, Container[int]] | None = None,
        gate: np.ndarray | None = None,
        by_kind: bool = False,
    ) -> SpreadStep:
        """Run one hop of spreading activation from memories with given activation.

        Each active memory ``m`` applies the association to its own code:
        ``c_m W = sum_n L[m, n] (c_m . c_n) c_n``, whose memory-level factor is its
        row of ``L`` scaled by ``c_m . c_m = k``. The small overlaps between
        different memories' codes (crosstalk, about ``k^2 / code_dim`` units for
        unrelated memories) are dropped, which cleans the state up to whole
        memories after every hop; :meth:`apply` keeps them. Each memory's links
        are divided by its total link weight, so a memory with many links does not
        drown the others, and the results of all active memories are summed.

        Args:
            activation: Active slot -> activation.
            blocked: Slot -> slots it may not pass activity to, such as the
                memories on the path that led to it. A blocked link is left out
                of the normalisation too, so a memory on a chain passes all of
                its activity forward.
            gate: Per-slot factor on the links into each slot (the query's
                steering); the shares are normalised after it.
            by_kind: Split each memory's activity among the kinds of its links
                in proportion to their kind weights first, then within each
                kind, so that one kind's larger raw weights do not take it all.

        Returns:
            The reached memories; ``predecessor`` is the active memory that sent
            each one the most activity.
        """
        blocked = blocked or {}
        reached: dict[int, float] = {}
        best_from: dict[int, tuple[float, int]] = {}
        context = self._context_applies()
        # The gate is read as Python floats, because arithmetic on NumPy scalars is slower.
        gate_of = gate.item if gate is not None else None
        alive = self._alive
        kind_weights = self.kind_weights
        links_by_kind = self._links_by_kind
        for slot, amount in activation.items():
            if amount <= 0.0 or not alive[slot]:
                continue
            excluded = blocked.get(slot, ())
            if by_kind:
                # Each kind takes a share in proportion to its kind weight. Its
                # links split that share by link weight times the gate. The
                # links of neighbours_by_kind lead to live memories only.
                kinds = links_by_kind(slot, context)
                # Each pool is one kind: its share of the activity per unit of gated
                # weight, and its gated links.
                pools = []
                kind_total = 0.0
                for kind, links in kinds.items():
                    if gate_of is not None:
                        gated = [(n, w * gate_of(n)) for n, w in links.items() if n not in excluded]
                    else:
                        gated = [(n, w) for n, w in links.items() if n not in excluded]
                    pool_total = 0.0
                    for _, weight in gated:
                        pool_total += weight
                    share = kind_weights.get(kind, 0.0)
                    if pool_total > 0.0 and share > 0.0:
                        pools.append((share / pool_total, gated))
                        kind_total += share
                if kind_total <= 0.0:
                    continue
                per_share = amount / kind_total
                for share, gated in pools:
                    scale = share * per_share
                    for neighbour, weight in gated:
                        contribution = scale * weight
                        if contribution <= 0.0:
                            continue
                        reached[neighbour] = reached.get(neighbour, 0.0) + contribution
                        if contribution > best_from.get(neighbour, _NOTHING)[0]:
                            best_from[neighbour] = (contribution, slot)
                continue
            neighbours = {
                n: w
                for n, w in self.neighbours(slot).items()
                if n not in excluded and self._alive[n]
            }
            if gate is not None:
                neighbours = {n: w * gate[n] for n, w in neighbours.items()}
            total = sum(neighbours.values())
            if total <= 0.0:
                continue
            for neighbour, weight in neighbours.items():
                contribution = amount * weight / total
                if contribution <= 0.0:
                    continue
                reached[neighbour] = reached.get(neighbour, 0.0) + contribution
                if contribution > best_from.get(neighbour, _NOTHING)[0]:
                    best_from[neighbour] = (contribution, slot)
        if not reached:
            return SpreadStep(
                np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
            )
        return SpreadStep(
            np.fromiter(reached.keys(), dtype=np.int64, count=len(reached)),
            np.fromiter(reached.values(), dtype=np.float64, count=len(reached)),
            np.fromiter((best_from[s][1] for s in reached), dtype=np.int64, count=len(reached)),
        )

    def apply(self, units: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """Compute ``y = x W`` exactly for a sparse code-space state ``x``.

        Uses raw link weights, summed over kinds with ``kind_weights``, and no
        thresholds: this is the product with the association matrix itself.

        Returns:
            ``y`` as a dense array. Shape ``(code_dim,)``, float64.
        """
        slots, overlap = self.overlaps(units, values)
        spread = np.zeros(self.code_dim, dtype=np.float64)
        for slot, amount in zip(slots.tolist(), overlap.tolist()):
            for neighbour, weight in self.neighbours(slot).items():
                if self._alive[neighbour]:
                    np.add.at(spread, self._codes[neighbour], amount * weight)
        return spread

    def complete(self, units: np.ndarray, k: int | None = None) -> np.ndarray:
        """Return ``winner_take_all(x W)``: the code the association recalls from ``x``.

        Ties are broken toward the lower unit index.

        Returns:
            Active units of the recalled code, ascending. Shape ``(k,)``, int64.
        """
        k = k or self.k
        activity = self.apply(units)
        if not activity.any():
            return np.zeros(0, dtype=np.int64)
        order = np.lexsort((np.arange(self.code_dim), -activity))
        return np.sort(order[:k])

    def dense_matrix(self, slots: np.ndarray | None = None) -> torch.Tensor:
        """Write the association matrix out in full. For tests on small sizes.

        Returns:
            ``W`` of shape ``(code_dim, code_dim)``, float64.
        """
        matrix = np.zeros((self.code_dim, self.code_dim), dtype=np.float64)
        live = np.nonzero(self._alive)[0] if slots is None else slots
        for slot in live.tolist():
            for neighbour, weight in self.neighbours(slot).items():
                if self._alive[neighbour]:
                    rows = self._codes[slot][:, None]
                    cols = self._codes[neighbour][None, :]
                    matrix[rows, cols] += weight
        return torch.from_numpy(matrix)

    def nbytes(self) -> int:
        """Approximate bytes held: codes, index and links."""
        link_entries = sum(len(links) for links in self._links)
        # A dict entry costs roughly 100 bytes in CPython, an empty dict about 64;
        # the kind tuples are shared.
        return (
            self._codes.nbytes
            + self._alive.nbytes
            + self._home.nbytes
            + sum(segment.pointers.nbytes + segment.slots.nbytes for segment in self._segments)
            + 16 * sum(len(slots) for slots in self._pending_postings.values())
            + 100 * link_entries
            + 64 * len(self._links)
        )
