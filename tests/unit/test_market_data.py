"""Market data: validation at the edge, the sources (yfinance offline through the source adapter
`YahooDownloader` with its download call returning frames shaped like yfinance 1.7's), tags, content versions, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrain import market_data as md
from retrain.market_data import (
    MarketDataError,
    fetch_prices,
    validate_prices,
    validate_ticker,
    write_snapshot,
)


def make_prices(n: int = 300, start: str = "2020-01-02", seed: int = 0) -> pd.DataFrame:
    """A plausible business-day OHLCV series (only for validation/snapshot mechanics; the sources below
    are tested on real data)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame(
        {
            "Date": pd.bdate_range(start, periods=n),
            "Open": close * 0.995,
            "High": close * 1.01,
            "Low": close * 0.99,
            "Close": close,
            "Volume": rng.integers(1_000_000, 5_000_000, n),
        }
    )


def yf_frame(prices: pd.DataFrame, ticker: str, *, tz: str | None = "America/New_York") -> pd.DataFrame:
    """What `yf.download(ticker, auto_adjust=True, multi_level_index=True)` returns in yfinance 1.7:
    columns MultiIndex (Price, Ticker) sorted by price, a Date index (tz-aware unless ignore_tz)."""
    index = pd.DatetimeIndex(prices["Date"], name="Date")
    if tz:
        index = index.tz_localize(tz)
    flat = prices.drop(columns="Date").set_index(index)
    flat.columns = pd.MultiIndex.from_product([flat.columns, [ticker]], names=["Price", "Ticker"])
    return flat.sort_index(axis=1, level=0)


def yf_empty_frame(ticker: str) -> pd.DataFrame:
    """yfinance 1.7's answer when offline or the ticker is unknown (observed: no exception, this frame)."""
    columns = pd.MultiIndex.from_product(
        [["Adj Close", "Close", "High", "Low", "Open", "Volume"], [ticker]], names=["Price", "Ticker"]
    )
    return pd.DataFrame(index=pd.DatetimeIndex([], dtype="datetime64[s]"), columns=columns, dtype="float64")


# ---------------------------------------------------------------------------------------------- tickers


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("msft", "MSFT"),
        (" brk.b ", "BRK.B"),
        ("^gspc", "^GSPC"),
        ("EURUSD=X", "EURUSD=X"),
        ("BTC-USD", "BTC-USD"),
    ],
)
def test_validate_ticker_accepts_and_upper_cases(raw: str, expected: str) -> None:
    assert validate_ticker(raw) == expected


@pytest.mark.parametrize("raw", ["", "../etc", "MS FT", "a/b", "X" * 16, "MSFT;rm", "ü", "..\\x"])
def test_validate_ticker_rejects_anything_that_could_become_a_path(raw: str) -> None:
    with pytest.raises(MarketDataError, match="invalid ticker"):
        validate_ticker(raw)


def test_validate_ticker_rejects_non_strings() -> None:
    with pytest.raises(MarketDataError, match="must be a string"):
        validate_ticker(None)  # type: ignore[arg-type]


def test_bad_ticker_is_rejected_before_any_file_is_written(tmp_path: Path) -> None:
    with pytest.raises(MarketDataError, match="invalid ticker"):
        write_snapshot(make_prices(), "../../evil", tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "ticker, name",
    [
        ("MSFT", "msft-daily"),
        ("BRK-B", "brk-b-daily"),
        ("BRK.B", f"brk-b--{hashlib.sha256(b'BRK.B').hexdigest()[:6]}-daily"),  # not BRK-B's asset
        ("^GSPC", f"gspc--{hashlib.sha256(b'^GSPC').hexdigest()[:6]}-daily"),
        ("EURUSD=X", f"eurusd-x--{hashlib.sha256(b'EURUSD=X').hexdigest()[:6]}-daily"),
    ],
)
def test_asset_name(ticker: str, name: str) -> None:
    assert md.asset_name(ticker) == name


# ---------------------------------------------------------------------------------------------- validation


