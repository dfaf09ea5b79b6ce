"""Translation of LlamaIndex metadata filters into the core's filter dict."""

from __future__ import annotations

import pytest
from llama_index.core.vector_stores.types import (
    ExactMatchFilter,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from nuonuo_core import InvalidInputError, InvalidTypeError
from nuonuo_llamaindex.filters import to_core_filter


def _filters(*items, condition=FilterCondition.AND) -> MetadataFilters:
    return MetadataFilters(filters=list(items), condition=condition)


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        (FilterOperator.EQ, "cats", {"topic": {"$eq": "cats"}}),
        (FilterOperator.NE, "cats", {"topic": {"$ne": "cats"}}),
        (FilterOperator.GT, 3, {"topic": {"$gt": 3}}),
        (FilterOperator.GTE, 3, {"topic": {"$gte": 3}}),
        (FilterOperator.LT, 2.5, {"topic": {"$lt": 2.5}}),
        (FilterOperator.LTE, 2.5, {"topic": {"$lte": 2.5}}),
        (FilterOperator.IN, ["a", "b"], {"topic": {"$in": ["a", "b"]}}),
        (FilterOperator.NIN, [1, 2], {"topic": {"$nin": [1, 2]}}),
    ],
)
def test_each_operator_translated(operator, value, expected):
    filters = _filters(MetadataFilter(key="topic", value=value, operator=operator))
    assert to_core_filter(filters) == expected


def test_and_conditions_merged_per_key():
    filters = _filters(
        MetadataFilter(key="year", value=2000, operator=FilterOperator.GTE),
        MetadataFilter(key="year", value=2010, operator=FilterOperator.LT),
        _filters(ExactMatchFilter(key="topic", value="cats")),
    )
    assert to_core_filter(filters) == {"year": {"$gte": 2000, "$lt": 2010}, "topic": {"$eq": "cats"}}


def test_or_on_one_key_becomes_in():
    filters = _filters(
        MetadataFilter(key="topic", value="cats"),
        MetadataFilter(key="topic", value=["dogs", "cats"], operator=FilterOperator.IN),
        condition=FilterCondition.OR,
    )
    assert to_core_filter(filters) == {"topic": {"$in": ["cats", "dogs"]}}


def test_or_nested_in_and():
    filters = _filters(
        MetadataFilter(key="year", value=2000, operator=FilterOperator.GT),
        _filters(
            MetadataFilter(key="topic", value="cats"),
            MetadataFilter(key="topic", value="dogs"),
            condition=FilterCondition.OR,
        ),
    )
    assert to_core_filter(filters) == {"year": {"$gt": 2000}, "topic": {"$in": ["cats", "dogs"]}}


def test_or_over_two_keys_rejected():
    filters = _filters(
        MetadataFilter(key="topic", value="cats"),
        MetadataFilter(key="year", value=2000),
        condition=FilterCondition.OR,
    )
    with pytest.raises(InvalidInputError, match="single key"):
        to_core_filter(filters)


def test_or_with_range_rejected():
    filters = _filters(
        MetadataFilter(key="year", value=2000, operator=FilterOperator.GT),
        MetadataFilter(key="year", value=1990),
        condition=FilterCondition.OR,
    )
    with pytest.raises(InvalidInputError, match="GT"):
        to_core_filter(filters)


def test_not_condition_rejected():
    filters = _filters(MetadataFilter(key="topic", value="cats"), condition=FilterCondition.NOT)
    with pytest.raises(InvalidInputError, match="'not' is not supported"):
        to_core_filter(filters)


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        (FilterOperator.ANY, ["a"]),
        (FilterOperator.ALL, ["a"]),
        (FilterOperator.CONTAINS, "a"),
        (FilterOperator.TEXT_MATCH, "a"),
        (FilterOperator.TEXT_MATCH_INSENSITIVE, "a"),
        (FilterOperator.IS_EMPTY, None),
    ],
)
def test_unsupported_operator_named(operator, value):
    filters = _filters(MetadataFilter(key="tags", value=value, operator=operator))
    with pytest.raises(InvalidInputError) as error:
        to_core_filter(filters)
    assert operator.name in str(error.value)
    assert "'tags'" in str(error.value)
    assert "supported: EQ, NE, GT, GTE, LT, LTE, IN, NIN" in str(error.value)


def test_same_operator_twice_rejected():
    filters = _filters(
        MetadataFilter(key="year", value=2000, operator=FilterOperator.GT),
        MetadataFilter(key="year", value=2005, operator=FilterOperator.GT),
    )
    with pytest.raises(InvalidInputError, match="two GT conditions on key 'year'"):
        to_core_filter(filters)


def test_in_without_list_rejected():
    filters = _filters(MetadataFilter(key="topic", value="cats", operator=FilterOperator.IN))
    with pytest.raises(InvalidInputError, match="needs a list"):
        to_core_filter(filters)


def test_none_and_empty_give_none():
    assert to_core_filter(None) is None
    assert to_core_filter(_filters()) is None
    assert to_core_filter({}) is None


def test_core_dict_validated_and_copied():
    original = {"year": {"$gte": 2000}}
    translated = to_core_filter(original)
    assert translated == original
    assert translated is not original
    with pytest.raises(InvalidInputError, match="unknown filter operator"):
        to_core_filter({"year": {"$between": [1, 2]}})


def test_wrong_type_rejected():
    with pytest.raises(InvalidTypeError, match="MetadataFilters or a filter dict, got list"):
        to_core_filter([MetadataFilter(key="a", value=1)])
