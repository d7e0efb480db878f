"""Market data for a fleet (issue 22): a source per ticker (`{ticker}`), yfinance fetching a batch in one
download call (faked at its one network call, as in test_market_data), the `fetch_batch_data` activity
on the real local platform, and ticker lists (`settings.tickers`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from retrain import activities, adapters, settings
from retrain import market_data as md
from retrain.cli.common import recent_closes
from retrain.market_data import MarketDataError, SourceUnavailable, fetch_many_prices, fetch_prices
from retrain.ports import TransientPlatformError
from retrain.triggers import BadRequest, parse_retrain_request
from retrain.workflow import InvalidCycleInput, validate_cycle_input
from tests.unit.azure_recording_transport import ArmTransport
from tests.unit.test_market_data import FakeYahoo, make_prices, yf_empty_frame, yf_frame
from tests.unit.test_price_sources import blob_reader

ENV = {"RETRAIN_TICKERS": "MSFT", "RETRAIN_SOURCE": "sample"}


def batch_frame(frames: dict[str, pd.DataFrame | None]) -> pd.DataFrame:
    """What `yf.download([...])` returns for daily data: one (Price, Ticker) column block per ticker on the
    union of the dates (tz-naive: ignore_tz), a ticker it could not get (None here) all NaN."""
    got = [yf_frame(p, t, tz=None) for t, p in frames.items() if p is not None]
    index = pd.DatetimeIndex([], name="Date")
    for frame in got:
        index = index.union(frame.index)
    blocks = [
        yf_frame(p, t, tz=None).reindex(index) if p is not None else yf_empty_frame(t).reindex(index)
        for t, p in frames.items()
    ]
    return pd.concat(blocks, axis=1).sort_index(axis=1, level=0)


# ------------------------------------------------------------------------------------ {ticker} sources


def test_ticker_fills_a_csv_path_with_the_ticker_as_it_is(tmp_path: Path) -> None:
    for i, ticker in enumerate(("BRK.B", "^GSPC")):
        make_prices(seed=i).to_csv(tmp_path / f"{ticker}.csv", index=False)
    got = fetch_prices("brk.b", source="csv:{ticker}.csv", data_dir=tmp_path)  # a request's source
    pd.testing.assert_series_equal(got["Close"], make_prices(seed=0)["Close"])
    assert len(fetch_prices("^GSPC", source=f"csv:{tmp_path}/{{ticker}}.csv")) == 300  # the operator's
    assert md.fill_source("csv:/data/{ticker}/daily.csv", "^gspc") == "csv:/data/^GSPC/daily.csv"
    with pytest.raises(MarketDataError, match="is not a file in the data directory") as missing:
        fetch_prices("MSFT", source="csv:{ticker}.csv", data_dir=tmp_path)
    assert "csv:MSFT.csv" in str(missing.value)  # the refusal names the file the ticker needed
    with pytest.raises(MarketDataError, match="would name a directory"):
        fetch_prices("..", source="csv:/data/{ticker}/daily.csv")


@pytest.mark.parametrize("source", ["csv:{symbol}.csv", "blob:c/{TICKER}.csv", "csv:{ticker.csv"])
def test_an_unknown_placeholder_is_refused_at_every_edge(source: str, tmp_path: Path) -> None:
    expected = "send e.g. csv:{ticker}.csv or blob:CONTAINER/daily/{ticker}.csv"
    with pytest.raises(MarketDataError, match=r"the one placeholder is \{ticker\}") as caught:
        fetch_prices("MSFT", source=source)
    assert expected in str(caught.value)
    env = {**ENV, "RETRAIN_DATA_DIR": str(tmp_path)}
    with pytest.raises(BadRequest, match=r"the one placeholder is \{ticker\}"):
        parse_retrain_request(json.dumps({"source": source}), env)
    with pytest.raises(BadRequest, match=r"the one placeholder is \{ticker\}"):  # the operator's own too
        parse_retrain_request(b"", {**env, "RETRAIN_SOURCE": source})
    cycle = parse_retrain_request(b"", ENV).to_dict()
    with pytest.raises(InvalidCycleInput, match=r"the one placeholder is \{ticker\}"):
        validate_cycle_input({**cycle, "source": source})


def test_a_request_with_a_ticker_source_is_checked_for_its_ticker_and_kept_in_the_data_dir(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "AAPL.csv").write_text("Date,Open,High,Low,Close,Volume\n")
    env = {**ENV, "RETRAIN_DATA_DIR": str(tmp_path / "data")}
    cycle = parse_retrain_request(json.dumps({"ticker": "aapl", "source": "csv:{ticker}.csv"}), env)
    assert cycle.source == "csv:{ticker}.csv"  # filled when fetched, per ticker
    with pytest.raises(BadRequest, match="'csv:IBM.csv' is not a file in the data directory"):
        parse_retrain_request(json.dumps({"ticker": "IBM", "source": "csv:{ticker}.csv"}), env)
    # Without a ticker (a fleet's source): inside the directory is checked, each file when fetched.
    md.check_request_source("csv:{ticker}.csv", "sample", env["RETRAIN_DATA_DIR"])
    with pytest.raises(MarketDataError, match="is not inside the data directory"):
        md.check_request_source("csv:../{ticker}.csv", "sample", env["RETRAIN_DATA_DIR"])


# ------------------------------------------------------------------------------------ yfinance batches


def test_yfinance_fetches_the_batch_in_one_call_and_names_the_tickers_it_could_not_get() -> None:
    fake = FakeYahoo()
    no_close = yf_frame(make_prices(seed=2), "CCC", tz=None).drop(columns="Close", level=0)

    def answer() -> pd.DataFrame:
        logging.getLogger("yfinance").error(
            "['NOPE']: YFTzMissingError('possibly delisted; no timezone found')"
        )
        frame = batch_frame({"AAA": make_prices(), "BBB": make_prices(seed=1), "NOPE": None})
        return pd.concat([frame, no_close], axis=1)

    fake.answers[:] = [answer]
    got = fetch_many_prices(["aaa", "BBB", "NOPE", "CCC", "AAA", "bad ticker"], yahoo=fake.yahoo)
    ((args, kwargs),) = fake.calls  # one download for the whole batch
    assert sorted(args[0]) == ["AAA", "BBB", "CCC", "NOPE"] and kwargs["auto_adjust"] is True
    assert list(got.prices) == ["AAA", "BBB"]
    pd.testing.assert_series_equal(got.prices["BBB"]["Close"], make_prices(seed=1)["Close"])
    assert set(got.failed) == {"NOPE", "CCC", "bad ticker"}
    assert "no data for NOPE" in got.failed["NOPE"] and "possibly delisted" in got.failed["NOPE"]
    assert "missing column(s) Close" in got.failed["CCC"]
    assert "invalid ticker" in got.failed["bad ticker"]
    assert fake.slept == []  # nothing transient: no retry


def test_a_batch_retries_only_the_rate_limited_tickers_and_raises_when_yahoo_gives_nothing() -> None:
    fake = FakeYahoo(attempts=3, backoff_s=0.5)

    def first() -> pd.DataFrame:
        logging.getLogger("yfinance").error("['BBB']: YFRateLimitError('Too Many Requests. Rate limited.')")
        return batch_frame({"AAA": make_prices(), "BBB": None})

    fake.answers[:] = [first, ConnectionError("reset by peer"), batch_frame({"BBB": make_prices(seed=1)})]
    got = fetch_many_prices(["AAA", "BBB"], yahoo=fake.yahoo)
    assert list(got.prices) == ["AAA", "BBB"] and got.failed == {}
    assert [sorted(args[0]) for args, _ in fake.calls] == [["AAA", "BBB"], ["BBB"], ["BBB"]]
    assert fake.slept == [0.5, 1.0]

    def limited() -> pd.DataFrame:
        logging.getLogger("yfinance").error("['AAA', 'BBB']: YFRateLimitError('Rate limited.')")
        return batch_frame({"AAA": None, "BBB": None})

    fake = FakeYahoo(attempts=2, backoff_s=0)
    fake.answers[:] = [limited]
    with pytest.raises(
        SourceUnavailable, match=r"yfinance failed for every ticker of the batch \(AAA, BBB\)"
    ):
        fetch_many_prices(["AAA", "BBB"], yahoo=fake.yahoo)
    assert len(fake.calls) == 2


def test_one_file_for_every_ticker_is_read_once_for_the_batch() -> None:
    transport = ArmTransport()
    many = pd.concat([make_prices().assign(Ticker="AAA"), make_prices(seed=4).assign(Ticker="BBB")])
    transport.blobs["/prices/all.csv"] = many.to_csv(index=False).encode()
    got = fetch_many_prices(["AAA", "BBB", "CCC"], source="blob:prices/all.csv", blob=blob_reader(transport))
    pd.testing.assert_series_equal(got.prices["BBB"]["Close"], make_prices(seed=4)["Close"])
    assert list(got.failed) == ["CCC"] and "no rows for CCC" in got.failed["CCC"]
    assert len([c for c in transport.calls if c.method == "GET"]) == 1


# ------------------------------------------------------------------------------------ the activity


@pytest.fixture
def local_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RETRAIN_PLATFORM", "local")
    monkeypatch.setenv("RETRAIN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RETRAIN_SOURCE", "sample")
    adapters.reset()
    yield tmp_path
    adapters.reset()


def test_fetch_batch_data_registers_each_tickers_asset_and_names_the_failed(
    local_platform: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = local_platform / "data"
    data.mkdir()
    make_prices().to_csv(data / "AAA.csv", index=False)
    make_prices(seed=1).to_csv(data / "BRK.B.csv", index=False)
    make_prices(n=100).to_csv(data / "SHORT.csv", index=False)
    monkeypatch.setenv("RETRAIN_DATA_DIR", str(data))
    payload = {
        "tickers": ["AAA", "BRK.B", "SHORT", "GONE"],
        "source": "csv:{ticker}.csv",
        "lookback_days": None,
        "as_of": None,
        "instance_id": "fleet-x-b0000",
        "asset_names": {"AAA": "aaa-daily"},
    }
    out = activities.fetch_batch_data(payload)
    assert list(out["fetched"]) == ["AAA", "BRK.B"]
    assert out["failed"] == {
        "SHORT": "CSV SHORT.csv: 100 rows, at least 250 trading days are needed to train; send a longer "
        "history (a larger lookback_days, or a CSV with more rows)",
        "GONE": str(md.data_refusal("csv:GONE.csv", "is not a file in the data directory")),
    }
    brk = out["fetched"]["BRK.B"]
    assert brk["rows"] == 300 and len(brk["recent_closes"]) == activities.SMOKE_CLOSES
    assert brk["data"]["name"] == md.asset_name("BRK.B")  # no name sent: the ticker's asset name
    assert out["fetched"]["AAA"]["data"]["name"] == "aaa-daily"
    tags = brk["data"]["tags"]
    assert (tags["ticker"], tags["source"], tags["orchestration_instance_id"]) == (
        "BRK.B",
        "csv:BRK.B.csv",
        "fleet-x-b0000",
    )
    assert brk["data"]["version"] == f"{brk['last_date'].replace('-', '')}-{tags['sha256'][:12]}"
    assert activities.fetch_batch_data(payload) == out  # a retried activity: the same assets
    single = {"ticker": "BRK.B", "source": "csv:{ticker}.csv", "instance_id": "fleet-x-b0000"}
    assert activities.fetch_data({**single, "asset_name": md.asset_name("BRK.B")}) == brk  # one cycle too


def test_a_relative_csv_retrain_source_is_read_inside_the_data_dir_whatever_the_working_directory(
    local_platform: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RETRAIN_SOURCE=csv:{ticker}.csv with RETRAIN_DATA_DIR set: the host read it relative to its working
    directory (where `retrain serve` happened to start), so every ticker of a fleet failed, and so did a
    request naming the same source (it IS the operator's source); both now read RETRAIN_DATA_DIR."""
    data = local_platform / "prices"
    data.mkdir()
    make_prices().to_csv(data / "AAA.csv", index=False)
    monkeypatch.setenv("RETRAIN_DATA_DIR", str(data))
    monkeypatch.setenv("RETRAIN_SOURCE", "csv:{ticker}.csv")
    monkeypatch.chdir(local_platform)  # not the data directory
    payload = {"tickers": ["AAA", "GONE"], "source": "csv:{ticker}.csv", "instance_id": "f-b0000"}
    out = activities.fetch_batch_data(payload)
    assert list(out["fetched"]) == ["AAA"] and "csv:GONE.csv" in out["failed"]["GONE"]
    assert activities.fetch_data({"ticker": "AAA", "source": "csv:{ticker}.csv", "instance_id": "c"})
    assert recent_closes("AAA", "csv:{ticker}.csv", None)  # `retrain predict` reads where the host reads
    assert md.operator_data_dir("csv:{ticker}.csv", str(data)) == data
    assert md.operator_data_dir(f"csv:{data}/{{ticker}}.csv", str(data)) is None  # absolute: as named
    assert md.operator_data_dir("csv:x.csv", None) is None  # no data dir: the working directory, as before
    assert md.operator_data_dir("sample", str(data)) is None


