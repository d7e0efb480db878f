"""Instance ids, job names and Azure names computed by `retrain.naming`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from retrain import naming


def test_scheduled_id_is_one_per_iso_week():
    monday = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    assert naming.scheduled_instance_id("MSFT", monday) == "retrain-msft-2026w48"
    # Every moment of the same ISO week gives the same id; the next week another one.
    for hours in (0, 30, 24 * 6 + 22):
        assert naming.scheduled_instance_id("MSFT", monday + timedelta(hours=hours)) == "retrain-msft-2026w48"
    assert naming.scheduled_instance_id("MSFT", monday + timedelta(days=7)) == "retrain-msft-2026w49"
    assert naming.scheduled_instance_id("AAPL", monday) == "retrain-aapl-2026w48"


def test_iso_year_not_calendar_year():
    # 2027-01-01 is a Friday: ISO week 53 of 2026.
    assert naming.scheduled_instance_id("MSFT", datetime(2027, 1, 1, tzinfo=UTC)) == "retrain-msft-2026w53"


def test_times_are_taken_in_utc():
    # Monday 00:30 in UTC+2 is still Sunday in UTC: the previous ISO week.
    local = datetime(2026, 11, 23, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert naming.scheduled_instance_id("MSFT", local) == "retrain-msft-2026w47"
    assert naming.adhoc_instance_id("MSFT", local) == "retrain-msft-20261122t223000z"


@pytest.mark.parametrize("ticker", ["MSFT", "BRK-B", "BRK.B", "^GSPC", "EURUSD=X", "A", "3M"])
def test_instance_ids_parse_back_to_their_ticker(ticker):
    at = datetime(2026, 11, 24, 23, 14, 5, tzinfo=UTC)
    for instance_id, kind in (
        (naming.scheduled_instance_id(ticker, at), "scheduled"),
        (naming.adhoc_instance_id(ticker, at), "adhoc"),
    ):
        parsed = naming.parse_instance_id(instance_id)
        assert parsed is not None and parsed.ticker == ticker and parsed.kind == kind
        assert instance_id.startswith(naming.ticker_instance_prefix(ticker))
        # URL-path friendly: no characters that need escaping in /instances/<id>.
        assert re.fullmatch(r"[a-z0-9._~-]+", instance_id), instance_id


def test_prefix_sharing_tickers_are_told_apart():
    at = datetime(2026, 11, 24, tzinfo=UTC)
    brk_b = naming.adhoc_instance_id("BRK-B", at)
    assert brk_b.startswith(naming.ticker_instance_prefix("BRK"))  # why the prefix alone is not enough
    assert not naming.is_instance_of(brk_b, "BRK")
    assert naming.is_instance_of(brk_b, "BRK-B")
    assert naming.is_instance_of(naming.scheduled_instance_id("BRK", at), "brk")


@pytest.mark.parametrize(
    "foreign",
    [
        "",
        "retrain-msft",
        "retrain-msft-2026w4",
        "other-msft-2026w48",
        "retrain-msft-20261124t231405",
        "retrain-MSFT-2026w48",
        "abc",
    ],
)
def test_foreign_ids_are_not_parsed(foreign):
    assert naming.parse_instance_id(foreign) is None
    assert not naming.is_instance_of(foreign, "MSFT")


def test_job_name_follows_the_instance_id_and_is_valid_for_azure():
    assert naming.job_name("retrain-msft-2026w48") == "retrain-msft-2026w48-train"
    assert naming.job_name("retrain-msft-2026w48") == naming.job_name("retrain-msft-2026w48")
    assert naming.job_name("retrain-msft-2026w48") != naming.job_name("retrain-msft-2026w49")
    odd = naming.job_name(naming.adhoc_instance_id("^GSPC", datetime(2026, 1, 1, tzinfo=UTC)))
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_-]*", odd), odd


@pytest.mark.parametrize("ticker", ["MSFT", "BRK.B", "^GSPC", "3M", "EURUSD=X"])
def test_azure_resource_names(ticker):
    endpoint = naming.endpoint_name(ticker)
    assert re.fullmatch(r"[a-z][a-z0-9-]{1,30}[a-z0-9]", endpoint), endpoint
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", naming.model_name(ticker))
    assert naming.experiment_name(ticker).startswith("retrain-")
