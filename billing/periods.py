"""Billing period arithmetic. Pure: no ORM, no clock.

Boundaries are counted from the anchor, never from the previous boundary, so a period
anchored on Jan 31 ends on Feb 29 (2024), then Mar 31: the day never drifts.
"""

import calendar
from datetime import datetime, timedelta

MONTHS = {"MONTHLY": 1, "QUARTERLY": 3, "HALF_YEARLY": 6, "ANNUAL": 12}
DAYS = {"DAILY": 1, "WEEKLY": 7}


def add_months(moment: datetime, months: int, day: int | None = None) -> datetime:
    """``months`` later, on ``day`` (default: the same day), clamped to the month's end."""
    total = moment.month - 1 + months
    year, month = moment.year + total // 12, total % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return moment.replace(year=year, month=month, day=min(day or moment.day, last))


def boundary(anchor: datetime, period: str, count: int, n: int) -> datetime:
    """The start of the ``n``-th period after ``anchor`` (n may be negative)."""
    if period in DAYS:
        return anchor + timedelta(days=DAYS[period] * count * n)
    return add_months(anchor, MONTHS[period] * count * n, day=anchor.day)


def period_containing(
    anchor: datetime, period: str, count: int, moment: datetime
) -> tuple[datetime, datetime]:
    """The ``[start, end)`` of the period, counted from ``anchor``, that holds ``moment``."""
    if period in DAYS:
        n = (moment - anchor) // timedelta(days=DAYS[period] * count)
    else:
        months = (moment.year - anchor.year) * 12 + moment.month - anchor.month
        n = months // (MONTHS[period] * count)
    while boundary(anchor, period, count, n) > moment:
        n -= 1
    while boundary(anchor, period, count, n + 1) <= moment:
        n += 1
    return boundary(anchor, period, count, n), boundary(anchor, period, count, n + 1)


def calendar_anchor(moment: datetime, period: str) -> datetime:
    """The calendar boundary at or before ``moment``: midnight, Monday, the 1st, or Jan 1."""
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "DAILY":
        return day
    if period == "WEEKLY":
        return day - timedelta(days=day.weekday())
    first = day.replace(day=1)
    step = MONTHS[period]
    return first.replace(month=(first.month - 1) // step * step + 1)


def usage_start(*, reset_usage: str, subscription_start: datetime, period_start: datetime):
    """Where a period's usage starts: a meter that never resets counts from the start of
    the subscription."""
    return subscription_start if reset_usage == "NEVER" else period_start