def test_fetch_batch_data_raises_for_durable_to_retry_when_the_whole_source_fails(
    local_platform: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeYahoo(attempts=1)
    fake.answers[:] = [TimeoutError("read timed out")]
    monkeypatch.setattr(
        md.YahooDownloader, "from_settings", classmethod(lambda cls, environ=None: fake.yahoo)
    )
    registered = activities.report_failures(activities.fetch_batch_data)
    payload = {"tickers": ["AAA", "BBB"], "source": "yfinance", "instance_id": "i", "asset_names": {}}
    with pytest.raises(TransientPlatformError, match="every ticker of the batch"):
        registered(payload)
    assert len(fake.calls) == 1


# ------------------------------------------------------------------------------------ ticker lists


def test_tickers_inline_or_from_a_file_canonical_and_deduplicated(tmp_path: Path) -> None:
    assert settings.tickers({"RETRAIN_TICKERS": " msft, brk.b,,MSFT "}) == ["MSFT", "BRK.B"]
    assert settings.tickers({}) == ["MSFT"]  # the default
    (tmp_path / "tickers.txt").write_text("\ufeff# the fleet\nmsft\n\n^gspc   # S&P 500\nMSFT\n")
    env = {"RETRAIN_TICKERS": "@tickers.txt"}
    assert settings.tickers(env, cwd=tmp_path) == ["MSFT", "^GSPC"]  # relative to the working directory
    assert settings.tickers({"RETRAIN_TICKERS": f"@{tmp_path}/tickers.txt"}) == ["MSFT", "^GSPC"]


@pytest.mark.parametrize(
    "value, content, message",
    [
        ("MSFT,BRK B", None, r"RETRAIN_TICKERS: item 2: invalid ticker 'BRK B'"),
        (
            "@t.txt",
            "MSFT\nAAPL, IBM\n",
            r"RETRAIN_TICKERS=@t.txt: line 2: invalid ticker .*one ticker per line",
        ),
        ("@none.txt", None, r"RETRAIN_TICKERS=@none.txt: no such file \(.*none.txt\); send comma-separated"),
        ("@t.txt", "# nothing\n\n", r"RETRAIN_TICKERS=@t.txt names no ticker: send comma-separated"),
        (" , ", None, "RETRAIN_TICKERS names no ticker"),
    ],
)
def test_a_bad_ticker_list_is_refused_naming_the_entry(
    value: str, content: str | None, message: str, tmp_path: Path
) -> None:
    if content is not None:
        (tmp_path / "t.txt").write_text(content)
    with pytest.raises(settings.SettingsError, match=message):
        settings.tickers({"RETRAIN_TICKERS": value}, cwd=tmp_path)


def test_a_ticker_file_is_the_default_ticker_of_a_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fleet.txt").write_text("ibm\naapl\n")
    monkeypatch.chdir(tmp_path)
    assert parse_retrain_request(b"", {**ENV, "RETRAIN_TICKERS": "@fleet.txt"}).ticker == "IBM"
    with pytest.raises(BadRequest, match="ticker: none sent, and the default cannot be read: .*no such file"):
        parse_retrain_request(b"", {**ENV, "RETRAIN_TICKERS": "@missing.txt"})
