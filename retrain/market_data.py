"""Daily market data: four sources, one validated shape, immutable snapshots.

Sources (`fetch_prices(..., source=...)`):
- `yfinance`: Yahoo Finance through the `yfinance` package (imported only when used). yfinance answers an
  offline machine or an unknown ticker with an EMPTY frame, not an exception; that becomes a
  `MarketDataError` naming the ticker. Yahoo refuses or rate-limits many cloud IP ranges (Azure's among
  them): a failure that looks transient (an exception, or an empty answer whose logged reason is a rate
  limit, timeout or connection error) is retried with exponential back-off (`YahooDownloader`, settings
  `RETRAIN_YFINANCE_ATTEMPTS`, `RETRAIN_YFINANCE_BACKOFF_SECONDS`); the last failure names the ticker and
  points to the `blob:` source.
- `blob:CONTAINER/PATH`: a CSV in Azure Blob Storage, read with the Function App's identity
  (`DefaultAzureCredential`, role Storage Blob Data Reader) from the account `RETRAIN_BLOB_ACCOUNT_URL`
  (`BlobReader`). `{ticker}` in PATH becomes the ticker (`blob:prices/daily/{ticker}.csv`); without it PATH
  is one file, filtered by a Ticker column if it has one. The same parsing and validation as `csv:`. The
  account comes from a setting, not from the source text, so no request can send the identity's storage
  token to a host the operator did not choose (docs/data-sources.md).
- `sample`: real daily OHLCV for MSFT, AAPL, IBM and GOOG (2000-2013, public domain) shipped by the
  `bokeh_sampledata` package, for offline use. Its Open/High/Low/Close are unadjusted (MSFT split 2:1 in
  2003), so they are scaled by `Adj Close / Close` to make the series split-adjusted.
- `csv:PATH`: a CSV file with a Date column and Open, High, Low, Close, Volume (column names in any case).
  One rule names a file (`DATA_RULE`, the wording of every refusal, `data_refusal`): the CLI user is the
  operator and may name any path, absolute or relative to the working directory (`operator_source`);
  an HTTP request may name only a file inside `RETRAIN_DATA_DIR`, by a path relative to it
  (`request_data_dir`, `resolve_data_file`), and a `blob:` source only as the operator's `RETRAIN_SOURCE`.
  Error messages name the file as it was named, the row and what was expected; they never quote the
  file's contents.
- `{ticker}` in a `csv:` or `blob:` path is the one placeholder: each ticker reads its own file, named
  by the ticker as it is (`ticker_file_part`: BRK.B.csv, ^GSPC.csv), filled before a request's path is
  confined to `RETRAIN_DATA_DIR`; any other placeholder is refused (`check_placeholders`).

`fetch_many_prices` fetches a batch of tickers (a fleet's): yfinance in one download call, a file of
every ticker read once, and each ticker it could not get named with its reason (`BatchPrices.failed`).

Every frame leaving this module has the columns `Date` (tz-naive datetime64 at midnight, strictly
increasing), `Open, High, Low, Close, Volume` (finite, prices > 0, volume >= 0) and at least
`MIN_ROWS` rows. Anything else is rejected with a `MarketDataError` saying what is wrong and what to send.

`write_snapshot` writes such a frame as an immutable CSV whose version derives from its content.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import logging
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrain import naming

# Enough trading days (about one year) to form training, validation and test windows.
MIN_ROWS = 250
# The bounded wait for each HTTP request yfinance makes.
DEFAULT_TIMEOUT_S = 30.0

PRICE_COLUMNS = ("Open", "High", "Low", "Close")
COLUMNS = ("Date", *PRICE_COLUMNS, "Volume")
SOURCES = ("yfinance", "sample", "csv:PATH", "blob:CONTAINER/PATH")
# The one placeholder of a csv:/blob: path: one file per ticker (`ticker_file_part`).
TICKER_PLACEHOLDER = "{ticker}"
_PLACEHOLDER_RE = re.compile(r"\{[^{}]*\}")

DATA_DIR_SETTING = "RETRAIN_DATA_DIR"
BLOB_ACCOUNT_SETTING = "RETRAIN_BLOB_ACCOUNT_URL"
# yfinance's retries: 4 attempts 2, 4 and 8 s apart (14 s in all) ride out a short rate limit without
# holding an activity for minutes; each wait is capped so a large setting cannot stall a cycle for long.
DEFAULT_YF_ATTEMPTS = 4
DEFAULT_YF_BACKOFF_S = 2.0
MAX_YF_WAIT_S = 60.0
# The largest price file a blob: source downloads (decades of daily rows for thousands of tickers fit).
MAX_BLOB_BYTES = 200 * 1024 * 1024
# The one rule that names data, quoted by every refusal (README "Naming data").
DATA_RULE = (
    "the CLI (retrain run, retrain monitor) reads any csv:PATH its user names, absolute or relative to the "
    f"working directory; an HTTP request (POST /api/retrain, /api/monitor) names a CSV file inside "
    f"{DATA_DIR_SETTING} by its path relative to that directory, and a blob: source only as the "
    "operator's RETRAIN_SOURCE"
)
_SAMPLE_PACKAGE = "bokeh_sampledata"
# Adjusted prices are rounded to this many decimals: more than the source's precision, and it keeps
# the snapshot (and so its hash and version) independent of floating-point noise in the scaling.
_PRICE_DECIMALS = 6


class MarketDataError(ValueError):
    """Market data could not be fetched or was rejected; the message says why and what to do."""


class SourceUnavailable(MarketDataError):
    """The source could not be reached or refused for now (a rate limit, the network, a server error):
    the same call may work later. A batch raises it when no ticker could be read (`fetch_many_prices`)."""


@dataclass(frozen=True)
class Snapshot:
    """An immutable CSV snapshot of one ticker's prices, named and versioned from its content."""

    path: Path
    name: str  # data asset name, e.g. "msft-daily"
    version: str  # "<YYYYMMDD of the last date>-<first 12 hex of sha256>"
    sha256: str  # of the CSV file's bytes
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (for activity results that travel through the Durable Functions history)."""
        return {
            "path": str(self.path),
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "tags": dict(self.tags),
        }


# --------------------------------------------------------------------------------------------------
# Tickers and names


def validate_ticker(symbol: str) -> str:
    """`naming.validate_ticker` (the rule lives with the other names), failing as a `MarketDataError`."""
    try:
        return naming.validate_ticker(symbol)
    except naming.TickerError as exc:
        raise MarketDataError(str(exc)) from None


def asset_name(ticker: str) -> str:
    """The data asset name of a ticker (`naming.asset_name`: `<slug>-daily`, one-to-one over tickers,
    e.g. 'MSFT' -> 'msft-daily', '^GSPC' -> 'gspc--<6 hex>-daily')."""
    return naming.asset_name(validate_ticker(ticker))


# --------------------------------------------------------------------------------------------------
# Validation


def validate_prices(
    frame: pd.DataFrame, *, min_rows: int = MIN_ROWS, what: str = "price data"
) -> pd.DataFrame:
    """The frame in the canonical shape (`COLUMNS`), or a `MarketDataError` naming the first problem.

    `frame` must have a `Date` column (or a DatetimeIndex) and the OHLCV columns; extra columns are dropped.
    Dates are not sorted here: data out of order is rejected, never silently reordered."""
    if not isinstance(frame, pd.DataFrame):
        raise MarketDataError(f"{what}: expected a pandas DataFrame, got {type(frame).__name__}")
    df = frame
    if "Date" not in df.columns and isinstance(df.index, pd.DatetimeIndex):
        df = df.rename_axis("Date").reset_index()
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        # The header is the file's content: say how many columns there were, never what they say.
        raise MarketDataError(
            f"{what}: missing column(s) {', '.join(missing)} in the header row ({len(df.columns)} "
            f"column(s) found); send a header row Date,{','.join(COLUMNS[1:])}"
        )
    df = df.loc[:, list(COLUMNS)].copy()
    df["Date"] = _normalise_dates(df["Date"], what)

    for col in (*PRICE_COLUMNS, "Volume"):
        values = pd.to_numeric(df[col], errors="coerce").astype("float64")
        bad = ~np.isfinite(values.to_numpy()) | (
            values.to_numpy() < 0 if col == "Volume" else values.to_numpy() <= 0
        )
        if bad.any():
            rule = "finite and >= 0" if col == "Volume" else "finite and > 0"
            raise MarketDataError(
                f"{what}: {int(bad.sum())} value(s) of {col} are not {rule} "
                f"(first at {_describe_rows(df, bad)}); send numeric {col} values that are {rule}"
            )
        df[col] = values
    volume = df["Volume"].to_numpy()
    if np.all(volume == np.round(volume)):
        df["Volume"] = df["Volume"].astype("int64")

    dates = df["Date"]
    duplicated = dates.duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise MarketDataError(
            f"{what}: {int(duplicated.sum())} rows share a date (first at {_describe_rows(df, duplicated)}); "
            "send one row per trading day"
        )
    if len(dates) > 1:
        backwards = np.r_[False, dates.diff().iloc[1:].to_numpy() <= pd.Timedelta(0)]
        if backwards.any():
            raise MarketDataError(
                f"{what}: dates are not strictly increasing (first at {_describe_rows(df, backwards)}); "
                "send the rows sorted by Date, oldest first"
            )
    if len(df) < min_rows:
        raise MarketDataError(
            f"{what}: {len(df)} rows, at least {min_rows} trading days are needed to train; "
            "send a longer history (a larger lookback_days, or a CSV with more rows)"
        )
    return df.reset_index(drop=True)


def _normalise_dates(values: pd.Series, what: str) -> pd.Series:
    """Dates as tz-naive midnights. A tz-aware date keeps its local calendar day (the exchange's trading
    day); converting to UTC first would move Asian sessions to the previous day."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        parsed = values.dt.tz_localize(None)
    elif pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = values
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # pandas 2's notice about mixed offsets
                parsed = pd.to_datetime(
                    values.astype("string").str.strip(), errors="coerce", format="ISO8601"
                )
            if parsed.dtype == object:  # pandas 2 returns objects for mixed UTC offsets where pandas 3 raises
                raise ValueError("mixed UTC offsets")
        except (ValueError, TypeError):
            # Mixed UTC offsets parse only as UTC; keep the wall-clock date of each value instead.
            parsed = pd.Series(
                [_parse_one_date(v) for v in values], index=values.index, dtype="datetime64[ns]"
            )
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            parsed = parsed.dt.tz_localize(None)
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])  # the row, not its content (which may be anything)
        raise MarketDataError(
            f"{what}: {int(bad.sum())} Date value(s) could not be read as dates (first at row {row}); "
            "send dates as YYYY-MM-DD"
        )
    return parsed.dt.normalize().astype("datetime64[ns]")


