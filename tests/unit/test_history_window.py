"""Which hours or days a sequence rule's history lists in Kubernetes mode."""

from __future__ import annotations

import calendar
import time

import pytest
from kubewrit.webhook import chain
from kubewrit.webhook.kube.history import window_selector
from kubewrit.webhook.kube.records import time_labels


def at(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def listed(selector: str) -> tuple[str, list[str]]:
    label, values = selector.split(" in ")
    return label, values.strip("()").split(",")


def test_a_ten_minute_window_lists_this_hour_and_the_next() -> None:
    label, hours = listed(window_selector(at("2026-11-22T10:30:00Z"), 600))
    assert label == "kubewrit.io/hour"
    assert hours == ["2026112210", "2026112211"]


def test_a_window_reaching_into_yesterday_lists_its_hours() -> None:
    _, hours = listed(window_selector(at("2026-11-23T00:05:00Z"), 3600))
    assert hours == ["2026112223", "2026112300", "2026112301"]


def test_windows_past_two_days_list_days() -> None:
    label, days = listed(window_selector(at("2026-11-22T10:30:00Z"), 7 * 86400))
    assert label == "kubewrit.io/day"
    assert days[0] == "20261115" and days[-1] == "20261123" and len(days) == 9


@pytest.mark.parametrize("window", [90, 600, 3600, 6 * 3600, 2 * 86400, 7 * 86400, 31 * 86400])
def test_every_record_made_within_the_window_carries_a_listed_label(window: int) -> None:
    now = at("2026-02-28T23:59:59Z") + 0.5
    label, values = listed(window_selector(now, window))
    step = max(1, window // 97)
    for ago in [*range(0, window, step), window - 1]:
        stamp = chain.timestamp(now - ago)
        assert time_labels(stamp)[label] in values, (window, ago, stamp)
    ahead = chain.timestamp(now + 60)  # a replica whose clock runs a minute ahead
    assert time_labels(ahead)[label] in values


def test_a_record_older_than_the_window_is_not_listed() -> None:
    now = at("2026-11-22T10:30:00Z")
    label, hours = listed(window_selector(now, 600))
    assert time_labels(chain.timestamp(now - 3 * 3600))[label] not in hours
