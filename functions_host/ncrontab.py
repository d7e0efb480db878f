"""Six-field NCRONTAB schedules (`{second} {minute} {hour} {day} {month} {day-of-week}`), evaluated in UTC,
as the Azure Functions timer trigger reads them.

Supported per field: `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, and comma lists of
these. Months accept `Jan`..`Dec`, days of week `Sun`..`Sat` (0 = Sunday .. 6 = Saturday); names are
case-insensitive and may be full names. As in NCrontab (the library the host uses), a time matches when
every field matches: a restricted day-of-month and a restricted day-of-week must both hold.

A `hh:mm:ss` TimeSpan (an interval, App Service plans only in Azure) is accepted as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MONTH_NAMES = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")


def _name_table(names: tuple[str, ...], first: int) -> dict[str, int]:
    table = {name: first + i for i, name in enumerate(names)}
    table.update({name[:3]: first + i for i, name in enumerate(names)})
    return table


_FIELDS = (  # name, min, max, accepted names
    ("second", 0, 59, None),
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day", 1, 31, None),
    ("month", 1, 12, _name_table(_MONTH_NAMES, 1)),
    ("day-of-week", 0, 6, _name_table(_DAY_NAMES, 0)),
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})\Z")
_EXAMPLE = "use six fields '{second} {minute} {hour} {day} {month} {day-of-week}', e.g. '0 0 1 * * Mon'"


class NCrontabError(ValueError):
    """The schedule expression is not valid NCRONTAB."""


def _value(token: str, name: str, lo: int, hi: int, names: dict[str, int] | None, expr: str) -> int:
    text = token.strip().lower()
    if names is not None and text.isalpha():
        if text not in names:
            raise NCrontabError(f"{expr!r}: {token!r} is not a valid {name} name; {_EXAMPLE}")
        return names[text]
    if not text.isdigit():
        raise NCrontabError(f"{expr!r}: {token!r} is not a number in the {name} field; {_EXAMPLE}")
    value = int(text)
    if not lo <= value <= hi:
        raise NCrontabError(f"{expr!r}: {value} is outside {lo}-{hi} in the {name} field")
    return value


def _parse_field(text: str, field: tuple, expr: str) -> frozenset[int]:
    name, lo, hi, names = field
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise NCrontabError(f"{expr!r}: empty list item in the {name} field")
        range_text, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise NCrontabError(
                    f"{expr!r}: step {step_text!r} in the {name} field must be a positive number"
                )
            step = int(step_text)
        if range_text == "*":
            start, end = lo, hi
        elif "-" in range_text:
            a, _, b = range_text.partition("-")
            start, end = _value(a, name, lo, hi, names, expr), _value(b, name, lo, hi, names, expr)
            if start > end:
                raise NCrontabError(f"{expr!r}: range {range_text!r} in the {name} field runs backwards")
        else:
            start = _value(range_text, name, lo, hi, names, expr)
            end = hi if step_text else start  # `a/n` means from a to the end, every n
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; `next_after(t)` is the first occurrence strictly after `t` (UTC)."""

    expression: str
    seconds: frozenset[int] = frozenset()
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()  # 0 = Sunday
    interval: timedelta | None = None

    def next_after(self, after: datetime) -> datetime:
        after = _as_utc(after)
        if self.interval is not None:
            return after + self.interval
        t = after.replace(microsecond=0) + timedelta(seconds=1)
        limit = t.year + 400  # a valid day/month pair occurs within any 400-year cycle
        while t.year < limit:
            if t.month not in self.months:
                t = _first_of_next_month(t)
                continue
            if t.day not in self.days or (t.isoweekday() % 7) not in self.weekdays:
                t = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0)
                continue
            if t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0, second=0)
                continue
            if t.minute not in self.minutes:
                t = (t + timedelta(minutes=1)).replace(second=0)
                continue
            if t.second not in self.seconds:
                t += timedelta(seconds=1)
                continue
            return t
        raise NCrontabError(f"{self.expression!r} never occurs")

    def occurrences(self, after: datetime, count: int) -> list[datetime]:
        out: list[datetime] = []
        t = after
        for _ in range(count):
            t = self.next_after(t)
            out.append(t)
        return out


def _as_utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _first_of_next_month(t: datetime) -> datetime:
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return t.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)


def parse(expression: str) -> Schedule:
    """Parse a six-field NCRONTAB expression (or an `hh:mm:ss` interval)."""
    if not isinstance(expression, str) or not expression.strip():
        raise NCrontabError(f"empty schedule; {_EXAMPLE}")
    text = expression.strip()
    span = _TIMESPAN.match(text)
    if span:
        days, hours, minutes, seconds = (int(g) if g else 0 for g in span.groups())
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if interval <= timedelta(0) or minutes > 59 or seconds > 59:
            raise NCrontabError(f"{expression!r}: not a positive hh:mm:ss interval")
        return Schedule(expression=text, interval=interval)
    parts = text.split()
    if len(parts) != 6:
        hint = " (five-field cron lacks the seconds field)" if len(parts) == 5 else ""
        raise NCrontabError(f"{expression!r} has {len(parts)} fields{hint}; {_EXAMPLE}")
    fields = [_parse_field(part, field, expression) for part, field in zip(parts, _FIELDS, strict=True)]
    on_seconds, on_minutes, on_hours, on_days, on_months, on_weekdays = fields
    if not any(day <= _DAYS_IN_MONTH[month - 1] for month in on_months for day in on_days):
        raise NCrontabError(f"{expression!r}: no month in the schedule has any of its days; it never occurs")
    return Schedule(
        expression=text,
        seconds=on_seconds,
        minutes=on_minutes,
        hours=on_hours,
        days=on_days,
        months=on_months,
        weekdays=on_weekdays,
    )