def _parse_one_date(value: Any) -> pd.Timestamp | None:
    try:
        ts = pd.Timestamp(str(value).strip())
    except (ValueError, TypeError):
        return None
    return ts.tz_localize(None) if ts.tzinfo is not None else ts


def _describe_rows(df: pd.DataFrame, mask: np.ndarray) -> str:
    index = int(np.flatnonzero(mask)[0])
    date = df["Date"].iloc[index]
    label = date.strftime("%Y-%m-%d") if isinstance(date, pd.Timestamp) and not pd.isna(date) else repr(date)
    return f"row {index} ({label})"


# --------------------------------------------------------------------------------------------------
# Fetching


def fetch_prices(
    ticker: str,
    source: str = "yfinance",
    lookback_days: int | None = None,
    *,
    end: dt.date | str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    min_rows: int = MIN_ROWS,
    data_dir: str | os.PathLike[str] | None = None,
    yahoo: YahooDownloader | None = None,
    blob: BlobReader | None = None,
) -> pd.DataFrame:
    """Daily prices of `ticker` from `source`, validated (see the module docstring for the shape).

    `data_dir`: a `csv:NAME` source must name a file inside it (see `resolve_data_file`); None for the
    operator's own sources, which may be anywhere. `yahoo` and `blob` are the yfinance and Blob Storage
    adapters (default: built from the settings when that source is used); tests pass their own.
    `{ticker}` in a `csv:` or `blob:` path is filled with the ticker (`ticker_file_part`).

    `lookback_days` counts calendar days back from `end` (yfinance: default today, UTC) or from the last
    available date on or before `end` (sample, csv); `None` means all available history. `end` is the
    as-of date: no row after it is returned (`attrs["as_of"]` records it), so offline sources replay
    history without looking ahead. `timeout` bounds
    each request yfinance makes. The frame's `attrs["source"]` records where it came from."""
    symbol = validate_ticker(ticker)
    _check_window(lookback_days, timeout)
    end_day = _parse_end(end)
    kind, path = _parse_source(source)
    return _fetch_one(
        symbol, kind, path, lookback_days, end_day, float(timeout), min_rows, data_dir, yahoo, blob
    )


@dataclass(frozen=True)
class BatchPrices:
    """What `fetch_many_prices` got: validated frames by ticker (in the order asked) and, for each ticker
    it could not get, why (the same message `fetch_prices` would raise)."""

    prices: dict[str, pd.DataFrame]
    failed: dict[str, str]


