"""Retention planning and configuration parsing, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubewrit.operator import Cut, parse_duration
from kubewrit.operator.retention import expendable, plan_chain

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


def rec(chain: str, seq: int, minutes_ago: float, prev: str | None = None) -> dict[str, Any]:
    when = NOW - timedelta(minutes=minutes_ago)
    return {
        "metadata": {"name": f"{chain}-{seq}", "namespace": "ns", "uid": f"u-{chain}-{seq}"},
        "spec": {
            "chain": chain,
            "seq": seq,
            "hash": f"{chain}{seq}",
            "prev": prev if prev is not None else (f"{chain}{seq - 1}" if seq else "g"),
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        },
    }


def test_count_keeps_the_newest_per_namespace_across_chains():
    records = [rec("a", i, 100 - 2 * i) for i in range(5)] + [
        rec("b", i, 99 - 2 * i) for i in range(5)
    ]
    doomed = expendable(records, NOW, max_age=0, max_count=3)
    assert doomed == {"a-0", "b-0", "a-1", "b-1", "a-2", "b-2", "a-3"}
    a = plan_chain("ns", "a", [r for r in records if r["spec"]["chain"] == "a"], doomed, None)
    b = plan_chain("ns", "b", [r for r in records if r["spec"]["chain"] == "b"], doomed, None)
    assert [r["spec"]["seq"] for r in a.doomed] == [0, 1, 2, 3] and a.cut_seq == 4
    assert [r["spec"]["seq"] for r in b.doomed] == [0, 1, 2] and b.cut_seq == 3


def test_age_and_never_the_last_record():
    records = [rec("a", i, 120) for i in range(3)]
    doomed = expendable(records, NOW, max_age=3600, max_count=0)
    assert len(doomed) == 3
    planned = plan_chain("ns", "a", records, doomed, None)
    assert [r["spec"]["seq"] for r in planned.doomed] == [0, 1] and planned.cut_seq == 2


def test_a_gap_or_a_mismatched_cut_stops_retention():
    gap = [rec("a", 0, 120), rec("a", 1, 120), rec("a", 3, 120), rec("a", 4, 1)]
    names = {r["metadata"]["name"] for r in gap}
    assert [r["spec"]["seq"] for r in plan_chain("ns", "a", gap, names, None).doomed] == [0]
    # the chain should begin where the last cut said; if not, records went missing
    later = [rec("a", 5, 120), rec("a", 6, 120), rec("a", 7, 1)]
    names = {r["metadata"]["name"] for r in later}
    assert not plan_chain("ns", "a", later, names, Cut(3, "a2", "x", "t")).doomed
    assert [
        r["spec"]["seq"] for r in plan_chain("ns", "a", later, names, Cut(5, "a4", "x", "t")).doomed
    ] == [5, 6]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("30d", 2592000),
        ("", 0),
        ("500ms", 0.5),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_duration_is_refused():
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
