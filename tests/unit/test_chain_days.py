"""Which `kubewrit.io/day` labels a chain's newest records can carry (`days_since`): the
listing that finds a chain's end reads those days only, so each must be there."""

from __future__ import annotations

import calendar

import pytest
from kubewrit.webhook import chain
from kubewrit.webhook.kube.records import DAY_SECONDS, days_since, time_labels_at

NOW = float(calendar.timegm((2026, 12, 7, 23, 30, 0)))


def day(moment: float) -> str:
    return time_labels_at(moment)["kubewrit.io/day"]


def test_a_record_sealed_today_names_yesterday_today_and_tomorrow() -> None:
    assert days_since(chain.timestamp(NOW - 60), NOW) == ["20261206", "20261207", "20261208"]


@pytest.mark.parametrize("ago_days", [0.01, 0.5, 1, 3, 10, 45, 200, 364])
def test_every_day_from_the_record_to_now_is_named_and_no_more(ago_days: float) -> None:
    sealed = NOW - ago_days * DAY_SECONDS
    days = days_since(chain.timestamp(sealed), NOW)
    assert days is not None
    # Every later record is labelled with one of these days, whenever it was sealed.
    for moment in range(int(sealed), int(NOW), 3_600):
        assert day(moment) in days
    assert days[0] == day(sealed - DAY_SECONDS) and days[-1] == day(NOW + DAY_SECONDS)
    assert len(days) == len(set(days)) <= ago_days + 4


def test_a_clock_set_back_by_hours_is_still_covered() -> None:
    sealed = NOW - 3 * DAY_SECONDS
    days = days_since(chain.timestamp(sealed), NOW)
    assert days is not None and day(sealed - 20 * 3_600) in days


@pytest.mark.parametrize(
    "stamp",
    [
        "not a time",
        "",
        chain.timestamp(NOW - 400 * DAY_SECONDS),  # older than a year: the chain is read whole
        chain.timestamp(NOW + 3 * DAY_SECONDS),  # from the future: nothing can be assumed
    ],
)
def test_a_time_that_cannot_date_the_chain_gives_no_days(stamp: str) -> None:
    assert days_since(stamp, NOW) is None