def fetch_many_prices(
    tickers: Sequence[str],
    source: str = "yfinance",
    lookback_days: int | None = None,
    *,
    end: dt.date | str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    min_rows: int = MIN_ROWS,
    data_dir: str | os.PathLike[str] | None = None,
    yahoo: YahooDownloader | None = None,
    blob: BlobReader | None = None,
) -> BatchPrices:
    """`fetch_prices` for many tickers at once: a ticker whose data is missing or bad is named in
    `failed` with its reason, the others are fetched. yfinance gets the whole batch in one download call
    per attempt (`YahooDownloader.fetch_many`); one file for every ticker (a `csv:`/`blob:` path without
    `{ticker}`) is read once. Raises `SourceUnavailable` when no ticker could be read and the failures look
    transient (Yahoo's rate limit, the network, a storage 5xx: the whole call may work later), and
    `MarketDataError` for arguments that are wrong for every ticker (the source, the window)."""
    _check_window(lookback_days, timeout)
    end_day = _parse_end(end)
    kind, path = _parse_source(source)
    symbols: list[str] = []
    failed: dict[str, str] = {}
    for raw in tickers:
        try:
            symbol = validate_ticker(raw)
        except MarketDataError as exc:
            failed[str(raw)[:40]] = str(exc)
            continue
        if symbol not in symbols:
            symbols.append(symbol)
    prices: dict[str, pd.DataFrame] = {}
    if kind == "yfinance":
        raws: dict[str, pd.DataFrame] = {}
        if symbols:
            downloader = yahoo or YahooDownloader.from_settings()
            raws, not_got = downloader.fetch_many(symbols, lookback_days, end_day, float(timeout))
            failed.update(not_got)
        for symbol in symbols:
            if symbol in raws:
                try:
                    prices[symbol] = _finish(
                        raws[symbol], kind, f"yfinance data for {symbol}", lookback_days, end_day, min_rows
                    )
                except MarketDataError as exc:
                    failed[symbol] = str(exc)
    else:
        shared: tuple[pd.DataFrame, str] | None = None
        if kind in ("csv", "blob") and TICKER_PLACEHOLDER not in path and symbols:
            # One file for every ticker (a Ticker column): read once for the whole batch.
            try:
                shared = _read_shared_file(kind, path, data_dir, blob, float(timeout))
            except SourceUnavailable:
                raise
            except MarketDataError as exc:
                failed.update({s: str(exc) for s in symbols})
                symbols = []
        unavailable: dict[str, str] = {}
        for symbol in symbols:
            try:
                prices[symbol] = _fetch_one(
                    symbol,
                    kind,
                    path,
                    lookback_days,
                    end_day,
                    float(timeout),
                    min_rows,
                    data_dir,
                    yahoo,
                    blob,
                    shared=shared,
                )
            except SourceUnavailable as exc:
                unavailable[symbol] = str(exc)
            except MarketDataError as exc:
                failed[symbol] = str(exc)
        if unavailable and not prices:
            first, reason = next(iter(unavailable.items()))
            raise SourceUnavailable(
                f"{kind}: none of the {len(symbols)} ticker(s) could be read, {len(unavailable)} for a "
                f"reason that may pass ({first}: {reason})"
            )
        failed.update(unavailable)
    return BatchPrices(prices=prices, failed=failed)


def _check_window(lookback_days: int | None, timeout: float) -> None:
    if lookback_days is not None and (
        isinstance(lookback_days, bool) or not isinstance(lookback_days, int) or lookback_days < 1
    ):
        raise MarketDataError(
            f"lookback_days must be a positive whole number of days or None, got {lookback_days!r}"
        )
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise MarketDataError(f"timeout must be a positive number of seconds, got {timeout!r}")


def _fetch_one(
    symbol: str,
    kind: str,
    path: str,
    lookback_days: int | None,
    end_day: dt.date | None,
    timeout: float,
    min_rows: int,
    data_dir: str | os.PathLike[str] | None,
    yahoo: YahooDownloader | None,
    blob: BlobReader | None,
    *,
    shared: tuple[pd.DataFrame, str] | None = None,
) -> pd.DataFrame:
    """One ticker's validated frame from a parsed source; `shared`: the already read (frame, name) of a
    file holding every ticker."""
    if kind == "yfinance":
        raw = (yahoo or YahooDownloader.from_settings()).fetch(symbol, lookback_days, end_day, timeout)
        what = f"yfinance data for {symbol}"
    elif kind == "sample":
        raw = _load_sample(symbol)
        what = f"sample data for {symbol}"
    elif shared is not None:
        frame, display = shared
        raw = _ticker_rows(frame, symbol, display)
        what = f"CSV {display}"
    elif kind == "blob":
        reader = blob or BlobReader.from_settings()
        container, blob_name = blob_location(path, symbol)
        display = f"blob:{container}/{blob_name}"
        raw = _parse_price_csv(reader.read(container, blob_name, timeout), symbol, display)
        what = f"CSV {display}"
    else:
        display = fill_ticker(path, symbol)
        name = display
        if data_dir is not None:  # a file a request named: only inside the operator's data directory
            name = str(resolve_data_file(display, data_dir))
        raw = _load_csv(Path(name), symbol, display)
        what = f"CSV {display}"
    return _finish(raw, kind, what, lookback_days, end_day, min_rows)


def _read_shared_file(
    kind: str, path: str, data_dir: str | os.PathLike[str] | None, blob: BlobReader | None, timeout: float
) -> tuple[pd.DataFrame, str]:
    """(the parsed file, its name as shown) of a `csv:`/`blob:` source without `{ticker}`."""
    if kind == "blob":
        container, blob_name = blob_location(path, "")
        display = f"blob:{container}/{blob_name}"
        reader = blob or BlobReader.from_settings()
        return _read_price_csv(reader.read(container, blob_name, timeout), display), display
    name = str(resolve_data_file(path, data_dir)) if data_dir is not None else path
    if not Path(name).is_file():
        raise MarketDataError(f"CSV {path} does not exist; send csv:PATH with the path of a CSV file")
    return _read_price_csv(Path(name), path), path


def _finish(
    raw: pd.DataFrame, kind: str, what: str, lookback_days: int | None, end_day: dt.date | None, min_rows: int
) -> pd.DataFrame:
    prices = validate_prices(raw, min_rows=1, what=what)
    if kind != "yfinance":
        prices = _trim_window(prices, lookback_days, end_day, what)
    prices = validate_prices(prices, min_rows=min_rows, what=what)
    prices.attrs["source"] = kind
    if end_day is not None:
        # Data as known on that day: nothing after it (monitoring and backtests replay history this way).
        prices.attrs["as_of"] = end_day.isoformat()
    return prices


# --------------------------------------------------------------------------------------------------
# {ticker}: one file per ticker


