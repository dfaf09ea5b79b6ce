"""Translation of LlamaIndex ``MetadataFilters`` into the core's filter dict.

The core's filter (see :func:`nuonuo_core.filters.validate_filter`) maps each
metadata key to a mapping of operators, and every condition must hold. So this
module supports conditions joined by AND, nested AND groups, and one kind of OR
that the core can express: OR over equality (or ``IN``) conditions on a single
key, which becomes one ``$in`` condition. Any other OR, every NOT, and the
operators without a core counterpart raise :class:`InvalidInputError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from nuonuo_core.errors import InvalidInputError, InvalidTypeError
from nuonuo_core.filters import validate_filter

# LlamaIndex operators and the core operators they become.
OPERATOR_MAP: dict[FilterOperator, str] = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}

_SUPPORTED = ", ".join(op.name for op in OPERATOR_MAP)


def to_core_filter(
    filters: MetadataFilters | Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """Translate LlamaIndex metadata filters into the core's filter dict.

    Args:
        filters: ``MetadataFilters``; a mapping already in the core's syntax
            (``{"year": {"$gte": 2020}}``), which is validated and copied; or
            ``None`` for no filter.

    Returns:
        The core filter, or ``None`` when ``filters`` is ``None`` or has no conditions.

    Raises:
        InvalidInputError: An operator is not one of EQ, NE, GT, GTE, LT, LTE,
            IN and NIN. A NOT condition, or an OR that is not a set of equality
            conditions on one key. Two conditions with the same operator on the
            same key. IN or NIN with a value that is not a list.
        InvalidTypeError: ``filters`` has another type.

    Example:
        >>> to_core_filter(MetadataFilters(filters=[
        ...     MetadataFilter(key="year", value=2020, operator=FilterOperator.GTE),
        ...     MetadataFilter(key="topic", value="cats"),
        ... ]))
        {'year': {'$gte': 2020}, 'topic': {'$eq': 'cats'}}
    """
    if filters is None:
        return None
    if isinstance(filters, MetadataFilters):
        core: dict[str, dict[str, Any]] = {}
        _add_group(core, filters)
        return validate_filter(core) if core else None
    if isinstance(filters, Mapping):
        return validate_filter(filters) or None
    raise InvalidTypeError(
        "filters must be llama_index MetadataFilters or a filter dict, "
        f"got {type(filters).__name__}"
    )


def _add_group(core: dict[str, dict[str, Any]], group: MetadataFilters) -> None:
    """Add every condition of ``group`` to ``core``."""
    condition = group.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        for item in group.filters:
            if isinstance(item, MetadataFilters):
                _add_group(core, item)
            else:
                key, operator, value = _condition(item)
                _add(core, key, operator, value)
        return
    if condition == FilterCondition.OR:
        key, values = _or_as_in(group)
        _add(core, key, "$in", values)
        return
    raise InvalidInputError(
        f"filter condition {condition.value!r} is not supported; "
        "NuoNuo supports AND, and OR over equality conditions on one key"
    )


def _condition(item: MetadataFilter) -> tuple[str, str, Any]:
    """Return ``(key, core operator, value)`` of one LlamaIndex filter."""
    # ExactMatchFilter is an alias of MetadataFilter (llama-index-core 0.14), with EQ by default.
    if not isinstance(item, MetadataFilter):
        raise InvalidTypeError(
            f"filters must hold MetadataFilter or MetadataFilters, got {type(item).__name__}"
        )
    operator = OPERATOR_MAP.get(item.operator)
    if operator is None:
        raise InvalidInputError(
            f"filter operator {item.operator.name} on key {item.key!r} is not supported; "
            f"supported: {_SUPPORTED}"
        )
    if operator in ("$in", "$nin") and not isinstance(item.value, list):
        raise InvalidInputError(
            f"filter operator {item.operator.name} on key {item.key!r} needs a list value, "
            f"got {item.value!r}"
        )
    return item.key, operator, item.value


def _or_as_in(group: MetadataFilters) -> tuple[str, list[Any]]:
    """Return ``(key, values)`` of an OR group of equality conditions on one key."""
    keys: set[str] = set()
    values: list[Any] = []
    for item in group.filters:
        if isinstance(item, MetadataFilters):
            raise InvalidInputError(
                "nested groups inside an OR filter are not supported; "
                "NuoNuo supports OR only over equality conditions on one key"
            )
        key, operator, value = _condition(item)
        if operator not in ("$eq", "$in"):
            raise InvalidInputError(
                f"OR filters support only EQ and IN conditions, got {item.operator.name} "
                f"on key {key!r}"
            )
        keys.add(key)
        for candidate in value if operator == "$in" else [value]:
            if candidate not in values:
                values.append(candidate)
    if len(keys) != 1:
        raise InvalidInputError(
            f"OR filters must test a single key, got keys {sorted(keys)}; "
            "NuoNuo supports OR only over equality conditions on one key"
        )
    return keys.pop(), values


def _add(core: dict[str, dict[str, Any]], key: str, operator: str, value: Any) -> None:
    conditions = core.setdefault(key, {})
    if operator in conditions:
        raise InvalidInputError(
            f"two {operator[1:].upper()} conditions on key {key!r} "
            f"({conditions[operator]!r} and {value!r}); combine them into one"
        )
    conditions[operator] = list(value) if isinstance(value, list) else value
