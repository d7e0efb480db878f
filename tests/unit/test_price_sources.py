"""The sources production depends on (issue 19 point 9): yfinance retried with back-off when Yahoo
rate-limits or the network fails, through the source adapter (`YahooDownloader`) with its download call
replaced; and the `blob:` source read through the real azure-storage-blob client over the recording
azure-core transport (tests/unit/azure_recording_transport.py), parsed like a `csv:` file."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from retrain import market_data as md
from retrain.market_data import BlobReader, MarketDataError, YahooDownloader, fetch_prices
from tests.unit.azure_recording_transport import STORAGE_ACCOUNT, ArmTransport, StaticTokenCredential
from tests.unit.test_market_data import FakeYahoo, make_prices, yf_empty_frame, yf_frame

RATE_LIMITED = "['MSFT']: YFRateLimitError('Too Many Requests. Rate limited. Try after a while.')"


def rate_limited() -> pd.DataFrame:
    """What yf.download does when Yahoo answers 429: logs the error, returns an empty frame."""
    logging.getLogger("yfinance").error(RATE_LIMITED)
    return yf_empty_frame("MSFT")


# ------------------------------------------------------------------------------------------- yfinance


def test_a_rate_limit_is_retried_with_doubling_waits_until_data_comes() -> None:
    fake = FakeYahoo()
    fake.answers[:] = [rate_limited, ConnectionError("reset by peer"), yf_frame(make_prices(), "MSFT")]
    prices = fetch_prices("MSFT", source="yfinance", yahoo=fake.yahoo)
    assert len(prices) == 300 and prices.attrs["source"] == "yfinance"
    assert len(fake.calls) == 3
    assert fake.slept == [2.0, 4.0]
    assert fake.calls[0] == fake.calls[2]  # the same request each time


def test_a_lasting_failure_names_the_ticker_the_attempts_and_the_blob_source() -> None:
    fake = FakeYahoo(attempts=3, backoff_s=0.5)
    fake.answers[:] = [rate_limited]
    with pytest.raises(MarketDataError) as caught:
        fetch_prices("MSFT", source="yfinance", yahoo=fake.yahoo)
    message = str(caught.value)
    assert message.startswith("yfinance failed for MSFT after 3 attempt(s) over 1.5 s:"), message
    assert "Rate limited" in message and "cloud IP ranges" in message
    assert "blob:CONTAINER/PATH" in message and "RETRAIN_BLOB_ACCOUNT_URL" in message
    assert len(fake.calls) == 3 and fake.slept == [0.5, 1.0]


def test_an_unknown_ticker_is_not_retried() -> None:
    fake = FakeYahoo()

    def delisted() -> pd.DataFrame:
        logging.getLogger("yfinance").error(
            "['ZZZZ']: YFTzMissingError('possibly delisted; no timezone found')"
        )
        return yf_empty_frame("ZZZZ")

    fake.answers[:] = [delisted]
    with pytest.raises(MarketDataError, match="no data for ZZZZ.*possibly delisted"):
        fetch_prices("ZZZZ", source="yfinance", yahoo=fake.yahoo)
    assert len(fake.calls) == 1 and fake.slept == []


def test_retry_settings_have_bounded_defaults_and_refuse_nonsense() -> None:
    default = YahooDownloader.from_settings({})
    assert (default.attempts, default.backoff_s) == (4, 2.0)
    assert default.waits() == [2.0, 4.0, 8.0]
    assert YahooDownloader(attempts=10, backoff_s=30).waits()[-1] == md.MAX_YF_WAIT_S  # each wait capped
    configured = YahooDownloader.from_settings(
        {"RETRAIN_YFINANCE_ATTEMPTS": "1", "RETRAIN_YFINANCE_BACKOFF_SECONDS": "0"}
    )
    assert configured.waits() == []
    for env, message in [
        ({"RETRAIN_YFINANCE_ATTEMPTS": "0"}, "RETRAIN_YFINANCE_ATTEMPTS=0: send a whole number"),
        ({"RETRAIN_YFINANCE_ATTEMPTS": "many"}, "RETRAIN_YFINANCE_ATTEMPTS='many' is not an integer"),
        ({"RETRAIN_YFINANCE_BACKOFF_SECONDS": "600"}, "RETRAIN_YFINANCE_BACKOFF_SECONDS=600.0: send seconds"),
    ]:
        with pytest.raises(MarketDataError, match=message):
            YahooDownloader.from_settings(env)


# ------------------------------------------------------------------------------------------- blob:

ACCOUNT_URL = f"https://{STORAGE_ACCOUNT}.blob.core.windows.net"


def blob_reader(transport: ArmTransport) -> BlobReader:
    """The blob source with the real BlobServiceClient over the recording transport."""
    return BlobReader(
        ACCOUNT_URL, credential=StaticTokenCredential(), client_options={"transport": transport}
    )


def vendor_csv(prices: pd.DataFrame) -> bytes:
    """A vendor's file: lower-case headers, an extra column, dates as text."""
    out = prices.assign(Date=prices["Date"].dt.strftime("%Y-%m-%d"), adj_close=1.0)
    return out.rename(columns={"Close": "close", "Volume": " VOLUME "}).to_csv(index=False).encode()