def ticker_file_part(ticker: str) -> str:
    """What `{ticker}` becomes in a file or blob name: the canonical ticker as is (MSFT, BRK.B, ^GSPC,
    EURUSD=X). Every character a ticker may have (A-Z 0-9 . ^ = -) is legal in file names on Linux,
    macOS and Windows and in blob names, and keeping it unchanged keeps the map one-to-one (BRK.B and
    BRK-B stay two files) and predictable (what Yahoo's own downloads are named). The one exception: a
    ticker of dots only ('.', '..') would name a directory, not a file, and is refused."""
    symbol = validate_ticker(ticker)
    if not symbol.strip("."):
        raise MarketDataError(
            f"ticker {symbol!r} cannot fill {TICKER_PLACEHOLDER} in a file name (it would name a "
            "directory); send a ticker with a letter or digit"
        )
    return symbol


def fill_ticker(text: str, ticker: str) -> str:
    """`text` (a source, or its path) with `{ticker}` filled by `ticker_file_part(ticker)`."""
    if TICKER_PLACEHOLDER not in text:
        return text
    return text.replace(TICKER_PLACEHOLDER, ticker_file_part(ticker))


def fill_source(source: str, ticker: str) -> str:
    """The source one ticker reads: `{ticker}` filled in a `csv:` or `blob:` path (checked first: an
    unknown placeholder is refused); any other source as it is."""
    kind, path = _parse_source(source)
    if kind in ("csv", "blob") and TICKER_PLACEHOLDER in path:
        return f"{kind}:{fill_ticker(path, ticker)}"
    return source.strip()


def check_placeholders(source: str) -> None:
    """Refuse a source with a placeholder other than `{ticker}` (or a stray brace), saying what to send."""
    if not isinstance(source, str):
        return
    rest = source.replace(TICKER_PLACEHOLDER, "")
    if "{" not in rest and "}" not in rest:
        return
    found = _PLACEHOLDER_RE.search(rest)
    what = (
        f"the unknown placeholder {found.group(0)[:30]}"
        if found
        else f"a brace that is not part of {TICKER_PLACEHOLDER}"
    )
    shown = repr(source[:80]) + ("..." if len(source) > 80 else "")
    raise MarketDataError(
        f"source {shown} has {what}: the one placeholder is {TICKER_PLACEHOLDER}, filled with each ticker "
        "as it is (BRK.B.csv, ^GSPC.csv); send e.g. csv:{ticker}.csv or blob:CONTAINER/daily/{ticker}.csv"
    )


def _parse_source(source: str) -> tuple[str, str]:
    if not isinstance(source, str):
        raise MarketDataError(f"source must be a string, one of {', '.join(SOURCES)}")
    check_placeholders(source)
    text = source.strip()
    if text.lower() in ("yfinance", "sample"):
        return text.lower(), ""
    if text.lower().startswith("csv:"):
        path = text[4:].strip()
        if not path:
            raise MarketDataError("source 'csv:' needs a path: send csv:PATH, e.g. csv:data/msft.csv")
        return "csv", path
    if text.lower().startswith("blob:"):
        path = text[5:].strip()
        if "/" not in path.strip("/") or "://" in path:
            raise MarketDataError(
                "source 'blob:' needs a container and a blob path (the account is the setting "
                f"{BLOB_ACCOUNT_SETTING}): send blob:CONTAINER/PATH, e.g. blob:prices/daily/{{ticker}}.csv"
            )
        return "blob", path.strip("/")
    raise MarketDataError(f"unknown source {source!r}: send one of {', '.join(SOURCES)}")


def parse_as_of(value: dt.date | str | None) -> dt.date | None:
    """An as-of date (data up to and including that trading day) from a date or YYYY-MM-DD; None stays None."""
    return _parse_end(value)


def data_refusal(source: str, problem: str) -> MarketDataError:
    """The one wording of every refusal of a named data file: the source as it was named (cut short),
    what is wrong with it, and the rule (`DATA_RULE`) that says what to send instead."""
    text = source if isinstance(source, str) else repr(source)
    shown = repr(text[:80]) + ("..." if len(text) > 80 else "")
    return MarketDataError(f"source {shown} {problem}: {DATA_RULE}")


def operator_source(source: str, cwd: str | os.PathLike[str] | None = None) -> str:
    """A source the CLI user (the operator) named, as the host will read it: a `csv:` path relative to
    `cwd` (default: the working directory) becomes absolute; every other source is returned stripped."""
    text = source.strip()
    if not text.lower().startswith("csv:") or not text[4:].strip():
        return text
    path = Path(text[4:].strip()).expanduser()
    if not path.is_absolute():
        path = Path(cwd if cwd is not None else os.getcwd()) / path
    return f"csv:{path.resolve()}"


def operator_data_dir(configured_source: str, data_dir_setting: str | None) -> Path | None:
    """Where the operator's own `RETRAIN_SOURCE` is read: a relative `csv:` path inside `RETRAIN_DATA_DIR`
    when that is set (the host's working directory is an accident of how `retrain serve` was started,
    and a request naming the same `csv:{ticker}.csv` must read the same files); None (read as named, the
    working directory for a relative path) for an absolute path, another source or no data directory."""
    text = configured_source.strip()
    if not text.lower().startswith("csv:") or not data_dir_setting or not str(data_dir_setting).strip():
        return None
    if Path(text[4:].strip()).expanduser().is_absolute():
        return None
    return Path(str(data_dir_setting).strip())


def request_data_dir(source: str, configured_source: str | None, data_dir_setting: str | None) -> Path | None:
    """Where a `csv:` source that came with a request must live: None when the source is not a CSV or is
    the operator's own `RETRAIN_SOURCE` (but `operator_data_dir` for a relative path in it); else the
    configured data directory. A request naming a CSV when
    no data directory is configured, or a `blob:` source other than `RETRAIN_SOURCE`, is refused."""
    if not isinstance(source, str):
        return None
    text = source.strip()
    if configured_source is not None and text == configured_source.strip():
        return operator_data_dir(text, data_dir_setting)
    if text.lower().startswith("blob:"):
        raise data_refusal(text, "is not the operator's RETRAIN_SOURCE")
    if not text.lower().startswith("csv:"):
        return None
    if not data_dir_setting or not str(data_dir_setting).strip():
        raise data_refusal(text, f"cannot be read: the operator has not set {DATA_DIR_SETTING}")
    return Path(str(data_dir_setting).strip())