def test_valid_frame_comes_back_in_canonical_shape() -> None:
    raw = make_prices()
    raw["Adj Close"] = raw["Close"]  # extra columns are dropped
    out = validate_prices(raw[["Volume", "Close", "Adj Close", "Low", "High", "Open", "Date"]])
    assert list(out.columns) == list(md.COLUMNS)
    assert out["Date"].dtype == "datetime64[ns]"
    assert out["Volume"].dtype == "int64"
    assert out["Close"].tolist() == raw["Close"].tolist()


def test_rejects_missing_columns_and_names_them() -> None:
    with pytest.raises(
        MarketDataError,
        match=r"missing column\(s\) High, Volume in the header row \(4 column\(s\) found\); send a header row",
    ):
        validate_prices(make_prices().drop(columns=["High", "Volume"]))


def test_rejects_too_few_rows_and_min_rows_is_a_parameter() -> None:
    short = make_prices(n=md.MIN_ROWS - 1)
    with pytest.raises(MarketDataError, match=rf"{md.MIN_ROWS - 1} rows, at least {md.MIN_ROWS}"):
        validate_prices(short)
    assert len(validate_prices(short, min_rows=10)) == md.MIN_ROWS - 1


def test_rejects_duplicate_dates() -> None:
    df = make_prices()
    df.loc[10, "Date"] = df.loc[9, "Date"]
    with pytest.raises(
        MarketDataError, match=r"2 rows share a date \(first at row 9 .*one row per trading day"
    ):
        validate_prices(df)


def test_rejects_dates_out_of_order_instead_of_sorting() -> None:
    df = make_prices()
    df.loc[[5, 6], "Date"] = df.loc[[6, 5], "Date"].to_numpy()
    with pytest.raises(MarketDataError, match=r"not strictly increasing \(first at row 6 .*oldest first"):
        validate_prices(df)


@pytest.mark.parametrize(
    "column, value, rule",
    [
        ("Close", np.nan, "> 0"),
        ("Open", np.inf, "> 0"),
        ("Low", 0.0, "> 0"),
        ("High", -1.0, "> 0"),
        ("Close", "abc", "> 0"),
        ("Volume", -5, ">= 0"),
        ("Volume", np.nan, ">= 0"),
    ],
)
def test_rejects_non_finite_or_non_positive_values(column: str, value: object, rule: str) -> None:
    df = make_prices().astype({column: "object"})
    df.loc[42, column] = value
    with pytest.raises(
        MarketDataError, match=rf"1 value\(s\) of {column} are not finite and {rule} \(first at row 42"
    ):
        validate_prices(df)


def test_zero_volume_is_allowed() -> None:  # FX and some indices report no volume
    df = make_prices()
    df["Volume"] = 0
    assert (validate_prices(df)["Volume"] == 0).all()


def test_rejects_unreadable_dates() -> None:
    df = make_prices().astype({"Date": "object"})
    df.loc[3, "Date"] = "not a date"
    with pytest.raises(
        MarketDataError, match=r"could not be read as dates \(first at row 3\); send dates as YYYY-MM-DD"
    ):
        validate_prices(df)


def test_tz_aware_dates_keep_their_local_trading_day() -> None:
    df = make_prices()
    df["Date"] = df["Date"].dt.tz_localize("Asia/Tokyo")  # midnight Tokyo is the previous day in UTC
    out = validate_prices(df)
    assert out["Date"].dt.tz is None
    assert out["Date"].tolist() == make_prices()["Date"].tolist()


def test_rejects_non_frames() -> None:
    with pytest.raises(MarketDataError, match="expected a pandas DataFrame"):
        validate_prices([1, 2, 3])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- snapshots


