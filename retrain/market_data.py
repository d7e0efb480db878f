"""Daily market data: three sources, one validated shape, immutable snapshots.

Sources (`fetch_prices(..., source=...)`):
- `yfinance`: Yahoo Finance through the `yfinance` package (imported only when used). yfinance answers an
  offline machine or an unknown ticker with an EMPTY frame, not an exception; that becomes a
  `MarketDataError` naming the ticker.
- `sample`: real daily OHLCV for MSFT, AAPL, IBM and GOOG (2000-2013, public domain) shipped by the
  `bokeh_sampledata` package, for offline use. Its Open/High/Low/Close are unadjusted (MSFT split 2:1 in
  2003), so they are scaled by `Adj Close / Close` to make the series split-adjusted.
- `csv:PATH`: a CSV file with a Date column and Open, High, Low, Close, Volume (column names in any case).
  A request (HTTP) may name only files under the data directory the operator configured
  (`RETRAIN_DATA_DIR`), by a path relative to it; the operator's own `RETRAIN_SOURCE` and the CLI user's
  files are not restricted (`request_data_dir`, `resolve_data_file`). Error messages name the file as it
  was named, the row and what was expected; they never quote the file's contents.

Every frame leaving this module has the columns `Date` (tz-naive datetime64 at midnight, strictly
increasing), `Open, High, Low, Close, Volume` (finite, prices > 0, volume >= 0) and at least
`MIN_ROWS` rows. Anything else is rejected with a `MarketDataError` saying what is wrong and what to send.

`write_snapshot` writes such a frame as an immutable CSV whose version derives from its content.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
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
SOURCES = ("yfinance", "sample", "csv:PATH")

DATA_DIR_SETTING = "RETRAIN_DATA_DIR"
_SAMPLE_PACKAGE = "bokeh_sampledata"
# Adjusted prices are rounded to this many decimals: more than the source's precision, and it keeps
# the snapshot (and so its hash and version) independent of floating-point noise in the scaling.
_PRICE_DECIMALS = 6


class MarketDataError(ValueError):
    """Market data could not be fetched or was rejected; the message says why and what to do."""


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
) -> pd.DataFrame:
    """Daily prices of `ticker` from `source`, validated (see the module docstring for the shape).

    `data_dir`: a `csv:NAME` source must name a file inside it (see `resolve_data_file`); None for the
    operator's own sources, which may be anywhere.

    `lookback_days` counts calendar days back from `end` (yfinance: default today, UTC) or from the last
    available date on or before `end` (sample, csv); `None` means all available history. `end` is the
    as-of date: no row after it is returned (`attrs["as_of"]` records it), so offline sources replay
    history without looking ahead. `timeout` bounds
    each request yfinance makes. The frame's `attrs["source"]` records where it came from."""
    symbol = validate_ticker(ticker)
    if lookback_days is not None and (
        isinstance(lookback_days, bool) or not isinstance(lookback_days, int) or lookback_days < 1
    ):
        raise MarketDataError(
            f"lookback_days must be a positive whole number of days or None, got {lookback_days!r}"
        )
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise MarketDataError(f"timeout must be a positive number of seconds, got {timeout!r}")
    end_day = _parse_end(end)
    kind, path = _parse_source(source)

    if kind == "yfinance":
        raw = _fetch_yfinance(symbol, lookback_days, end_day, float(timeout))
        what = f"yfinance data for {symbol}"
    elif kind == "sample":
        raw = _load_sample(symbol)
        what = f"sample data for {symbol}"
    else:
        display = path
        if data_dir is not None:  # a file a request named: only inside the operator's data directory
            path = str(resolve_data_file(display, data_dir))
        raw = _load_csv(Path(path), symbol, display)
        what = f"CSV {display}"

    prices = validate_prices(raw, min_rows=1, what=what)
    if kind != "yfinance":
        prices = _trim_window(prices, lookback_days, end_day, what)
    prices = validate_prices(prices, min_rows=min_rows, what=what)
    prices.attrs["source"] = "csv" if kind == "csv" else kind
    if end_day is not None:
        # Data as known on that day: nothing after it (monitoring and backtests replay history this way).
        prices.attrs["as_of"] = end_day.isoformat()
    return prices