def check_request_source(
    source: str, configured_source: str | None, data_dir_setting: str | None, ticker: str | None = None
) -> None:
    """Refuse, at the HTTP edge, a source a request may not read (an unknown placeholder,
    `request_data_dir`, then the file itself); the fetch activity checks again when it reads. A `csv:`
    path with `{ticker}` is checked for `ticker` (its file must exist), or without one (a fleet's
    source, whose files are checked per ticker when fetched) only for staying inside the directory."""
    check_placeholders(source)
    data_dir = request_data_dir(source, configured_source, data_dir_setting)
    if data_dir is None:
        return
    name = source.strip()[4:].strip()
    if ticker is not None:
        resolve_data_file(fill_ticker(name, ticker), data_dir)
    elif TICKER_PLACEHOLDER in name:
        root = _data_root(source, data_dir)
        # Any ticker fills it the same way (no '/', never only dots): a stand-in checks the directories.
        try:
            inside = (root / name.replace(TICKER_PLACEHOLDER, "T")).resolve().is_relative_to(root)
        except (OSError, RuntimeError, ValueError):  # a NUL byte, a symlink loop
            inside = False
        if not inside:
            raise data_refusal(
                source, "is not inside the data directory (paths may not leave it through .. or symlinks)"
            )
    else:
        resolve_data_file(name, data_dir)


def _data_root(source: str, data_dir: str | os.PathLike[str]) -> Path:
    try:
        return Path(data_dir).resolve(strict=True)
    except OSError:
        raise data_refusal(
            source, f"cannot be read: the data directory ({DATA_DIR_SETTING}) does not exist"
        ) from None


def resolve_data_file(name: str, data_dir: str | os.PathLike[str]) -> Path:
    """The regular file `name` (relative to `data_dir`, or absolute inside it) resolved through `..` and
    symlinks, refused unless it stays inside `data_dir`. Messages name `name`, never the resolved path."""
    source = f"csv:{name}"
    if not name or "\x00" in name:
        raise data_refusal(source, "names no file")
    root = _data_root(source, data_dir)
    try:
        target = (root / name).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        raise data_refusal(source, "is not a file in the data directory") from None
    if not target.is_relative_to(root) or not target.is_file():
        raise data_refusal(
            source, "is not a file inside the data directory (paths may not leave it through .. or symlinks)"
        )
    return target


_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _parse_end(end: dt.date | str | None) -> dt.date | None:
    if end is None:
        return None
    if isinstance(end, dt.datetime | pd.Timestamp):
        return end.date()
    if isinstance(end, dt.date):
        return end
    text = str(end).strip()
    try:
        # fromisoformat alone also reads 20120103 and 2012-W01-2: the documented form only.
        if not _ISO_DATE_RE.fullmatch(text):
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        shown = repr(text[:40]) + ("..." if len(text) > 40 else "")  # never echo a huge value
        raise MarketDataError(f"a date must be YYYY-MM-DD (e.g. 2012-01-03), got {shown}") from None


def _trim_window(
    prices: pd.DataFrame, lookback_days: int | None, end: dt.date | None, what: str
) -> pd.DataFrame:
    if end is not None:
        # Compared as dates: pd.Timestamp cannot hold years before 1677 (as_of 0999-01-04).
        if prices.empty or end < prices["Date"].iloc[0].date():
            starts = f" (the data starts on {prices['Date'].iloc[0]:%Y-%m-%d})" if not prices.empty else ""
            raise MarketDataError(
                f"{what}: no rows on or before end={end.isoformat()}{starts}; send a later end date"
            )
        prices = prices[prices["Date"] <= pd.Timestamp(end)]
    if lookback_days is not None:
        start = prices["Date"].iloc[-1] - pd.Timedelta(days=lookback_days)
        prices = prices[prices["Date"] >= start]
    return prices.reset_index(drop=True)


# The reasons yfinance logs (or raises) for a failure worth another attempt: Yahoo's rate limit (often
# what a cloud IP range meets), timeouts, connection and DNS errors, server errors.
_TRANSIENT_YF = re.compile(
    r"rate.?limit|too many requests|\b429\b|timed? ?out|timeout|connection|could not resolve|curl|"
    r"temporar|unavailable|\b50[0234]\b",
    re.IGNORECASE,
)
YahooDownload = Callable[..., Any]


def _yfinance_download(*args: Any, **kwargs: Any) -> Any:
    import yfinance as yf  # only here: the Function App imports this module without needing Yahoo

    return yf.download(*args, **kwargs)


