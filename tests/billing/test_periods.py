from datetime import UTC, datetime

import pytest

from billing.periods import boundary, calendar_anchor, period_containing


def at(*args):
    return datetime(*args, tzinfo=UTC)


def test_month_end_anchor_clamps_without_drifting():
    anchor = at(2024, 1, 31, 9, 30)
    assert [boundary(anchor, "MONTHLY", 1, n) for n in range(4)] == [
        at(2024, 1, 31, 9, 30),
        at(2024, 2, 29, 9, 30),
        at(2024, 3, 31, 9, 30),
        at(2024, 4, 30, 9, 30),
    ]


def test_non_leap_february_and_annual_leap_day():
    assert boundary(at(2023, 1, 31), "MONTHLY", 1, 1) == at(2023, 2, 28)
    assert boundary(at(2024, 2, 29), "ANNUAL", 1, 1) == at(2025, 2, 28)
    assert boundary(at(2024, 2, 29), "ANNUAL", 1, 4) == at(2028, 2, 29)


@pytest.mark.parametrize(
    ("period", "count", "moment", "expected"),
    [
        ("MONTHLY", 1, at(2024, 3, 15), (at(2024, 2, 29, 9, 30), at(2024, 3, 31, 9, 30))),
        ("MONTHLY", 1, at(2024, 3, 31, 9, 30), (at(2024, 3, 31, 9, 30), at(2024, 4, 30, 9, 30))),
        ("MONTHLY", 1, at(2024, 1, 1), (at(2023, 12, 31, 9, 30), at(2024, 1, 31, 9, 30))),
        ("QUARTERLY", 1, at(2024, 6, 1), (at(2024, 4, 30, 9, 30), at(2024, 7, 31, 9, 30))),
        ("MONTHLY", 2, at(2024, 3, 1), (at(2024, 1, 31, 9, 30), at(2024, 3, 31, 9, 30))),
        ("WEEKLY", 1, at(2024, 2, 8), (at(2024, 2, 7, 9, 30), at(2024, 2, 14, 9, 30))),
        ("DAILY", 1, at(2024, 1, 31, 9, 29), (at(2024, 1, 30, 9, 30), at(2024, 1, 31, 9, 30))),
    ],
)
def test_period_containing_a_moment(period, count, moment, expected):
    assert period_containing(at(2024, 1, 31, 9, 30), period, count, moment) == expected


def test_calendar_anchors():
    moment = at(2026, 11, 27, 15, 4)
    assert calendar_anchor(moment, "MONTHLY") == at(2026, 11, 1)
    assert calendar_anchor(moment, "QUARTERLY") == at(2026, 10, 1)
    assert calendar_anchor(moment, "ANNUAL") == at(2026, 1, 1)
    assert calendar_anchor(moment, "WEEKLY") == at(2026, 11, 23)
