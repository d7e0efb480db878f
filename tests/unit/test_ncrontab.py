"""Six-field NCRONTAB parsing and next occurrences (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from functions_host.ncrontab import NCrontabError, parse


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_weekly_monday_schedule_from_settings_default() -> None:
    schedule = parse("0 0 1 * * Mon")
    # 2024-01-01 is a Monday: strictly after 01:00 that day comes the next Monday
    assert schedule.occurrences(at(2024, 1, 1, 1, 0, 0), 3) == [
        at(2024, 1, 8, 1),
        at(2024, 1, 15, 1),
        at(2024, 1, 22, 1),
    ]
    assert schedule.next_after(at(2024, 1, 1, 0, 59, 59)) == at(2024, 1, 1, 1)
    assert all(t.weekday() == 0 for t in schedule.occurrences(at(2023, 12, 20), 20))


def test_steps_ranges_and_lists() -> None:
    assert parse("*/15 * * * * *").occurrences(at(2024, 1, 1), 4) == [
        at(2024, 1, 1, 0, 0, 15),
        at(2024, 1, 1, 0, 0, 30),
        at(2024, 1, 1, 0, 0, 45),
        at(2024, 1, 1, 0, 1, 0),
    ]
    assert parse("0 10-12/2 9 * * *").occurrences(at(2024, 1, 1), 3) == [
        at(2024, 1, 1, 9, 10),
        at(2024, 1, 1, 9, 12),
        at(2024, 1, 2, 9, 10),
    ]
    assert parse("0 0 6,18 * * *").occurrences(at(2024, 1, 1, 7), 2) == [
        at(2024, 1, 1, 18),
        at(2024, 1, 2, 6),
    ]
    # `a/n`: from a to the end of the range, every n
    assert parse("50/5 0 0 * * *").occurrences(at(2024, 1, 1), 3) == [
        at(2024, 1, 1, 0, 0, 50),
        at(2024, 1, 1, 0, 0, 55),
        at(2024, 1, 2, 0, 0, 50),
    ]


def test_day_and_month_names_and_numbers_agree() -> None:
    by_name = parse("0 30 9 * Jan-Mar Mon-Fri")
    by_number = parse("0 30 9 * 1-3 1-5")
    start = at(2024, 3, 29, 10)  # a Friday after 09:30, the last weekday of March
    assert by_name.next_after(start) == by_number.next_after(start) == at(2025, 1, 1, 9, 30)
    assert parse("0 0 0 * * sunday").next_after(at(2024, 1, 1)) == at(2024, 1, 7)  # 0 = Sunday
    assert parse("0 0 0 * * 0").next_after(at(2024, 1, 1)) == at(2024, 1, 7)
    assert parse("0 0 12 1 DEC *").next_after(at(2024, 1, 1)) == at(2024, 12, 1, 12)


def test_day_of_month_and_day_of_week_must_both_match() -> None:
    # NCrontab semantics: the 13th that is a Friday (not: every 13th and every Friday)
    fridays_13th = parse("0 0 0 13 * Fri").occurrences(at(2024, 1, 1), 2)
    assert fridays_13th == [at(2024, 9, 13), at(2024, 12, 13)]


def test_leap_day_and_month_rollover() -> None:
    assert parse("0 0 0 29 Feb *").next_after(at(2024, 3, 1)) == at(2028, 2, 29)
    assert parse("59 59 23 31 12 *").next_after(at(2024, 12, 31, 23, 59, 59)) == at(2025, 12, 31, 23, 59, 59)


def test_naive_and_offset_datetimes_are_read_as_utc() -> None:
    schedule = parse("0 0 * * * *")
    assert schedule.next_after(datetime(2024, 1, 1, 0, 30)) == at(2024, 1, 1, 1)
    plus_two = timezone(timedelta(hours=2))
    assert schedule.next_after(datetime(2024, 1, 1, 2, 30, tzinfo=plus_two)) == at(2024, 1, 1, 1)


def test_timespan_interval() -> None:
    schedule = parse("00:05:00")
    assert schedule.next_after(at(2024, 1, 1, 0, 0, 7)) == at(2024, 1, 1, 0, 5, 7)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 * * *", "five-field cron lacks the seconds field"),
        ("0 60 * * * *", "outside 0-59 in the minute field"),
        ("0 0 0 * * Funday", "not a valid day-of-week name"),
        ("0 0 0 * Smarch *", "not a valid month name"),
        ("*/0 * * * * *", "must be a positive number"),
        ("0 0 0 10-5 * *", "runs backwards"),
        ("0 0 0 31 Feb,Apr *", "never occurs"),
        ("0 0 0 1,,2 * *", "empty list item"),
        ("", "empty schedule"),
        ("0 0 x * * *", "not a number in the hour field"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(NCrontabError, match=message):
        parse(expression)