@dataclass(frozen=True)
class YahooDownloader:
    """The yfinance source: `download` (`yfinance.download`) called up to `attempts` times, waiting
    `backoff_s`, then twice as long each time (each wait at most `MAX_YF_WAIT_S`), while the failure looks
    transient. A permanent answer (an unknown ticker) fails at once."""

    download: YahooDownload = _yfinance_download
    attempts: int = DEFAULT_YF_ATTEMPTS
    backoff_s: float = DEFAULT_YF_BACKOFF_S
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if (
            isinstance(self.attempts, bool)
            or not isinstance(self.attempts, int)
            or not 1 <= self.attempts <= 20
        ):
            raise MarketDataError(
                f"RETRAIN_YFINANCE_ATTEMPTS={self.attempts!r}: send a whole number of attempts from 1 to 20"
            )
        if not (isinstance(self.backoff_s, int | float) and 0 <= self.backoff_s <= MAX_YF_WAIT_S):
            raise MarketDataError(
                f"RETRAIN_YFINANCE_BACKOFF_SECONDS={self.backoff_s!r}: send seconds from 0 to {MAX_YF_WAIT_S:g}"
            )

    @classmethod
    def from_settings(cls, environ: Any = None) -> YahooDownloader:
        from retrain import settings

        try:
            attempts = settings.get_int("RETRAIN_YFINANCE_ATTEMPTS", environ)
            backoff = settings.get_float("RETRAIN_YFINANCE_BACKOFF_SECONDS", environ)
        except settings.SettingsError as exc:
            raise MarketDataError(str(exc)) from None
        return cls(attempts=attempts, backoff_s=backoff)

    def waits(self) -> list[float]:
        """The pauses between attempts, in order."""
        return [min(self.backoff_s * 2**i, MAX_YF_WAIT_S) for i in range(self.attempts - 1)]

    def _kwargs(self, lookback_days: int | None, end: dt.date | None, timeout: float) -> dict[str, Any]:
        end_day = end or dt.datetime.now(dt.UTC).date()
        kwargs: dict[str, Any] = {
            "end": (end_day + dt.timedelta(days=1)).isoformat(),  # yfinance's end is exclusive
            "interval": "1d",
            "auto_adjust": True,  # split- and dividend-adjusted OHLC
            "actions": False,
            "progress": False,
            "threads": False,
            "timeout": timeout,
            "multi_level_index": True,
        }
        if lookback_days is None:
            kwargs["period"] = "max"
        else:
            kwargs["start"] = (end_day - dt.timedelta(days=lookback_days)).isoformat()
        return kwargs

    def fetch(
        self, ticker: str, lookback_days: int | None, end: dt.date | None, timeout: float
    ) -> pd.DataFrame:
        """The flat frame (`parse_yfinance_frame`) of `ticker`, or a `MarketDataError` naming it."""
        kwargs = self._kwargs(lookback_days, end, timeout)
        waits = self.waits()
        for attempt in range(1, self.attempts + 1):
            with _capture_log("yfinance") as errors, warnings.catch_warnings():
                # yfinance's own pandas deprecation warnings are noise to our users.
                warnings.filterwarnings("ignore", module=r"yfinance(\.|$)")
                try:
                    frame = self.download(ticker, **kwargs)
                except Exception as exc:  # yfinance raises assorted types (network, rate limit, parsing)
                    reason = repr(exc)
                else:
                    try:
                        return parse_yfinance_frame(frame, ticker, errors=errors)
                    except MarketDataError as exc:
                        reason = "; ".join(dict.fromkeys(errors))[:600]
                        if not _TRANSIENT_YF.search(reason):
                            raise  # an unknown ticker or a malformed answer: another attempt gives the same
                        reason = str(exc)
            if attempt < self.attempts:
                logging.getLogger(__name__).warning(
                    "yfinance attempt %d/%d for %s failed (%s); retrying in %.1f s",
                    attempt,
                    self.attempts,
                    ticker,
                    reason[:200],
                    waits[attempt - 1],
                )
                self.sleep(waits[attempt - 1])
        raise MarketDataError(self._gave_up(ticker, reason))

    def _gave_up(self, tickers: str, reason: str) -> str:
        return (
            f"yfinance failed for {tickers} after {self.attempts} attempt(s) over {sum(self.waits()):g} s: "
            f"{reason}. {_YAHOO_ADVICE}"
        )

    def fetch_many(
        self, tickers: Sequence[str], lookback_days: int | None, end: dt.date | None, timeout: float
    ) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
        """({ticker: flat frame}, {ticker: why not}) of canonical `tickers`, with ONE `download` call per
        attempt for the tickers still missing (yfinance loops over a list inside that call). A ticker
        whose failure looks transient (yfinance's log line for it, or an exception of the whole call) is
        asked again after the back-off; one whose answer another attempt would not change (unknown,
        delisted, missing columns) is named at once. `SourceUnavailable` when not one ticker came back
        and some failed transiently: Yahoo (or the network) is down for the whole batch."""
        kwargs = self._kwargs(lookback_days, end, timeout)
        waits = self.waits()
        frames: dict[str, pd.DataFrame] = {}
        failed: dict[str, str] = {}
        reasons: dict[str, str] = {}
        pending = list(dict.fromkeys(tickers))
        for attempt in range(1, self.attempts + 1):
            if not pending:
                break
            with _capture_log("yfinance") as errors, warnings.catch_warnings():
                warnings.filterwarnings("ignore", module=r"yfinance(\.|$)")
                try:
                    frame = self.download(list(pending), **kwargs)
                except Exception as exc:  # the whole call failed: every pending ticker is asked again
                    frame, reasons = None, {t: repr(exc) for t in pending}
            if frame is not None:
                said, general = _errors_by_ticker(errors)
                retry = []
                for ticker in pending:
                    logged = said.get(ticker, general)
                    try:
                        frames[ticker] = parse_yfinance_frame(frame, ticker, errors=logged)
                    except MarketDataError as exc:
                        if _TRANSIENT_YF.search("; ".join(logged)):
                            retry.append(ticker)
                            reasons[ticker] = str(exc)
                        else:
                            failed[ticker] = str(exc)
                pending = retry
            if pending and attempt < self.attempts:
                logging.getLogger(__name__).warning(
                    "yfinance attempt %d/%d for %d ticker(s) (%s) failed (%s); retrying in %.1f s",
                    attempt,
                    self.attempts,
                    len(pending),
                    ", ".join(pending[:5]) + (" ..." if len(pending) > 5 else ""),
                    reasons[pending[0]][:200],
                    waits[attempt - 1],
                )
                self.sleep(waits[attempt - 1])
        if pending and not frames:
            names = ", ".join(pending[:10]) + (f" and {len(pending) - 10} more" if len(pending) > 10 else "")
            raise SourceUnavailable(
                self._gave_up(f"every ticker of the batch ({names})", reasons[pending[0]])
            )
        failed.update({t: self._gave_up(t, reasons[t]) for t in pending})
        return frames, failed


_YAHOO_ADVICE = (
    "Yahoo Finance often refuses or rate-limits requests from cloud IP ranges (Azure among them): "
    "in production read prices from your own Blob container (source blob:CONTAINER/PATH with "
    f"{BLOB_ACCOUNT_SETTING}, docs/data-sources.md) or a file (csv:PATH); offline, use --source "
    "sample (MSFT, AAPL, IBM, GOOG); or raise RETRAIN_YFINANCE_ATTEMPTS"
)
# yfinance's log line for failed tickers: "['AAA', 'BBB']: YFRateLimitError('Too Many Requests...')".
_YF_TICKERS_LINE = re.compile(r"\[([^\]]*)\]:\s*(.*)", re.S)


