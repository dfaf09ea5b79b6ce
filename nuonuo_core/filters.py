"""Metadata filters: which memories a recall or listing may return."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nuonuo_core.errors import InvalidInputError, InvalidTypeError

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")


def validate_filter(filter: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Check a filter and return a copy.

    A filter maps metadata keys to a value, which must be equal, or to a mapping
    of operators (``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$in``,
    ``$nin``) to operands. Every key must match.
    """
    if filter is None:
        return None
    if not isinstance(filter, Mapping):
        raise InvalidTypeError(f"filter must be a mapping of metadata keys, got {type(filter).__name__}")
    checked: dict[str, Any] = {}
    for key, condition in filter.items():
        if not isinstance(key, str):
            raise InvalidTypeError(f"filter keys must be strings, got {key!r}")
        if isinstance(condition, Mapping) and any(str(op).startswith("$") for op in condition):
            for op, operand in condition.items():
                if op not in OPERATORS:
                    raise InvalidInputError(
                        f"unknown filter operator {op!r} on key {key!r}; valid: {', '.join(OPERATORS)}"
                    )
                if op in ("$in", "$nin") and not isinstance(operand, (list, tuple, set, frozenset)):
                    raise InvalidInputError(
                        f"filter operator {op!r} on key {key!r} needs a list, got {operand!r}"
                    )
            checked[key] = dict(condition)
        else:
            checked[key] = condition
    return checked


def matches_filter(metadata: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    """Return whether ``metadata`` satisfies every condition of a validated filter."""
    if not filter:
        return True
    for key, condition in filter.items():
        present = key in metadata
        value = metadata.get(key)
        if isinstance(condition, Mapping) and any(str(op).startswith("$") for op in condition):
            for op, operand in condition.items():
                if not _apply(op, present, value, operand):
                    return False
        elif not present or not _equal(value, condition):
            return False
    return True


def _equal(value: Any, operand: Any) -> bool:
    """JSON equality: ``True`` is not ``1`` and ``False`` is not ``0``, unlike in Python."""
    if isinstance(value, bool) != isinstance(operand, bool):
        return False
    return bool(value == operand)


def _apply(op: str, present: bool, value: Any, operand: Any) -> bool:
    if op == "$eq":
        return present and _equal(value, operand)
    if op == "$ne":
        return not present or not _equal(value, operand)
    if op == "$in":
        return present and any(_equal(value, choice) for choice in operand)
    if op == "$nin":
        return not present or not any(_equal(value, choice) for choice in operand)
    if not present or isinstance(value, bool) or isinstance(operand, bool):
        # Booleans are not ordered, neither among themselves nor against numbers.
        return False
    try:
        if op == "$gt":
            return value > operand
        if op == "$gte":
            return value >= operand
        if op == "$lt":
            return value < operand
        if op == "$lte":
            return value <= operand
    except TypeError:
        # Values of different types (a string and a number) never match an order.
        return False
    return False
