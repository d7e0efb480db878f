"""Data as known on a day: the offline sources, the HTTP body and the fetch activity honour `as_of`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from retrain.market_data import MarketDataError, fetch_prices, parse_as_of
from retrain.triggers import BadRequest, parse_retrain_request

ENV = {"RETRAIN_TICKERS": "MSFT", "RETRAIN_SOURCE": "sample", "RETRAIN_LOOKBACK_DAYS": "900"}


def test_sample_as_of_a_trading_day_ends_on_that_day_and_records_it() -> None:
    prices = fetch_prices("MSFT", source="sample", lookback_days=400, end="2009-06-15")
    assert prices["Date"].iloc[-1] == pd.Timestamp("2009-06-15")
    assert prices.attrs["as_of"] == "2009-06-15"
    full = fetch_prices("MSFT", source="sample")
    # Nothing after the as-of day, and the rows before it are the full history's rows.
    expected = full[(full["Date"] <= "2009-06-15") & (full["Date"] >= "2008-05-11")].reset_index(drop=True)
    pd.testing.assert_frame_equal(prices, expected)


def test_as_of_a_weekend_ends_on_the_last_trading_day_before_it() -> None:
    prices = fetch_prices("MSFT", source="sample", lookback_days=400, end="2009-06-14")  # a Sunday
    assert prices["Date"].iloc[-1] == pd.Timestamp("2009-06-12")


def test_csv_as_of(tmp_path: Path) -> None:
    full = fetch_prices("IBM", source="sample").tail(400)
    path = tmp_path / "ibm.csv"
    full.assign(Date=full["Date"].dt.strftime("%Y-%m-%d")).to_csv(path, index=False)
    cut = full["Date"].iloc[300]
    prices = fetch_prices("IBM", source=f"csv:{path}", end=cut.date(), min_rows=250)
    assert len(prices) == 301 and prices["Date"].iloc[-1] == cut


@pytest.mark.parametrize("early", ["1990-01-02", "1900-01-01", "0999-01-04"])
def test_as_of_before_the_history_says_to_send_a_later_date(early: str) -> None:
    # The data ends on or before the as-of day, so only a LATER day can have rows (0999 also used to
    # overflow pandas' Timestamp).
    with pytest.raises(
        MarketDataError,
        match=rf"no rows on or before end={early} \(the data starts on "
        r"\d{4}-\d{2}-\d{2}\); send a later end date",
    ):
        fetch_prices("MSFT", source="sample", end=early)
    with pytest.raises(MarketDataError, match="YYYY-MM-DD"):
        parse_as_of("last tuesday")


@pytest.mark.parametrize("loose", ["20100301", "2010-W09-1", "2010-03-01T00:00:00", " 2010-3-1 "])
def test_as_of_is_yyyy_mm_dd_only(loose: str) -> None:
    with pytest.raises(MarketDataError, match="must be YYYY-MM-DD"):
        parse_as_of(loose)


def test_http_body_as_of_reaches_the_cycle_input() -> None:
    cycle = parse_retrain_request(json.dumps({"as_of": "2010-03-01"}), ENV)
    assert cycle.as_of == "2010-03-01"
    assert parse_retrain_request(b"", ENV).as_of is None
    round_trip = type(cycle).from_dict(json.loads(json.dumps(cycle.to_dict())))
    assert round_trip == cycle


@pytest.mark.parametrize("value", ["2010-13-01", "tomorrow", 20100301, True])
def test_http_body_bad_as_of_says_what_to_send(value: object) -> None:
    with pytest.raises(BadRequest, match=r"as_of=.*expected a date \"YYYY-MM-DD\""):
        parse_retrain_request(json.dumps({"as_of": value}), ENV)


def test_fetch_activity_cuts_at_as_of_and_tags_it(tmp_path: Path, use_adapters: Callable[..., None]) -> None:
    from retrain import activities

    registered: dict[str, object] = {}

    class Recording:
        def register_data(self, name: str, version: str, path: str, tags: dict[str, str]) -> object:
            registered.update(name=name, version=version, tags=tags)

            class Asset:
                def to_dict(self) -> dict[str, str]:
                    return {"name": name, "version": version}

            return Asset()

    use_adapters(platform=Recording())
    out = activities.fetch_data(
        {
            "ticker": "MSFT",
            "source": "sample",
            "lookback_days": 900,
            "as_of": "2011-01-07",
            "instance_id": "i",
        }
    )
    assert out["last_date"] == "2011-01-07"
    assert registered["version"].startswith("20110107-")
    assert registered["tags"]["as_of"] == "2011-01-07"