def test_blob_source_reads_the_tickers_blob_with_a_bearer_token_and_parses_it() -> None:
    transport = ArmTransport()
    prices = make_prices()
    transport.blobs["/prices/daily/MSFT.csv"] = vendor_csv(prices)
    out = fetch_prices(
        "msft", source="blob:prices/daily/{ticker}.csv", end="2021-01-29", blob=blob_reader(transport)
    )
    assert out.attrs["source"] == "blob"
    assert list(out.columns) == list(md.COLUMNS)
    assert out["Date"].iloc[-1] == pd.Timestamp("2021-01-29")
    pd.testing.assert_series_equal(
        out["Close"], prices.loc[prices["Date"] <= "2021-01-29", "Close"].reset_index(drop=True)
    )
    gets = [c for c in transport.calls if c.method == "GET"]
    assert gets, transport.calls
    assert {(c.host, c.path) for c in gets} == {
        (f"{STORAGE_ACCOUNT}.blob.core.windows.net", "/prices/daily/MSFT.csv")
    }
    assert gets[0].headers["Authorization"] == "Bearer offline-test-token"  # identity-based, no key or SAS


def test_blob_source_validates_like_csv_and_filters_a_ticker_column() -> None:
    transport = ArmTransport()
    many = pd.concat([make_prices().assign(Ticker="AAA"), make_prices(seed=4).assign(Ticker="BBB")])
    transport.blobs["/prices/all.csv"] = many.to_csv(index=False).encode()
    out = fetch_prices("BBB", source="blob:prices/all.csv", blob=blob_reader(transport))
    pd.testing.assert_series_equal(out["Close"], make_prices(seed=4)["Close"])
    bad = make_prices()
    bad.loc[7, "Close"] = -1
    transport.blobs["/prices/bad.csv"] = bad.to_csv(index=False).encode()
    with pytest.raises(
        MarketDataError, match=r"CSV blob:prices/bad.csv: 1 value\(s\) of Close are not finite"
    ):
        fetch_prices("MSFT", source="blob:prices/bad.csv", blob=blob_reader(transport))


def test_blob_source_missing_blob_and_refused_identity_say_what_to_do() -> None:
    transport = ArmTransport()
    with pytest.raises(MarketDataError, match=r"blob:prices/IBM.csv does not exist in https://.*upload"):
        fetch_prices("IBM", source="blob:prices/{ticker}.csv", blob=blob_reader(transport))
    transport.fail_next.append((403, {"x-ms-error-code": "AuthorizationPermissionMismatch"}))
    with pytest.raises(MarketDataError, match="refused the identity.*Storage Blob Data Reader"):
        fetch_prices("IBM", source="blob:prices/{ticker}.csv", blob=blob_reader(transport))


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "source blob: needs RETRAIN_BLOB_ACCOUNT_URL"),
        (
            {"RETRAIN_BLOB_ACCOUNT_URL": "http://acct.blob.core.windows.net"},
            "send the account's blob endpoint",
        ),
        ({"RETRAIN_BLOB_ACCOUNT_URL": f"{ACCOUNT_URL}/prices"}, "no container or path"),
    ],
)
def test_blob_account_setting_is_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(MarketDataError, match=message):
        BlobReader.from_settings(env)


@pytest.mark.parametrize("source", ["blob:", "blob:prices", "blob:https://evil.example/c/x.csv"])
def test_blob_source_needs_a_container_and_a_path_never_a_host(source: str) -> None:
    with pytest.raises(MarketDataError, match="send blob:CONTAINER/PATH"):
        fetch_prices("MSFT", source=source, blob=blob_reader(ArmTransport()))


def test_the_function_app_pins_what_the_blob_source_imports() -> None:
    # Azure installs requirements.txt only: a transitive copy through azure-ai-ml could change or vanish.
    from tests.unit.test_environments import _constraints, _function_app

    pins = _function_app()
    assert {"azure-storage-blob", "azure-identity"} <= set(pins)
    assert pins["azure-storage-blob"] == _constraints()["azure-storage-blob"]
