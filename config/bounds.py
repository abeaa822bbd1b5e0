"""The bounds of what Tally accepts, in one place (README.md, "Bounds").

Every datetime Tally reads (API bodies and filters, event timestamps, subscription dates,
portal filters) goes through ``moment_parse`` or ``moment_check``: RFC 3339, an offset
within ±15:59 (none means UTC), and a moment in [2000-01-01, 2100-01-01) UTC.
"""

import re
from datetime import UTC, datetime, timedelta

import django_filters
from django import forms
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)  # exclusive
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)
MAX_OFFSET = 1_000_000  # list offsets
MAX_LIMIT = 1_000  # list page sizes
MAX_PAGE = MAX_OFFSET // 50 + 1  # the portal's 50-row pages

OUT_OF_RANGE = "must lie from 2000-01-01T00:00:00Z up to (not including) 2100-01-01T00:00:00Z"
FORMAT = "must be an RFC 3339 date-time, e.g. 2026-11-27T10:00:00Z"


def moment_check(moment: datetime) -> datetime:
    """``moment`` (aware; naive is UTC) if Tally accepts it, else ValueError saying why."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.utcoffset()
    if offset is None or abs(offset) > MAX_UTC_OFFSET:
        raise ValueError("has a UTC offset beyond ±15:59")
    try:
        inside = EARLIEST <= moment < LATEST
    except OverflowError:
        inside = False
    if not inside:
        raise ValueError(OUT_OF_RANGE)
    return moment


def moment_parse(value) -> datetime:
    """An RFC 3339 date-time Tally accepts (see ``moment_check``), else ValueError."""
    if isinstance(value, datetime):
        return moment_check(value)
    if not isinstance(value, str):
        raise ValueError(FORMAT)
    try:
        moment = parse_datetime(value.strip())
    except (ValueError, OverflowError):
        moment = None
    if moment is None:
        raise ValueError(FORMAT)
    return moment_check(moment)


class Moment(serializers.DateTimeField):
    """DRF's date-time field, within Tally's bounds."""

    def to_internal_value(self, value):
        try:
            moment = moment_parse(value)
        except ValueError as error:
            raise serializers.ValidationError(f"The date-time {error}.") from None
        return super().to_internal_value(moment)


class MomentFormField(forms.DateTimeField):
    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return moment_parse(value)
        except ValueError as error:
            raise forms.ValidationError(f"The date-time {error}.", code="invalid") from None


class MomentFilter(django_filters.IsoDateTimeFilter):
    """django-filter's ISO date-time filter, within Tally's bounds."""

    field_class = MomentFormField


def day_check(day) -> None:
    """A portal date filter: its whole day must lie within the bounds."""
    if not EARLIEST.date() <= day < LATEST.date():
        raise forms.ValidationError("Pick a date from 2000-01-01 to 2099-12-31.")


# JSON's number syntax, in ASCII: "15", "-0.25", "1E+2"; no spaces, "+", "_" or ".5".
_CANONICAL_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")


class CanonicalDecimal(serializers.DecimalField):
    """A decimal sent as a JSON number, or as a string in JSON's number syntax.

    DRF would strip ``" 5 "`` and read ``"1_000"`` or ``"+5"``; Tally refuses what it would
    have to reinterpret."""

    def to_internal_value(self, data):
        if isinstance(data, str) and not _CANONICAL_DECIMAL.fullmatch(data):
            raise serializers.ValidationError(
                f'{data[:40]!r} is not a plain decimal number such as "15" or "0.25".'
            )
        return super().to_internal_value(data)