def _parse_source(source: str) -> tuple[str, str]:
    if not isinstance(source, str):
        raise MarketDataError(f"source must be a string, one of {', '.join(SOURCES)}")
    text = source.strip()
    if text.lower() in ("yfinance", "sample"):
        return text.lower(), ""
    if text.lower().startswith("csv:"):
        path = text[4:].strip()
        if not path:
            raise MarketDataError("source 'csv:' needs a path: send csv:PATH, e.g. csv:data/msft.csv")
        return "csv", path
    raise MarketDataError(f"unknown source {source!r}: send one of {', '.join(SOURCES)}")


def parse_as_of(value: dt.date | str | None) -> dt.date | None:
    """An as-of date (data up to and including that trading day) from a date or YYYY-MM-DD; None stays None."""
    return _parse_end(value)


def request_data_dir(source: str, configured_source: str | None, data_dir_setting: str | None) -> Path | None:
    """Where a `csv:` source that came with a request must live: None when the source is not a CSV or is
    the operator's own `RETRAIN_SOURCE`; else the configured data directory. A request naming a CSV when
    no data directory is configured is refused."""
    if not isinstance(source, str) or not source.strip().lower().startswith("csv:"):
        return None
    if configured_source is not None and source.strip() == configured_source.strip():
        return None
    if not data_dir_setting or not str(data_dir_setting).strip():
        raise MarketDataError(
            f"a request may name a CSV only when the operator sets {DATA_DIR_SETTING} (a directory of "
            "CSV files); send source sample or yfinance, or ask the operator to configure it"
        )
    return Path(str(data_dir_setting).strip())


def resolve_data_file(name: str, data_dir: str | os.PathLike[str]) -> Path:
    """The regular file `name` (relative to `data_dir`, or absolute inside it) resolved through `..` and
    symlinks, refused unless it stays inside `data_dir`. Messages name `name`, never the resolved path."""
    shown = repr(name[:80]) + ("..." if len(name) > 80 else "")
    if not name or "\x00" in name:
        raise MarketDataError(f"csv:{shown}: send csv:NAME with the name of a file in {DATA_DIR_SETTING}")
    try:
        root = Path(data_dir).resolve(strict=True)
    except OSError:
        raise MarketDataError(
            f"the data directory ({DATA_DIR_SETTING}) does not exist; the operator must create it"
        ) from None
    try:
        target = (root / name).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        raise MarketDataError(
            f"csv:{shown} is not a file in the data directory; send the name of a CSV file inside "
            f"{DATA_DIR_SETTING}"
        ) from None
    if not target.is_relative_to(root) or not target.is_file():
        raise MarketDataError(
            f"csv:{shown} is not a file inside the data directory (paths may not leave it through .. or "
            f"symlinks); send the name of a CSV file inside {DATA_DIR_SETTING}"
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


def _fetch_yfinance(
    ticker: str, lookback_days: int | None, end: dt.date | None, timeout: float
) -> pd.DataFrame:
    import yfinance as yf  # only here: the Function App imports this module without needing Yahoo

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

    with _capture_log("yfinance") as errors, warnings.catch_warnings():
        # yfinance's own pandas deprecation warnings are noise to our users.
        warnings.filterwarnings("ignore", module=r"yfinance(\.|$)")
        try:
            frame = yf.download(ticker, **kwargs)
        except Exception as exc:  # yfinance raises assorted types (network, rate limit, parsing)
            raise MarketDataError(
                f"yfinance failed for {ticker}: {exc!r}. Check the network and the symbol, "
                "or use --source sample (MSFT, AAPL, IBM, GOOG) or --source csv:PATH"
            ) from exc
    return parse_yfinance_frame(frame, ticker, errors=errors)


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
    try:
        raw = pd.read_csv(path)
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
    df = raw.rename(columns=renamed)
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
