"""Graph's usage headers: each header, BUC minutes to seconds, malformed ones ignored."""

from __future__ import annotations

import json

import httpx
import pytest

from offpost.graph.usage import (
    EMPTY_USAGE,
    BusinessUseCaseUsage,
    GraphUsage,
    UsageCounters,
    parse_usage,
)


def test_app_usage_header() -> None:
    usage = parse_usage(
        {"X-App-Usage": '{"call_count": 28, "total_time": 25, "total_cputime": 12}'}
    )
    assert usage.app == UsageCounters(call_count_pct=28, total_time_pct=25, total_cputime_pct=12)
    assert usage.page is None
    assert usage.business == ()
    assert usage.max_pct == 28


def test_page_usage_header() -> None:
    usage = parse_usage({"x-page-usage": "{'call_count': 1}".replace("'", '"')})
    assert usage.page == UsageCounters(call_count_pct=1)
    assert usage.max_pct == 1


def test_business_use_case_header_converts_minutes_to_seconds() -> None:
    header = {
        "1234": [
            {
                "type": "pages",
                "call_count": 97,
                "total_cputime": 23,
                "total_time": 40,
                "estimated_time_to_regain_access": 5,
            }
        ],
        "5678": [{"type": "pages", "call_count": 10, "estimated_time_to_regain_access": 0}],
    }
    usage = parse_usage({"X-Business-Use-Case-Usage": json.dumps(header)})
    assert usage.business[0] == BusinessUseCaseUsage(
        object_id="1234",
        type="pages",
        call_count_pct=97,
        total_time_pct=40,
        total_cputime_pct=23,
        regain_access_s=300,
    )
    assert usage.regain_access_s == 300
    assert usage.max_pct == 97
    assert [b.object_id for b in usage.for_object("5678")] == ["5678"]


def test_max_pct_spans_every_header() -> None:
    usage = parse_usage(
        httpx.Headers(
            {
                "x-app-usage": '{"call_count": 10}',
                "x-page-usage": '{"total_time": 55}',
                "x-business-use-case-usage": '{"1": [{"type": "pages", "total_cputime": 99}]}',
            }
        )
    )
    assert usage.max_pct == 99


def test_fractional_percentages_round_up() -> None:
    assert parse_usage({"x-app-usage": '{"call_count": 9.2}'}).app == UsageCounters(
        call_count_pct=10
    )


def test_no_headers_is_empty_usage() -> None:
    usage = parse_usage({"content-type": "application/json"})
    assert usage == EMPTY_USAGE == GraphUsage()
    assert usage.max_pct == 0
    assert usage.regain_access_s == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"x-app-usage": "not json"},
        {"x-app-usage": "[1, 2]"},
        {"x-app-usage": '{"call_count": "lots", "total_time": true, "total_cputime": -3}'},
        {"x-app-usage": ""},
        {"x-page-usage": "{"},
        {"x-business-use-case-usage": "nope"},
        {"x-business-use-case-usage": '["1234"]'},
        {"x-business-use-case-usage": '{"1234": {"type": "pages"}}'},
        {"x-business-use-case-usage": '{"1234": ["pages", 3, null]}'},
    ],
)
def test_malformed_headers_are_ignored(headers: dict[str, str]) -> None:
    assert parse_usage(headers) == EMPTY_USAGE


def test_one_malformed_header_does_not_hide_the_others() -> None:
    usage = parse_usage({"x-app-usage": "garbage", "x-page-usage": '{"call_count": 7}'})
    assert usage.app is None
    assert usage.page == UsageCounters(call_count_pct=7)


def test_buc_entry_with_bad_fields_keeps_what_it_can() -> None:
    raw = '{"42": [{"type": 5, "call_count": "x", "estimated_time_to_regain_access": "soon"}]}'
    (entry,) = parse_usage({"x-business-use-case-usage": raw}).business
    assert entry == BusinessUseCaseUsage(object_id="42", type=None)