def test_snapshot_file_tags_and_version(tmp_path: Path) -> None:
    prices = make_prices()
    snap = write_snapshot(prices, "msft", tmp_path, source="sample")
    content = snap.path.read_bytes()
    assert snap.sha256 == hashlib.sha256(content).hexdigest()
    last_day = prices["Date"].iloc[-1].strftime("%Y%m%d")
    assert snap.version == f"{last_day}-{snap.sha256[:12]}"
    assert snap.name == "msft-daily"
    assert snap.path == tmp_path / f"msft-daily-{snap.version}.csv"
    close = prices["Close"]
    assert snap.tags == {
        "Length": "300",
        "Start": prices["Date"].iloc[0].strftime("%Y-%m-%d"),
        "End": prices["Date"].iloc[-1].strftime("%Y-%m-%d"),
        "Median": f"{close.median():.4f}",
        "SD": f"{close.std():.4f}",
        "sha256": snap.sha256,
        "ticker": "MSFT",
        "source": "sample",
    }
    assert all(isinstance(v, str) for v in snap.tags.values())
    # The file is the data: Date as YYYY-MM-DD then OHLCV, and it reads back to the same frame.
    lines = content.decode().splitlines()
    assert lines[0] == "Date,Open,High,Low,Close,Volume"
    assert lines[1].startswith(prices["Date"].iloc[0].strftime("%Y-%m-%d") + ",")
    back = md.read_snapshot(snap.path)
    assert json.loads(json.dumps(snap.to_dict())) == {
        "path": str(snap.path),
        "name": "msft-daily",
        "version": snap.version,
        "sha256": snap.sha256,
        "tags": snap.tags,
    }
    pd.testing.assert_frame_equal(back, validate_prices(prices))


def test_same_data_gives_same_version_and_the_file_is_not_rewritten(tmp_path: Path) -> None:
    first = write_snapshot(make_prices(), "MSFT", tmp_path)
    stamp = first.path.stat().st_mtime_ns
    os.utime(first.path, ns=(stamp - 10**9, stamp - 10**9))  # a rewrite would move mtime forward again
    again = write_snapshot(make_prices(), "MSFT", tmp_path)
    assert again == first
    assert first.path.stat().st_mtime_ns == stamp - 10**9
    assert len(list(tmp_path.iterdir())) == 1


def test_two_different_snapshots_ending_on_the_same_day_do_not_collide(tmp_path: Path) -> None:
    a = make_prices(seed=1)
    b = a.copy()
    b.loc[100, "Close"] *= 1.001  # one corrected price, same last date
    sa, sb = write_snapshot(a, "MSFT", tmp_path), write_snapshot(b, "MSFT", tmp_path)
    assert sa.version[:8] == sb.version[:8]
    assert sa.version != sb.version and sa.path != sb.path
    assert sa.path.read_bytes() != sb.path.read_bytes()


def test_source_tag_comes_from_the_fetched_frame(tmp_path: Path) -> None:
    prices = make_prices()
    prices.attrs["source"] = "yfinance"
    assert write_snapshot(prices, "MSFT", tmp_path).tags["source"] == "yfinance"
    assert "source" not in write_snapshot(make_prices(seed=3), "MSFT", tmp_path).tags