def _errors_by_ticker(lines: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """yfinance's error log lines sorted out: ({ticker: its lines}, the lines that name no ticker)."""
    said: dict[str, list[str]] = {}
    general: list[str] = []
    for line in lines:
        match = _YF_TICKERS_LINE.match(line)
        names = re.findall(r"'([^']+)'", match.group(1)) if match else []
        if not names:
            general.append(line)
        for name in names:
            said.setdefault(name.upper(), []).append(line)
    return said, general


def parse_yfinance_frame(
    frame: pd.DataFrame | None, ticker: str, *, errors: list[str] | None = None
) -> pd.DataFrame:
    """A `yf.download` result (MultiIndex (Price, Ticker) columns, Date index, possibly tz-aware, possibly
    empty) as a flat frame with a Date column. An empty result raises: it is how yfinance reports an
    unknown ticker or no network."""
    symbol = validate_ticker(ticker)
    df = frame.copy() if isinstance(frame, pd.DataFrame) else pd.DataFrame()
    if isinstance(df.columns, pd.MultiIndex):
        df = _select_ticker(df, symbol)
    df = df.dropna(how="all")  # yfinance reindexes onto a union of dates, leaving all-NaN rows
    if df.empty:
        reported = "; ".join(dict.fromkeys(errors or []))[:600]
        detail = f" (yfinance reported: {reported})" if reported else ""
        raise MarketDataError(
            f"yfinance returned no data for {symbol}{detail}: the machine may be offline or the ticker "
            "unknown to Yahoo Finance. Check the symbol, or use --source sample (MSFT, AAPL, IBM, GOOG) "
            "or --source csv:PATH"
        )
    df.columns = [str(c) for c in df.columns]
    if not isinstance(df.index, pd.DatetimeIndex):
        raise MarketDataError(
            f"yfinance data for {symbol}: expected a date index, got {type(df.index).__name__}"
        )
    index = df.index.tz_localize(None) if df.index.tz is not None else df.index
    df.index = index.rename("Date")
    return df.reset_index()


def _select_ticker(df: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """The columns of one ticker from yfinance's two-level columns, whichever level order it used."""
    levels = [{str(v) for v in df.columns.get_level_values(i)} for i in range(df.columns.nlevels)]
    price_level = next((i for i, vals in enumerate(levels) if "Close" in vals), None)
    if price_level is None or df.columns.nlevels != 2:
        raise MarketDataError(f"yfinance data for {ticker}: unexpected columns {list(df.columns)[:8]}")
    ticker_level = 1 - price_level
    tickers = {t.upper(): t for t in levels[ticker_level]}
    if ticker not in tickers:
        if df.empty:
            return pd.DataFrame()
        raise MarketDataError(
            f"yfinance data has no columns for {ticker} (found: {', '.join(sorted(tickers))})"
        )
    return df.xs(tickers[ticker], axis=1, level=ticker_level)


@contextlib.contextmanager
def _capture_log(name: str) -> Iterator[list[str]]:
    """Collect a library's error log lines (yfinance logs why a download failed instead of raising)."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage().strip()
            if text and "Failed download" not in text:
                messages.append(text)

    handler = _Collect(level=logging.ERROR)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def blob_location(path: str, ticker: str) -> tuple[str, str]:
    """(container, blob name) of a `blob:CONTAINER/PATH` source's PATH for `ticker` (`{ticker}` filled,
    `fill_ticker`)."""
    container, _, name = path.strip("/").partition("/")
    return container, fill_ticker(name, ticker) if ticker else name


_CREDENTIAL: Any = None  # one DefaultAzureCredential per process: it caches its tokens


def _default_credential() -> Any:
    global _CREDENTIAL
    if _CREDENTIAL is None:
        from azure.identity import DefaultAzureCredential

        _CREDENTIAL = DefaultAzureCredential()
    return _CREDENTIAL


@dataclass(frozen=True)
class BlobReader:
    """The blob: source: reads a blob of the storage account `account_url` with an Azure AD identity
    (`credential`, default `DefaultAzureCredential`: the Function App's managed identity, which needs
    Storage Blob Data Reader on the account or the container). `client_options` go to
    `BlobServiceClient` (tests pass an azure-core `transport`)."""

    account_url: str
    credential: Any = None
    client_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from urllib.parse import urlparse

        url = urlparse(str(self.account_url).strip())
        if url.scheme != "https" or not url.netloc or url.path.strip("/") or url.query:
            raise MarketDataError(
                f"{BLOB_ACCOUNT_SETTING}={str(self.account_url)[:120]!r}: send the account's blob endpoint, "
                "https://ACCOUNT.blob.core.windows.net (https, no container or path)"
            )

    @classmethod
    def from_settings(cls, environ: Any = None) -> BlobReader:
        from retrain import settings

        account_url = settings.get(BLOB_ACCOUNT_SETTING, environ)
        if not account_url or not account_url.strip():
            raise MarketDataError(
                f"source blob: needs {BLOB_ACCOUNT_SETTING}, the storage account's blob endpoint "
                "(https://ACCOUNT.blob.core.windows.net); set it, or use another source"
            )
        return cls(account_url=account_url.strip())

    def read(self, container: str, name: str, timeout: float) -> bytes:
        """The blob's bytes, or a `MarketDataError` saying what is missing or refused and what to do."""
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
        )
        from azure.storage.blob import BlobServiceClient

        shown = f"blob:{container}/{name}"
        service = BlobServiceClient(
            self.account_url.strip(),
            credential=self.credential if self.credential is not None else _default_credential(),
            **self.client_options,
        )
        try:
            downloader = service.get_blob_client(container, name).download_blob(timeout=max(1, int(timeout)))
            if downloader.size > MAX_BLOB_BYTES:
                raise MarketDataError(
                    f"{shown} has {downloader.size} bytes, more than {MAX_BLOB_BYTES}; send one file per "
                    "ticker (blob:CONTAINER/PATH/{ticker}.csv)"
                )
            content: bytes = downloader.readall()
        except ResourceNotFoundError:
            raise MarketDataError(
                f"{shown} does not exist in {self.account_url}; upload the ticker's CSV there, or fix the "
                "source (blob:CONTAINER/PATH, {ticker} in PATH becomes the ticker)"
            ) from None
        except ClientAuthenticationError as exc:
            raise MarketDataError(
                f"{shown}: no identity could sign in to {self.account_url} ({type(exc).__name__}); in Azure "
                "the Function App's managed identity (AZURE_CLIENT_ID) is used, locally `az login`"
            ) from None
        except HttpResponseError as exc:
            code = f"{exc.status_code} {getattr(exc, 'error_code', None) or ''}".strip()
            if exc.status_code == 403:
                raise MarketDataError(
                    f"{shown}: {self.account_url} refused the identity ({code}); grant it Storage Blob "
                    "Data Reader on the account or container, and allow its network"
                ) from None
            if exc.status_code is not None and (exc.status_code >= 500 or exc.status_code in (408, 429)):
                raise SourceUnavailable(
                    f"{shown}: {self.account_url} answered {code}; try again later"
                ) from None
            raise MarketDataError(f"{shown}: {self.account_url} answered {code}; try again later") from None
        except AzureError as exc:  # the network: DNS, a timeout, a reset connection
            raise SourceUnavailable(f"{shown}: {self.account_url} could not be reached ({exc!r})") from None
        finally:
            service.close()
        return content


