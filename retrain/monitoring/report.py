"""`retrain report`: the monitor's record as a picture and as MLflow time series.

`write_report(ticker, out_png)` draws, from the forecast log and the served ledger of the state dir:
realised closes against the served forecasts, the 20-day error ratio (model MAE / naive MAE), the CUSUM of
the served model's errors with its threshold, the drift statistic with its threshold, the retrain triggers
(vertical lines) and the served-version timeline. The monitor itself logs each day's metrics to MLflow
(`MLPlatform.log_monitor_metrics`); `log_to_mlflow(ticker)` back-fills the state dir's MLflow store from
the forecast log with the same code (days already logged are skipped). Both run on the CLI side
(matplotlib, mlflow), never in the Function App.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any


class ReportError(ValueError):
    """Nothing to report, or a bad output path; the message says what to do."""


def daily_series(days: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The per-day values the report and MLflow show (None where a value does not exist that day)."""
    out: dict[str, list[Any]] = {
        k: [] for k in ("date", "last_close", "forecast", "mae_ratio_20", "cusum", "drift", "model_version")
    }
    for day in days:
        forecast = day.get("forecast") or {}
        window = (day.get("metrics") or {}).get("20") or {}
        out["date"].append(day["date"])
        out["last_close"].append(forecast.get("last_close"))
        out["forecast"].append(forecast.get("forecast"))
        out["mae_ratio_20"].append(window.get("mae_ratio"))
        out["cusum"].append((day.get("cusum") or {}).get("value"))
        out["drift"].append((day.get("drift") or {}).get("statistic"))
        out["model_version"].append(forecast.get("model_version"))
    return out


def write_report(ticker: str, out_png: str | Path) -> dict[str, Any]:
    from retrain import naming
    from retrain.adapters import get_forecast_log, get_ledger
    from retrain.market_data import validate_ticker
    from retrain.monitoring.calibration import thresholds_from_settings

    symbol = validate_ticker(ticker)
    target = Path(out_png)
    if target.suffix.lower() != ".png":
        raise ReportError(f"--out {target}: send a path ending in .png")
    if not target.parent.is_dir():
        raise ReportError(f"--out {target}: the folder {target.parent} does not exist; create it first")
    store = get_forecast_log()
    days = store.days(symbol)
    if not days:
        raise ReportError(f"no monitored days for {symbol}; run `retrain monitor --ticker {symbol}` first")
    series = daily_series(days)
    triggers = store.triggers(symbol)
    events = get_ledger().events(naming.endpoint_name(symbol))
    thresholds = thresholds_from_settings()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    dates = [dt.date.fromisoformat(d) for d in series["date"]]
    fig, axes = plt.subplots(5, 1, figsize=(11, 12), sharex=True, height_ratios=[3, 1.4, 1.4, 1.4, 1])
    price, ratio, cusum, drift, versions = axes
    # A forecast made on day d is for the next trading day: draw it there, next to what happened.
    realised = [(d, c) for d, c in zip(dates, series["last_close"], strict=True) if c is not None]
    price.plot(*zip(*realised, strict=True), color="black", linewidth=1.2, label="realised close")
    made = [(d, f) for d, f in zip(dates, series["forecast"], strict=True) if f is not None]
    if len(made) > 1:
        shifted = [(made[i + 1][0], made[i][1]) for i in range(len(made) - 1)]
        price.plot(*zip(*shifted, strict=True), color="tab:blue", linewidth=1.0, label="served forecast")
    price.set_ylabel("close")
    price.set_title(f"{symbol}: served forecasts, errors, drift and retrains")
    _series(ratio, dates, series["mae_ratio_20"], "MAE / naive MAE, 20 days", 1.0, "naive (1.0)")
    _series(cusum, dates, series["cusum"], "CUSUM of |e| - |e_naive|", thresholds.cusum, "threshold")
    _series(drift, dates, series["drift"], "drift: KS distance", thresholds.drift, "threshold")
    for ax in axes[:4]:
        for trig in triggers:
            ax.axvline(dt.date.fromisoformat(trig["date"]), color="tab:red", linestyle="--", linewidth=1)
    if triggers:
        price.plot([], [], color="tab:red", linestyle="--", label="retrain triggered")
    price.legend(loc="best")
    # The served-version timeline: the ledger's events, as steps of the version with the most traffic.
    timeline = []
    for event in events:
        live = [s for s in event.slots if s.weight > 0]
        top = max(live, key=lambda s: s.weight) if live else None
        moment = dt.datetime.fromisoformat(event.time.replace("Z", "+00:00")).date()
        timeline.append(
            (moment, int(str(top.model_version)) if top and str(top.model_version).isdigit() else 0)
        )
    logged = [
        (d, int(v)) for d, v in zip(dates, series["model_version"], strict=True) if v and str(v).isdigit()
    ]
    # Ledger events are wall-clock times; an offline replay's days are history: keep the ones in range.
    in_range = [(d, v) for d, v in timeline if dates[0] <= d <= dates[-1] and v > 0]
    points = sorted(in_range + logged)
    if points:
        versions.step(*zip(*points, strict=True), where="post", color="tab:green")
    versions.set_ylabel("served version")
    versions.yaxis.get_major_locator().set_params(integer=True)
    versions.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    fig.autofmt_xdate()
    fig.tight_layout()
    tmp = target.with_name(f".{target.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, target)
    return {
        "ticker": symbol,
        "out": str(target.resolve()),
        "days": len(days),
        "first": series["date"][0],
        "last": series["date"][-1],
        "triggers": len(triggers),
        "ledger_events": len(events),
    }


def _series(
    ax: Any, dates: list[dt.date], values: list[Any], label: str, line: float, line_label: str
) -> None:
    points = [(d, v) for d, v in zip(dates, values, strict=True) if v is not None]
    if points:
        ax.plot(*zip(*points, strict=True), color="tab:purple", linewidth=1.0)
    ax.axhline(line, color="gray", linestyle=":", linewidth=1, label=line_label)
    ax.set_ylabel(label, fontsize=8)
    ax.legend(loc="upper left", fontsize=8)


def log_to_mlflow(ticker: str) -> str:
    """Log every monitored day of `ticker` from the forecast log to the state dir's MLflow store, through
    the local platform's `log_monitor_days` (the same code the monitor uses each day: experiment
    `monitor-<ticker>`, run `monitor`, step = the day's ordinal, timestamp = the day). Days already logged
    are skipped, so this only fills in what the monitor did not log. The run id."""
    from retrain import settings
    from retrain.adapters import get_forecast_log
    from retrain.local.platform import LocalPlatform
    from retrain.market_data import validate_ticker
    from retrain.monitoring.monitor import day_metrics

    symbol = validate_ticker(ticker)
    days = get_forecast_log().days(symbol)
    if not days:
        raise ReportError(f"no monitored days for {symbol}; run `retrain monitor --ticker {symbol}` first")
    return LocalPlatform(settings.state_dir()).log_monitor_days(
        symbol, {day["date"]: day_metrics(day) for day in days}
    )