def test_failed_write_leaves_no_file_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(md.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_snapshot(make_prices(), "MSFT", tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp file


def test_failed_rename_leaves_no_file_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_replace(src: str, dst: str) -> None:
        raise PermissionError("rename refused")

    monkeypatch.setattr(md.os, "replace", broken_replace)
    with pytest.raises(PermissionError):
        write_snapshot(make_prices(), "MSFT", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_altered_existing_version_is_not_overwritten(tmp_path: Path) -> None:
    snap = write_snapshot(make_prices(), "MSFT", tmp_path)
    snap.path.write_text("tampered\n")
    with pytest.raises(MarketDataError, match="exists with different content.*immutable"):
        write_snapshot(make_prices(), "MSFT", tmp_path)
    assert snap.path.read_text() == "tampered\n"


def test_snapshot_validates_its_input(tmp_path: Path) -> None:
    with pytest.raises(MarketDataError, match="at least 250"):
        write_snapshot(make_prices(n=20), "MSFT", tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- yfinance


class FakeYahoo:
    """The yfinance source adapter (`YahooDownloader`) with its one network call, `download`, replaced by
    answers the test sets (frames shaped like yfinance 1.7's, or exceptions), and its pauses recorded
    instead of slept."""

    def __init__(self, attempts: int = md.DEFAULT_YF_ATTEMPTS, backoff_s: float = md.DEFAULT_YF_BACKOFF_S):
        self.calls: list[tuple[tuple, dict]] = []
        self.answers: list[object] = []  # one per attempt; the last one repeats
        self.slept: list[float] = []
        self.yahoo = md.YahooDownloader(
            download=self._download, attempts=attempts, backoff_s=backoff_s, sleep=self.slept.append
        )

    def _download(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        result = self.answers[min(len(self.calls), len(self.answers)) - 1]
        if callable(result):
            result = result()
        if isinstance(result, Exception):
            raise result
        return result


@pytest.fixture
def fake_download():
    """(calls, answer, yahoo): setting answer["frame"] sets the download's answer (every attempt); pass
    yahoo=... to fetch_prices."""
    fake = FakeYahoo()

    class _Answer(dict):
        def __setitem__(self, key: str, value: object) -> None:
            super().__setitem__(key, value)
            fake.answers[:] = [value]

    return fake.calls, _Answer(), fake.yahoo


def test_yfinance_multiindex_tz_aware_frame_is_flattened(fake_download) -> None:
    calls, answer, yahoo = fake_download
    prices = make_prices()
    answer["frame"] = yf_frame(prices, "MSFT")
    out = fetch_prices(
        "msft", source="yfinance", yahoo=yahoo, lookback_days=500, end="2021-03-01", timeout=7.5
    )
    assert list(out.columns) == list(md.COLUMNS)
    assert out["Date"].dt.tz is None
    assert out["Date"].tolist() == prices["Date"].tolist()
    np.testing.assert_allclose(out["Close"], prices["Close"])
    assert out.attrs["source"] == "yfinance"
    ((args, kwargs),) = calls
    assert args == ("MSFT",)
    assert kwargs["timeout"] == 7.5
    assert kwargs["start"] == "2019-10-18" and kwargs["end"] == "2021-03-02"  # end is exclusive in yfinance
    assert kwargs["auto_adjust"] is True and kwargs["progress"] is False


def test_yfinance_without_lookback_asks_for_all_history(fake_download) -> None:
    calls, answer, yahoo = fake_download
    answer["frame"] = yf_frame(make_prices(), "MSFT", tz=None)
    fetch_prices("MSFT", source="yfinance", yahoo=yahoo)
    ((_, kwargs),) = calls
    assert kwargs["period"] == "max" and "start" not in kwargs


def test_yfinance_group_by_ticker_layout_is_understood(fake_download) -> None:
    _, answer, yahoo = fake_download
    answer["frame"] = yf_frame(make_prices(), "MSFT").swaplevel(0, 1, axis=1)
    assert len(fetch_prices("MSFT", source="yfinance", yahoo=yahoo)) == 300


def test_yfinance_empty_frame_names_ticker_and_suggests_sample(fake_download) -> None:
    _, answer, yahoo = fake_download
    answer["frame"] = yf_empty_frame("NOPE")
    with pytest.raises(MarketDataError, match=r"no data for NOPE.*offline.*--source sample"):
        fetch_prices("NOPE", source="yfinance", yahoo=yahoo)


def test_yfinance_all_nan_rows_count_as_empty(fake_download) -> None:
    _, answer, yahoo = fake_download
    frame = yf_frame(make_prices(n=5), "MSFT")
    answer["frame"] = frame * np.nan
    with pytest.raises(MarketDataError, match="no data for MSFT"):
        fetch_prices("MSFT", source="yfinance", yahoo=yahoo)


def test_yfinance_exception_becomes_market_data_error(fake_download) -> None:
    _, answer, yahoo = fake_download
    answer["frame"] = TimeoutError("read timed out")
    with pytest.raises(
        MarketDataError,
        match=r"yfinance failed for MSFT after 4 attempt\(s\) over 14 s: TimeoutError.*blob:.*--source sample",
    ):
        fetch_prices("MSFT", source="yfinance", yahoo=yahoo)


def test_yfinance_frame_is_validated_like_any_other(fake_download) -> None:
    _, answer, yahoo = fake_download
    prices = make_prices()
    prices.loc[7, "Close"] = -1.0
    answer["frame"] = yf_frame(prices, "MSFT")
    with pytest.raises(MarketDataError, match=r"yfinance data for MSFT: 1 value\(s\) of Close"):
        fetch_prices("MSFT", source="yfinance", yahoo=yahoo)


def test_yfinance_error_log_is_included_in_the_message(fake_download) -> None:
    import logging

    _, answer, yahoo = fake_download

    def logs_then_returns_empty() -> pd.DataFrame:  # what yfinance does for a delisted symbol
        logging.getLogger("yfinance").error(
            "['ZZZZ']: YFTzMissingError('possibly delisted; no timezone found')"
        )
        return yf_empty_frame("ZZZZ")

    answer["frame"] = logs_then_returns_empty
    with pytest.raises(MarketDataError, match="possibly delisted"):
        fetch_prices("ZZZZ", source="yfinance", yahoo=yahoo)


# ---------------------------------------------------------------------------------------------- sample


def test_sample_is_real_split_adjusted_msft() -> None:
    prices = fetch_prices("MSFT", source="sample")
    assert prices.attrs["source"] == "sample"
    assert len(prices) > 3000
    assert prices["Date"].iloc[0] == pd.Timestamp("2000-03-01")
    log_returns = np.log(prices["Close"]).diff().abs()
    # The raw file halves the price on 2003-02-18 (2:1 split); adjusted, no day moves more than 40 %.
    assert log_returns.max() < 0.4
    raw = pd.read_csv(md.sample_path())
    raw_msft = raw[raw["Ticker"] == "MSFT"]
    assert np.log(raw_msft["Close"]).diff().abs().max() > 0.6  # the split really is in the source
    # OHLC were scaled together: the intraday shape is intact.
    assert (prices["High"] >= prices["Low"]).all()
    np.testing.assert_allclose(prices["Close"].to_numpy(), raw_msft["Adj Close"].to_numpy(), atol=1e-6)


def test_sample_lookback_counts_back_from_the_last_date() -> None:
    prices = fetch_prices("IBM", source="sample", lookback_days=365)
    assert prices["Date"].iloc[-1] == pd.Timestamp("2013-03-01")
    assert prices["Date"].iloc[0] >= pd.Timestamp("2012-03-01")
    assert 245 <= len(prices) <= 260


def test_sample_end_cuts_the_window() -> None:
    prices = fetch_prices("GOOG", source="sample", lookback_days=730, end="2010-06-30")
    assert prices["Date"].iloc[-1] <= pd.Timestamp("2010-06-30")
    assert prices["Date"].iloc[0] >= pd.Timestamp("2008-06-30")


def test_sample_short_lookback_is_rejected_with_what_to_send() -> None:
    with pytest.raises(MarketDataError, match="at least 250 trading days.*larger lookback_days"):
        fetch_prices("MSFT", source="sample", lookback_days=30)


def test_sample_unknown_ticker_lists_available_ones() -> None:
    with pytest.raises(
        MarketDataError, match="TSLA is not in the bundled sample; it has AAPL, FB, GOOG, IBM, MSFT"
    ):
        fetch_prices("TSLA", source="sample")


# ---------------------------------------------------------------------------------------------- csv and args


def test_csv_source_with_any_case_columns(tmp_path: Path) -> None:
    prices = make_prices()
    path = tmp_path / "in.csv"
    prices.assign(Date=prices["Date"].dt.strftime("%Y-%m-%d")).rename(
        columns={"Date": "date", "Close": " CLOSE ", "Open": "open"}
    ).assign(**{"Adj Close": 1.0}).to_csv(path, index=False)
    out = fetch_prices("MSFT", source=f"csv:{path}")
    assert out.attrs["source"] == "csv"
    np.testing.assert_allclose(out["Close"], prices["Close"])
    assert out["Date"].tolist() == prices["Date"].tolist()


def test_csv_with_utc_offsets_across_a_dst_change_keeps_trading_days(tmp_path: Path) -> None:
    # What `yf.download(...).to_csv()` writes with tz-aware dates: -05:00 in winter, -04:00 in summer.
    prices = make_prices(start="2023-06-01")
    flat = yf_frame(prices, "MSFT").xs("MSFT", axis=1, level="Ticker")
    path = tmp_path / "yf.csv"
    flat.to_csv(path)
    text = path.read_text()
    assert "-05:00" in text and "-04:00" in text
    out = fetch_prices("MSFT", source=f"csv:{path}")
    assert out["Date"].tolist() == prices["Date"].tolist()


def test_csv_source_filters_a_ticker_column(tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    pd.concat([make_prices().assign(Ticker="AAA"), make_prices(seed=5).assign(Ticker="BBB")]).to_csv(
        path, index=False
    )
    out = fetch_prices("bbb", source=f"csv:{path}")
    np.testing.assert_allclose(out["Close"], make_prices(seed=5)["Close"])
    with pytest.raises(MarketDataError, match="no rows for CCC"):
        fetch_prices("CCC", source=f"csv:{path}")


def test_csv_source_errors(tmp_path: Path) -> None:
    with pytest.raises(MarketDataError, match="does not exist"):
        fetch_prices("MSFT", source=f"csv:{tmp_path / 'nope.csv'}")
    bad = tmp_path / "bad.csv"
    make_prices().drop(columns="Volume").to_csv(bad, index=False)
    with pytest.raises(MarketDataError, match=rf"CSV {bad}: missing column\(s\) Volume"):
        fetch_prices("MSFT", source=f"csv:{bad}")
    with pytest.raises(MarketDataError, match="needs a path"):
        fetch_prices("MSFT", source="csv:")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"source": "bloomberg"}, "unknown source 'bloomberg'"),
        ({"lookback_days": 0}, "lookback_days must be a positive"),
        ({"lookback_days": 1.5}, "lookback_days must be a positive"),
        ({"timeout": 0}, "timeout must be a positive"),
        ({"end": "yesterday"}, "a date must be YYYY-MM-DD"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(MarketDataError, match=message):
        fetch_prices("MSFT", **{"source": "sample", **kwargs})


def test_module_does_not_import_yfinance_until_used() -> None:
    import subprocess
    import sys

    code = "import sys, retrain.market_data; print('yfinance' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --- what a file's error message may say (issue 9 point 1) ---------------------------------------------------
def test_errors_never_quote_file_contents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    monkeypatch.setenv("RETRAIN_TEST_SECRET", secret)
    header_secret = tmp_path / "header.csv"
    header_secret.write_text(f"Date,{secret}\n2020-01-01,1\n")
    bad_date = tmp_path / "dates.csv"
    rows = make_prices(5)
    rows["Date"] = rows["Date"].dt.strftime("%Y-%m-%d")
    rows.loc[2, "Date"] = secret
    rows.to_csv(bad_date, index=False)
    other_ticker = tmp_path / "tickers.csv"
    other_ticker.write_text(f"Ticker,Date,Open,High,Low,Close,Volume\n{secret[:10]},2020-01-01,1,1,1,1,1\n")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe" + secret.encode() + b"\x00\x81")
    for path in ("/proc/self/environ", header_secret, bad_date, other_ticker, binary):
        with pytest.raises(MarketDataError) as caught:
            md.fetch_prices("MSFT", source=f"csv:{path}", min_rows=1)
        message = str(caught.value)
        assert secret not in message and secret[:10] not in message, message
        assert str(path) in message  # it names the file
    with pytest.raises(MarketDataError, match="at row 2"):
        md.fetch_prices("MSFT", source=f"csv:{bad_date}", min_rows=1)


def test_fetch_with_a_data_dir_reads_only_inside_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    make_prices(300).to_csv(data / "msft.csv", index=False)
    make_prices(300).to_csv(tmp_path / "outside.csv", index=False)
    (data / "link.csv").symlink_to(tmp_path / "outside.csv")
    prices = md.fetch_prices("MSFT", source="csv:msft.csv", data_dir=data)
    assert len(prices) == 300
    for name in ("../outside.csv", str(tmp_path / "outside.csv"), "link.csv", "/proc/self/environ"):
        with pytest.raises(MarketDataError, match="inside the data directory|not a file in the data"):
            md.fetch_prices("MSFT", source=f"csv:{name}", data_dir=data)
    with pytest.raises(MarketDataError) as caught:
        md.fetch_prices("MSFT", source="csv:msft.csv", data_dir=data, min_rows=1000)
    assert "CSV msft.csv:" in str(caught.value) and str(data) not in str(caught.value)


def test_request_data_dir_policy() -> None:
    assert md.request_data_dir("sample", None, None) is None
    assert md.request_data_dir("csv:/srv/x.csv", "csv:/srv/x.csv", None) is None  # the operator's own
    assert md.request_data_dir("csv:x.csv", "sample", "/srv/data") == Path("/srv/data")
    with pytest.raises(MarketDataError, match="RETRAIN_DATA_DIR"):
        md.request_data_dir("csv:x.csv", "sample", "")