def sample_path() -> Path:
    """The bundled sample file (`bokeh_sampledata`'s stocks.csv.gz)."""
    from importlib.util import find_spec

    spec = find_spec(_SAMPLE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MarketDataError(
            f"the sample source needs the {_SAMPLE_PACKAGE} package; install it or use --source csv:PATH"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "_data" / "stocks.csv.gz"
    if not path.is_file():
        raise MarketDataError(f"{path} is missing from the {_SAMPLE_PACKAGE} package; reinstall it")
    return path


def sample_tickers() -> list[str]:
    return sorted(pd.read_csv(sample_path(), usecols=["Ticker"])["Ticker"].unique().tolist())


def _load_sample(ticker: str) -> pd.DataFrame:
    raw = pd.read_csv(sample_path())
    rows = raw[raw["Ticker"] == ticker]
    if rows.empty:
        available = ", ".join(sorted(raw["Ticker"].unique()))
        raise MarketDataError(
            f"{ticker} is not in the bundled sample; it has {available}. "
            "Use one of those, or --source yfinance / --source csv:PATH"
        )
    # Open/High/Low/Close are as traded; Adj Close includes later splits and dividends. Scaling OHLC by the
    # same factor removes the split jumps (MSFT 2:1 on 2003-02-18) the model would otherwise learn.
    factor = rows["Adj Close"] / rows["Close"]
    out = pd.DataFrame({"Date": rows["Date"].to_numpy()})
    for col in PRICE_COLUMNS:
        out[col] = (rows[col] * factor).round(_PRICE_DECIMALS).to_numpy()
    out["Volume"] = rows["Volume"].to_numpy()
    return out.sort_values("Date", kind="stable").reset_index(drop=True)


def _load_csv(path: Path, ticker: str, display: str | None = None) -> pd.DataFrame:
    name = display or str(path)
    if not path.is_file():
        raise MarketDataError(f"CSV {name} does not exist; send csv:PATH with the path of a CSV file")
    return _parse_price_csv(path, ticker, name)


def _parse_price_csv(content: Path | bytes, ticker: str, name: str) -> pd.DataFrame:
    """A price CSV (a file, or the bytes of a blob) as a raw frame with canonical column names and only
    `ticker`'s rows when it has a Ticker column; `validate_prices` does the rest."""
    return _ticker_rows(_read_price_csv(content, name), ticker, name)


def _read_price_csv(content: Path | bytes, name: str) -> pd.DataFrame:
    """A price CSV as a raw frame with canonical column names (Ticker among them when it has one)."""
    try:
        raw = pd.read_csv(io.BytesIO(content) if isinstance(content, bytes) else content)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        # The parser's message can quote the file; keep only where it failed.
        where = re.search(r"line \d+", str(exc)) if isinstance(exc, pd.errors.ParserError) else None
        detail = f" at {where.group(0)}" if where else ""
        raise MarketDataError(
            f"CSV {name} could not be read as comma-separated UTF-8 text{detail}; send a comma-separated "
            f"file with a header row {','.join(COLUMNS)}"
        ) from None
    # Column names in any case and spacing ("date", " CLOSE "); "Adj Close" and others are ignored.
    canonical = {c.lower(): c for c in (*COLUMNS, "Ticker")}
    renamed: dict[str, str] = {}
    for col in raw.columns:
        key = str(col).strip().lower()
        if key in canonical and canonical[key] not in renamed.values():
            renamed[col] = canonical[key]
    return raw.rename(columns=renamed)


def _ticker_rows(df: pd.DataFrame, ticker: str, name: str) -> pd.DataFrame:
    """`ticker`'s rows of a file with a Ticker column; the whole frame when it has none."""
    if "Ticker" in df.columns:  # a multi-ticker file: keep the requested ticker's rows
        mask = df["Ticker"].astype("string").str.strip().str.upper() == ticker
        if not mask.any():
            raise MarketDataError(
                f"CSV {name} has no rows for {ticker} in its Ticker column; send a file with rows "
                f"whose Ticker is {ticker}, or without a Ticker column"
            )
        df = df[mask]
    return df


# --------------------------------------------------------------------------------------------------
# Snapshots


def snapshot_bytes(prices: pd.DataFrame) -> bytes:
    """The canonical CSV of a validated frame: Date as YYYY-MM-DD, then OHLCV, '\\n' line endings."""
    out = prices.loc[:, list(COLUMNS)].copy()
    out["Date"] = pd.to_datetime(out["Date"]).dt.strftime("%Y-%m-%d")
    return out.to_csv(index=False, lineterminator="\n").encode("utf-8")


def snapshot_tags(
    prices: pd.DataFrame, *, sha256: str, ticker: str, source: str | None = None
) -> dict[str, str]:
    """The tags the original Azure ML pipeline put on its data (Length, Start, End, Median and SD of Close)
    plus the content hash, ticker and source."""
    close = prices["Close"].astype("float64")
    tags = {
        "Length": str(len(prices)),
        "Start": pd.Timestamp(prices["Date"].iloc[0]).strftime("%Y-%m-%d"),
        "End": pd.Timestamp(prices["Date"].iloc[-1]).strftime("%Y-%m-%d"),
        "Median": f"{close.median():.4f}",
        "SD": f"{close.std(ddof=1):.4f}",
        "sha256": sha256,
        "ticker": ticker,
    }
    if source:
        tags["source"] = source
    return tags


def write_snapshot(
    df: pd.DataFrame,
    ticker: str,
    directory: str | os.PathLike[str],
    *,
    source: str | None = None,
    min_rows: int = MIN_ROWS,
    name: str | None = None,
) -> Snapshot:
    """Validate `df` and write it as `<directory>/<name>-<version>.csv`, atomically (temp file, fsync,
    rename). The version is `<YYYYMMDD of the last date>-<first 12 hex of the sha256>`: the same data
    gives the same version, and an existing identical file is left untouched. `name`: the data asset's
    name when the caller derived it (a cycle, in its naming version); else `asset_name(ticker)`."""
    symbol = validate_ticker(ticker)
    prices = validate_prices(df, min_rows=min_rows, what=f"snapshot of {symbol}")
    content = snapshot_bytes(prices)
    digest = hashlib.sha256(content).hexdigest()
    version = f"{prices['Date'].iloc[-1].strftime('%Y%m%d')}-{digest[:12]}"
    name = name or asset_name(symbol)
    source = source or df.attrs.get("source")
    tags = snapshot_tags(prices, sha256=digest, ticker=symbol, source=source)

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}-{version}.csv"
    if target.exists():
        existing = hashlib.sha256(target.read_bytes()).hexdigest()
        if existing != digest:
            # Versions are immutable; a different file under this name was changed by someone else.
            raise MarketDataError(
                f"{target} exists with different content (sha256 {existing[:12]}); versions are immutable: "
                "move that file away and write the snapshot again"
            )
    else:
        _atomic_write(target, content)
    return Snapshot(path=target, name=name, version=version, sha256=digest, tags=tags)


def _atomic_write(target: Path, content: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def read_snapshot(path: str | os.PathLike[str], *, min_rows: int = MIN_ROWS) -> pd.DataFrame:
    """A snapshot CSV read back and validated (the inverse of `write_snapshot`)."""
    return validate_prices(_load_csv_plain(Path(path)), min_rows=min_rows, what=f"snapshot {path}")


def _load_csv_plain(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MarketDataError(f"snapshot {path} does not exist")
    return pd.read_csv(path)
