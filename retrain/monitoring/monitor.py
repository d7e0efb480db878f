"""One monitored trading day: forecast, log, join, rolling metrics, checks, and whether to retrain.

Pure parts (used by the backtest too):
- `rolling_metrics(rows, windows)`: MAE, naive MAE, their ratio and directional accuracy over the last
  `w` scored forecasts for each window.
- `decide_trigger(drift, cusum_alarm, thresholds, in_cooldown)` -> `{"trigger", "reason"}` or None.
- `drift_reference_end(served_fit_end, served_data_end, rejected_drift_data_ends)`: the last day of the
  drift reference (the served model's fitted data, re-armed after a rejected drift challenger).
- `drift_since_reference(dates, closes, reference_end)` -> `DriftOutcome`: the drift statistic, or why
  it could not be computed (an alert: a check that cannot run is never silent).

`monitor_day(payload)` is the activity: it does the I/O (prices as of the day, the scoring URL, waited for
within `RETRAIN_MONITOR_SCORE_WAIT_S` while it answers 503 with Retry-After, the forecast log, the champion's
test errors) around the pure parts, logs the day's numbers (`day_metrics`) to
the platform's MLflow time series (`MLPlatform.log_monitor_metrics`; a failure there is only a warning),
and returns a JSON summary.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrain.monitoring.detectors import (
    DRIFT_WINDOW_DAYS,
    REFERENCE_DAYS,
    CusumReference,
    DriftResult,
    Thresholds,
    cusum_alarm_days,
    cusum_path,
    data_quality,
    drift_check,
    in_cooldown,
    loss_differential,
)
from retrain.vocabulary import TAG_DATA_VERSION, TAG_FITTED_DATA_END, TAG_JOB_NAME

log = logging.getLogger(__name__)

WINDOWS = (20, 60)
FORECAST_CLOSES = 64  # closes sent to the scoring URL: more than any model window
# Calendar days of prices fetched each day at least (forecast closes, data checks, joins); more when the
# drift reference ends earlier (`_history_days`).
HISTORY_DAYS = 800
# Calendar days before the drift reference's end that hold its REFERENCE_DAYS + 1 closes, with room for
# holidays and market closures (250 trading days span about 365 calendar days).
REFERENCE_LOOKBACK_DAYS = 400
MIN_CUSUM_REFERENCE = 40  # served days that stand in for missing test errors as the CUSUM reference


def rolling_metrics(rows: Sequence[dict[str, Any]], windows: Sequence[int] = WINDOWS) -> dict[str, Any]:
    """Metrics of the last `w` scored forecasts (rows with `forecast`, `last_close` and `actual`)."""
    scored = [r for r in rows if r.get("actual") is not None]
    out: dict[str, Any] = {}
    for w in windows:
        recent = scored[-w:]
        if not recent:
            out[str(w)] = None
            continue
        f = np.array([r["forecast"] for r in recent], dtype=float)
        last = np.array([r["last_close"] for r in recent], dtype=float)
        actual = np.array([r["actual"] for r in recent], dtype=float)
        mae = float(np.mean(np.abs(f - actual)))
        naive = float(np.mean(np.abs(last - actual)))
        out[str(w)] = {
            "n": len(recent),
            "mae": mae,
            "naive_mae": naive,
            "mae_ratio": mae / naive if naive > 0 else None,
            "directional_accuracy": float(np.mean(np.sign(f - last) == np.sign(actual - last))),
        }
    return out


def decide_trigger(
    drift: DriftResult | None,
    cusum: dict[str, Any] | None,
    thresholds: Thresholds,
    cooling_down: bool,
) -> dict[str, str] | None:
    """A retrain trigger when a detector breached and the cooldown allows it; performance first."""
    if cooling_down:
        return None
    if cusum is not None and cusum.get("alarm"):
        return {
            "trigger": "performance",
            "reason": (
                f"CUSUM of |model error| - |naive error| (relative to the close) = {cusum['value']:.3f} > "
                f"threshold {thresholds.cusum:g} over {cusum['days']} served days of model "
                f"{cusum.get('model_version')}"
            ),
        }
    if drift is not None and drift.statistic > thresholds.drift:
        return {
            "trigger": "drift",
            "reason": (
                f"KS distance {drift.statistic:.3f} (returns {drift.ks_returns:.3f}, |returns| "
                f"{drift.ks_abs_returns:.3f}) > threshold {thresholds.drift:g}: last {drift.n_new} trading "
                f"days vs the {drift.n_reference} days of the drift reference"
            ),
        }
    return None


def _champion_data_end(tags: dict[str, Any]) -> str | None:
    version = str(tags.get(TAG_DATA_VERSION) or "")
    if len(version) >= 8 and version[:8].isdigit():
        return f"{version[:4]}-{version[4:6]}-{version[6:8]}"
    return None


def served_fit_end(tags: dict[str, Any]) -> str | None:
    """The last day the served model was fitted on: its `fitted_data_end` tag (YYYY-MM-DD) when it has
    one, else its data version's date (models registered before that tag existed)."""
    fitted = str(tags.get(TAG_FITTED_DATA_END) or "")[:10]
    try:
        return dt.date.fromisoformat(fitted).isoformat()
    except ValueError:
        return _champion_data_end(tags)


def drift_reference_end(
    served_fit_end: str | None, served_data_end: str | None, rejected_drift_data_ends: Iterable[str]
) -> str | None:
    """The last day of the drift reference (YYYY-MM-DD): the served model's fitted-data end, or the data
    end of the latest drift-triggered challenger the gate rejected while that model served, whichever is
    later. Re-armed so against new evidence, drift fires again only when the data moves further than the
    rejected challenger's data, not after every cooldown against the same reference. Rejections on data
    up to the served model's own data end predate it and are ignored. None without a fit end.
    Shared by the monitor and the policy backtest."""
    if served_fit_end is None:
        return None
    since = served_data_end or served_fit_end
    return max([served_fit_end, *(d for d in rejected_drift_data_ends if d > since)])


@dataclass(frozen=True)
class DriftOutcome:
    """One day's drift check: `result`, or `not_checked` (why the statistic could not be computed: the
    monitor raises it as an alert), or neither while fewer than DRIFT_WINDOW_DAYS trading days have
    passed since the reference end (the check is not due yet)."""

    result: DriftResult | None = None
    not_checked: str | None = None


def drift_since_reference(
    dates: Sequence[str], closes: Sequence[float] | np.ndarray, reference_end: str | None
) -> DriftOutcome:
    """The drift check: returns of the last DRIFT_WINDOW_DAYS trading days vs the REFERENCE_DAYS returns up
    to `reference_end` (see `drift_reference_end`; at least REFERENCE_DAYS // 2 of them). `dates`
    ascending (YYYY-MM-DD), one per close, spanning from before the reference to the monitored day (the
    last). Shared by the monitor and the policy backtest."""
    if reference_end is None:
        return DriftOutcome(
            not_checked="the served model has no fitted-data end (neither a fitted_data_end nor a dated "
            "data_version tag); register it with its data's tags"
        )
    if not len(dates):
        return DriftOutcome(not_checked="no prices")
    if reference_end > dates[-1]:
        return DriftOutcome(
            not_checked=f"the reference ends {reference_end}, after the monitored day {dates[-1]} (the "
            "served model was fitted on later data)"
        )
    cut = bisect.bisect_right(dates, reference_end) - 1  # the reference's last close
    returns = np.diff(np.log(np.asarray(closes, dtype=float)))
    new = returns[max(cut, 0) :]
    if cut >= 0 and new.size < DRIFT_WINDOW_DAYS:
        return DriftOutcome()  # not due: fewer new trading days than the window since the reference
    reference = returns[max(0, cut - REFERENCE_DAYS) : max(cut, 0)]
    if reference.size < REFERENCE_DAYS // 2:
        return DriftOutcome(
            not_checked=f"{reference.size} daily returns up to the reference end {reference_end} in the "
            f"data (it starts {dates[0]}); the check needs at least {REFERENCE_DAYS // 2} of "
            f"{REFERENCE_DAYS}"
        )
    return DriftOutcome(result=drift_check(reference, new[-DRIFT_WINDOW_DAYS:]))


def _history_days(fit_end: str | None, as_of: str | None) -> int:
    """Calendar days of prices to fetch as of `as_of` (None: today) so that they reach from before the
    drift reference (REFERENCE_LOOKBACK_DAYS before the served model's fit end) to the day: fetched by the
    fit end, never a fixed "today minus N days", so an old champion's drift check does not go blind."""
    if fit_end is None:
        return HISTORY_DAYS
    day = dt.date.fromisoformat(as_of) if as_of else dt.datetime.now(dt.UTC).date()
    since = (day - dt.date.fromisoformat(fit_end)).days
    return max(HISTORY_DAYS, since + REFERENCE_LOOKBACK_DAYS)


def _cusum_reference(test_errors: dict[str, Any] | None) -> CusumReference | None:
    if not test_errors:
        return None
    try:
        actual = np.asarray(test_errors["actual"], dtype=float)
        model = np.asarray(test_errors["model"], dtype=float) - actual
        naive_forecast = np.asarray(test_errors["naive"], dtype=float)
        return CusumReference.from_differential(
            loss_differential(model, naive_forecast - actual, naive_forecast)
        )
    except (KeyError, TypeError, ValueError):
        return None


def day_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers of one monitored day (a `monitor_day` summary) as MLflow metrics: per window
    `mae_<w>`, `naive_mae_<w>`, `mae_ratio_<w>`, `directional_accuracy_<w>`, `n_<w>`; `drift` (and its
    `drift_ks_returns`, `drift_ks_abs_returns`), `cusum`, `forecast`, `last_close`, `scored`, `alerts`.
    Only values that exist and are finite that day."""
    out: dict[str, Any] = {}
    for window, values in (summary.get("metrics") or {}).items():
        for key in ("mae", "naive_mae", "mae_ratio", "directional_accuracy", "n"):
            out[f"{key}_{window}"] = (values or {}).get(key)
    drift = summary.get("drift") or {}
    out["drift"] = drift.get("statistic")
    out["drift_ks_returns"] = drift.get("ks_returns")
    out["drift_ks_abs_returns"] = drift.get("ks_abs_returns")
    out["cusum"] = (summary.get("cusum") or {}).get("value")
    forecast = summary.get("forecast") or {}
    out["forecast"] = forecast.get("forecast")
    out["last_close"] = forecast.get("last_close")
    out["scored"] = summary.get("scored")
    out["alerts"] = len(summary.get("alerts") or [])
    return {
        key: float(value)
        for key, value in out.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def performance_check(
    forecast: Sequence[float] | np.ndarray,
    actual: Sequence[float] | np.ndarray,
    last_close: Sequence[float] | np.ndarray,
    test_errors: dict[str, Any] | None,
    threshold: float,
    model_version: str,
) -> dict[str, Any] | None:
    """The CUSUM of the champion's scored forecasts since its data end (oldest first), standardised by its
    test window (`test_errors`; without them its first MIN_CUSUM_REFERENCE served days are the reference).
    -> {"value", "days", "alarm" (on the newest day), "model_version"}, or None when nothing can be judged.
    Shared by the monitor and the policy backtest."""
    forecast, actual, last_close = (np.asarray(a, dtype=float) for a in (forecast, actual, last_close))
    reference = _cusum_reference(test_errors)
    start = 0
    if reference is None and forecast.size > 2 * MIN_CUSUM_REFERENCE:
        # No test errors from the trainer: the champion's first served days are its reference.
        first = slice(0, MIN_CUSUM_REFERENCE)
        reference = CusumReference.from_differential(
            loss_differential(
                forecast[first] - actual[first], last_close[first] - actual[first], last_close[first]
            )
        )
        start = MIN_CUSUM_REFERENCE
    if reference is None or forecast.size <= start:
        return None
    d = loss_differential(
        forecast[start:] - actual[start:], last_close[start:] - actual[start:], last_close[start:]
    )
    alarms = cusum_alarm_days(d, reference, threshold, cooldown=0)
    return {
        "value": float(cusum_path(d, reference)[-1]),
        "days": int(d.size),
        "alarm": bool(alarms) and alarms[-1] == d.size - 1,
        "model_version": model_version,
    }


def score_with_wait(
    invoke: Callable[[], dict[str, Any]],
    budget_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """`invoke()`, called again after each `ScoringUnavailableError` (a 503/429 with Retry-After: the slots
    are starting or restarting) once its Retry-After has passed, for at most `budget_s` seconds in all;
    the last refusal is raised, saying how long was waited, when the budget would be exceeded."""
    from retrain.ports import ScoringUnavailableError

    started = clock()
    while True:
        try:
            return invoke()
        except ScoringUnavailableError as exc:
            waited = clock() - started
            # At least a short pause, at most what the server asked (a huge Retry-After is cut at the budget).
            pause = min(max(exc.retry_after_s, 0.5), max(budget_s - waited, 0.0))
            if pause <= 0 or waited + pause > budget_s:
                raise ScoringUnavailableError(
                    f"{exc} (still refused after waiting {waited:.0f}s of RETRAIN_MONITOR_SCORE_WAIT_S="
                    f"{budget_s:g})",
                    exc.retry_after_s,
                ) from exc
            log.info("scoring URL not ready (%s); trying again in %.1fs", exc, pause)
            sleep(pause)


# Instances per batch request: the scorer takes at most 1000 and a 1 MiB body (scorer/score.py); 64 closes
# are ~1.3 KB as JSON, so 500 keep well inside both. A larger endpoint group is scored in several requests.
MAX_SCORE_BATCH = 500


def score_tickers(
    invoke: Callable[[dict[str, Any]], dict[str, Any]],
    closes_by_ticker: dict[str, Sequence[float]],
    budget_s: float = 0.0,
    max_batch: int = MAX_SCORE_BATCH,
) -> dict[str, dict[str, Any]]:
    """Score several tickers of ONE endpoint that serves a bundle in one batch request
    (`{"instances": [{"ticker", "close"}, ...]}`, the last FORECAST_CLOSES closes each; docs/bundles.md),
    or one request per `max_batch` tickers beyond that. `invoke(payload)` posts to the endpoint (e.g.
    `lambda p: platform.invoke(endpoint, p)`), waited for as `score_with_wait` does. Returns ticker -> the
    scorer's answer for it: {"ticker", "forecast", "model", "bundle"}, or, for an instance the scorer
    refused, {"ticker", "error", "status"} in its place (the other tickers are still answered). A request
    refused as a whole raises, as `invoke` does."""
    out: dict[str, dict[str, Any]] = {}
    tickers = list(closes_by_ticker)
    for first in range(0, len(tickers), max(1, max_batch)):
        part = tickers[first : first + max(1, max_batch)]
        payload = {
            "instances": [{"ticker": t, "close": list(closes_by_ticker[t])[-FORECAST_CLOSES:]} for t in part]
        }
        answer = score_with_wait(functools.partial(invoke, payload), budget_s)
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list) or len(predictions) != len(part):
            raise ValueError(
                f"the batch answer has no 'predictions' list of {len(part)} entries: {str(answer)[:200]}"
            )
        bundle = answer.get("bundle")
        for ticker, prediction in zip(part, predictions, strict=True):
            out[ticker] = {**prediction, "bundle": bundle} if "error" not in prediction else dict(prediction)
    return out


def serving_endpoint(ticker: str) -> str:
    """The endpoint that serves `ticker` now, in any layout: the served ledger's answer (the endpoint of
    its newest live record of the ticker), else its serving target under RETRAIN_ENDPOINTS (a ticker not
    deployed yet: where its first model will go), else its own endpoint (a layout setting that cannot be
    read)."""
    from retrain import naming
    from retrain.adapters import get_ledger
    from retrain.monitoring.http import candidate_endpoints
    from retrain.monitoring.ledger import served_ticker
    from retrain.settings import get

    try:
        layout = naming.serving_target(ticker, naming.parse_endpoint_groups(get("RETRAIN_ENDPOINTS")))
    except naming.NamingError as exc:
        layout = naming.endpoint_name(ticker)
        log.warning("RETRAIN_ENDPOINTS not read for %s (%s); scoring %s", ticker, exc, layout)
    try:
        answer = served_ticker(get_ledger(), ticker, dt.datetime.now(dt.UTC), candidate_endpoints(ticker))
    except Exception as exc:  # noqa: BLE001 - an unreadable ledger must not stop the forecast
        log.warning("served ledger not read for %s (%s); scoring %s", ticker, exc, layout)
        return layout
    return str(answer["endpoint"]) if answer["serving"] else layout


@dataclass(frozen=True)
class TickerDay:
    """One ticker's day as the checks see it: the served champion (its tags) and the prices as known."""

    ticker: str
    champion: Any  # ports.ModelRef | None
    tags: dict[str, Any]
    dates: list[str]
    closes: list[float]

    @property
    def day(self) -> str:
        return self.dates[-1]


def load_day(
    ticker: str, as_of: str | None, source: str, data_dir: Any, platform: Any, fetch: Callable[..., Any]
) -> TickerDay:
    """The champion first: the prices fetched (`fetch`, market_data.fetch_prices) reach back to the data it
    was fitted on (its drift reference)."""
    from retrain import naming

    champion = platform.get_champion(naming.model_name(ticker))
    tags = dict(champion.tags) if champion is not None else {}
    prices = fetch(
        ticker,
        source=source,
        lookback_days=_history_days(served_fit_end(tags), as_of),
        end=as_of,
        data_dir=data_dir,
    )
    dates = [d.strftime("%Y-%m-%d") for d in prices["Date"]]
    return TickerDay(ticker, champion, tags, dates, [float(c) for c in prices["Close"]])


# What a forecast row holds (the forecast log's columns the monitor writes; `summary["forecast"]`).
FORECAST_KEYS = ("date", "target_date", "last_close", "forecast", "model_name", "model_version", "slot")


def forecast_row(
    answer: dict[str, Any], state: Any, bundled: bool, day: str, closes: Sequence[float]
) -> dict[str, Any]:
    """The forecast log's row of one scoring answer (`{"forecast": [x], "model", "bundle"?}`): the model
    the answer names and the slot serving that version in the endpoint's `state` (a bundle's version when
    the endpoint serves bundles). Raises KeyError, TypeError, ValueError or IndexError for an answer
    without a finite forecast (no forecast that day: an alert, never a failed day)."""
    value = float(answer["forecast"][0])
    if not math.isfinite(value):
        raise ValueError(f"forecast {value!r} is not finite")
    model = answer.get("model") or {}
    served_version = (answer.get("bundle") or {}).get("version") if bundled else model.get("version")
    slot = next(
        (
            s
            for s, m in (state.deployments or {}).items()
            if str((m or {}).get("version")) == str(served_version)
        ),
        None,
    )
    return {
        "date": day,
        "target_date": str(np.busday_offset(day, 1, roll="forward")),
        "last_close": closes[-1],
        "forecast": value,
        "model_name": model.get("name"),
        "model_version": None if model.get("version") is None else str(model.get("version")),
        "slot": slot,
    }


def no_forecast(endpoint: str, problem: Any) -> str:
    return f"the scoring URL of {endpoint} gave no forecast: {problem}"


def monitor_day(payload: dict[str, Any]) -> dict[str, Any]:
    """The monitor's work for one trading day (see the module docstring); `payload`: ticker, as_of
    (YYYY-MM-DD or None for the latest data), source, thresholds (dict)."""
    from retrain import settings
    from retrain.adapters import get_forecast_log, get_platform
    from retrain.market_data import fetch_prices, request_data_dir
    from retrain.ports import PlatformError, is_bundle

    ticker = payload["ticker"]
    source = payload.get("source") or "yfinance"
    # A CSV the request named (not the operator's RETRAIN_SOURCE) is read only inside RETRAIN_DATA_DIR.
    data_dir = request_data_dir(source, settings.get("RETRAIN_SOURCE"), settings.get("RETRAIN_DATA_DIR"))
    store = get_forecast_log()
    platform = get_platform()
    data = load_day(ticker, payload.get("as_of"), source, data_dir, platform, fetch_prices)
    alerts: list[dict[str, Any]] = []

    # 1. Join earlier forecasts with the closes now known, then today's forecast of the next close.
    store.join_actuals(ticker, data.dates, data.closes)
    endpoint = serving_endpoint(ticker)
    row: dict[str, Any] | None = None
    # Slots starting or restarting (the scoring URL answers 503 with Retry-After) are waited for.
    score_wait_s = settings.get_float("RETRAIN_MONITOR_SCORE_WAIT_S")
    try:
        state = platform.get_endpoint(endpoint)
        # An endpoint serving a bundle is asked for this ticker; the answer's `model` is the ticker's own
        # model and `bundle` says which deployment answered. A single model keeps today's request.
        bundled = any(is_bundle(m) for m in (state.deployments or {}).values())
        request: dict[str, Any] = {"close": data.closes[-FORECAST_CLOSES:]}
        if bundled:
            request["ticker"] = ticker
        answer = score_with_wait(lambda: platform.invoke(endpoint, request), score_wait_s)
        row = forecast_row(answer, state, bundled, data.day, data.closes)
        store.record_forecast(ticker, row)
    except (PlatformError, KeyError, TypeError, ValueError, IndexError) as exc:
        alerts.append({"kind": "no_forecast", "detail": no_forecast(endpoint, exc)})
    return check_day(data, Thresholds(**payload["thresholds"]), store, platform, row, alerts)


def check_day(
    data: TickerDay,
    thresholds: Thresholds,
    store: Any,
    platform: Any,
    forecast: dict[str, Any] | None,
    alerts: list[dict[str, Any]],
) -> dict[str, Any]:
    """Steps 2 to 5 of a ticker's day, once its actuals are joined and its forecast is logged (`forecast`,
    or None with a `no_forecast` alert in `alerts`): rolling metrics, drift and CUSUM against the
    champion, data quality, the trigger, the MLflow time series, the day's record. The one code of the
    per-ticker monitor and the fleet monitor (monitoring/fleet_monitor.py); returns the day's summary."""
    from retrain.ports import PlatformError

    ticker, day, dates, closes = data.ticker, data.day, data.dates, data.closes
    champion, tags = data.champion, data.tags
    data_end = _champion_data_end(tags)
    fit_end = served_fit_end(tags)
    rows = store.forecasts(ticker, until=day)
    metrics = rolling_metrics(rows)

    # 2. Checks against the champion: drift of returns since the data it was fitted on (or since the data
    # of the last drift challenger the gate rejected while it served), CUSUM of its errors.
    drift = None
    reference_end = None
    if champion is not None:
        rejected = [
            t["date"]
            for t in store.triggers(ticker)
            if t.get("trigger") == "drift" and t.get("status") == "rejected" and t["date"] < day
        ]
        reference_end = drift_reference_end(fit_end, data_end, rejected)
        outcome = drift_since_reference(dates, closes, reference_end)
        drift = outcome.result
        if outcome.not_checked is not None:
            detail = f"drift not checked: {outcome.not_checked}"
            alerts.append({"kind": "drift_not_checked", "date": day, "detail": detail})
            log.warning("%s %s: drift not checked: %s", ticker, day, outcome.not_checked)
    if drift is not None and drift.statistic > thresholds.drift:
        alerts.append({"kind": "drift", "statistic": drift.statistic, "threshold": thresholds.drift})

    cusum: dict[str, Any] | None = None
    if champion is not None:
        served = [
            r
            for r in rows
            if r.get("actual") is not None
            and r.get("model_version") == str(champion.version)
            and (data_end is None or r["date"] > data_end)
        ]
        test_errors = None
        job = tags.get(TAG_JOB_NAME)
        if job:
            try:
                test_errors = platform.get_job_test_errors(job)
            except (PlatformError, AttributeError) as exc:
                log.warning("no test errors for %s: %s", job, exc)
        cusum = performance_check(
            [r["forecast"] for r in served],
            [r["actual"] for r in served],
            [r["last_close"] for r in served],
            test_errors,
            thresholds.cusum,
            str(champion.version),
        )
        if cusum is not None and cusum["alarm"]:
            alerts.append({"kind": "performance", "statistic": cusum["value"], "threshold": thresholds.cusum})

    # 3. Data quality (alerts only: retraining on broken data would make it worse).
    for issue in data_quality(dates[-30:], closes[-30:], split_tolerance=thresholds.split_tolerance):
        if issue.kind == "split" or issue.date == day:
            alerts.append({"kind": f"data_{issue.kind}", "date": issue.date, "detail": issue.detail})

    # 4. Trigger (cooldown in trading days since the monitor's last trigger).
    last = store.last_trigger_date(ticker, day)
    cooling = in_cooldown(last, day, thresholds.cooldown_days)
    trigger = decide_trigger(drift, cusum, thresholds, cooling)
    if trigger is not None:
        store.record_trigger(ticker, day, trigger["trigger"], trigger["reason"])
    summary: dict[str, Any] = {
        "ticker": ticker,
        "date": day,
        "forecast": forecast,
        "scored": sum(1 for r in rows if r.get("actual") is not None),
        "metrics": metrics,
        "drift": None if drift is None else drift.to_dict(),
        "drift_reference_end": reference_end,
        "cusum": cusum,
        "alerts": alerts,
        "cooldown": cooling,
        "trigger": trigger,
        "champion_version": None if champion is None else str(champion.version),
        "warnings": [],
    }
    # 5. The day's numbers as MLflow time series; the monitor's verdict does not depend on them.
    try:
        platform.log_monitor_metrics(ticker, day, day_metrics(summary))
    except Exception as exc:  # noqa: BLE001 (any failure of the metrics store is only a warning)
        log.warning("could not log the monitor metrics of %s on %s: %s", ticker, day, exc)
        summary["warnings"].append(f"metrics not logged to MLflow: {type(exc).__name__}: {exc}")
    store.record_day(ticker, day, summary)
    return summary


def score_group(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fleet monitor's scoring of many tickers for one day (monitoring/fleet_monitor.py): `payload`:
    tickers (an endpoint group, or several small ones), as_of, source. Their prices are fetched at once
    (`market_data.fetch_many_prices`: one yfinance download), each ticker's serving endpoint is found as
    the per-ticker monitor finds it (`serving_endpoint`), and each endpoint that serves a bundle is asked
    for all its tickers in ONE batch request (`score_tickers`); an endpoint serving a single model is
    asked as the per-ticker monitor asks it. Each forecast goes to the forecast log as `monitor_day`
    writes it. Returns ticker -> {"date": the data's last day, "error": None | the no_forecast detail}; a
    ticker whose data or scoring fails is answered alone."""
    from retrain import settings
    from retrain.adapters import get_forecast_log, get_platform
    from retrain.market_data import fetch_many_prices, request_data_dir
    from retrain.ports import PlatformError, is_bundle

    tickers = list(payload["tickers"])
    source = payload.get("source") or "yfinance"
    data_dir = request_data_dir(source, settings.get("RETRAIN_SOURCE"), settings.get("RETRAIN_DATA_DIR"))
    # HISTORY_DAYS: the lookback only moves the first row, never the last FORECAST_CLOSES closes, so these
    # are the closes `load_day` fetches with the champion's longer lookback (the checks' prices).
    fetched = fetch_many_prices(tickers, source, HISTORY_DAYS, end=payload.get("as_of"), data_dir=data_dir)
    out: dict[str, dict[str, Any]] = {
        t: {"date": None, "error": f"no prices to score: {why}"} for t, why in fetched.failed.items()
    }
    closes: dict[str, list[float]] = {}
    days: dict[str, str] = {}
    by_endpoint: dict[str, list[str]] = {}
    for ticker, prices in fetched.prices.items():
        closes[ticker] = [float(c) for c in prices["Close"]]
        days[ticker] = prices["Date"].iloc[-1].strftime("%Y-%m-%d")
        by_endpoint.setdefault(serving_endpoint(ticker), []).append(ticker)
    store = get_forecast_log()
    platform = get_platform()
    score_wait_s = settings.get_float("RETRAIN_MONITOR_SCORE_WAIT_S")

    def record(ticker: str, endpoint: str, answer: Any, state: Any, bundled: bool) -> None:
        try:
            if isinstance(answer, dict) and "error" in answer:
                raise PlatformError(f"{answer.get('status')}: {answer['error']}")
            row = forecast_row(answer, state, bundled, days[ticker], closes[ticker])
        except (PlatformError, KeyError, TypeError, ValueError, IndexError) as exc:
            out[ticker] = {"date": days[ticker], "error": no_forecast(endpoint, exc)}
            return
        store.record_forecast(ticker, row)
        out[ticker] = {"date": days[ticker], "error": None}

    for endpoint, group in by_endpoint.items():
        try:
            state = platform.get_endpoint(endpoint)
            bundled = any(is_bundle(m) for m in (state.deployments or {}).values())
            if bundled:
                answers = score_tickers(
                    functools.partial(platform.invoke, endpoint), {t: closes[t] for t in group}, score_wait_s
                )
        except (PlatformError, KeyError, TypeError, ValueError, IndexError) as exc:
            out.update({t: {"date": days[t], "error": no_forecast(endpoint, exc)} for t in group})
            continue
        for ticker in group:
            if bundled:
                record(ticker, endpoint, answers.get(ticker), state, True)
                continue
            request = {"close": closes[ticker][-FORECAST_CLOSES:]}
            try:
                answer = score_with_wait(functools.partial(platform.invoke, endpoint, request), score_wait_s)
            except (PlatformError, KeyError, TypeError, ValueError, IndexError) as exc:
                out[ticker] = {"date": days[ticker], "error": no_forecast(endpoint, exc)}
                continue
            record(ticker, endpoint, answer, state, False)
    return {t: out.get(t) or {"date": None, "error": "no prices came back"} for t in tickers}


def logged_forecast(store: Any, ticker: str, day: str) -> dict[str, Any] | None:
    """The forecast the log holds for `ticker` on `day` (as `forecast_row` made it), or None."""
    rows = [r for r in store.forecasts(ticker, until=day) if r.get("date") == day]
    return {k: rows[-1].get(k) for k in FORECAST_KEYS} if rows else None


def check_group(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The fleet monitor's checks of many tickers for one day, after `score_group`: `payload`: tickers,
    as_of, source, thresholds, scored (ticker -> `score_group`'s answer). Per ticker what `monitor_day`
    does after its forecast (`load_day`, the joins, `check_day`), with the forecast read back from the log.
    Returns ticker -> `compact(summary)`, or {"error"} for a ticker whose day failed (the others go on)."""
    from retrain import settings
    from retrain.adapters import get_forecast_log, get_platform
    from retrain.market_data import fetch_prices, request_data_dir

    source = payload.get("source") or "yfinance"
    data_dir = request_data_dir(source, settings.get("RETRAIN_SOURCE"), settings.get("RETRAIN_DATA_DIR"))
    thresholds = Thresholds(**payload["thresholds"])
    scored = payload.get("scored") or {}
    store = get_forecast_log()
    platform = get_platform()
    out: dict[str, dict[str, Any]] = {}
    for ticker in payload["tickers"]:
        try:
            data = load_day(ticker, payload.get("as_of"), source, data_dir, platform, fetch_prices)
            store.join_actuals(ticker, data.dates, data.closes)
            score = scored.get(ticker) or {"error": "the scoring step gave no answer for it"}
            row = None
            if score.get("error") is None and score.get("date") == data.day:
                row = logged_forecast(store, ticker, data.day)
            alerts: list[dict[str, Any]] = []
            if row is None:
                if score.get("error") is not None:
                    why = str(score["error"])
                elif score.get("date") != data.day:  # the live source moved on between the two steps
                    why = f"scored on data up to {score.get('date')}, checked on data up to {data.day}"
                else:
                    why = f"its forecast of {data.day} is not in the forecast log"
                alerts.append({"kind": "no_forecast", "detail": why})
            out[ticker] = compact(check_day(data, thresholds, store, platform, row, alerts))
        except Exception as exc:  # noqa: BLE001 - this ticker's day failed: said alone, the others go on
            log.warning("monitor: %s failed: %s", ticker, exc)
            out[ticker] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
    return out


def compact(summary: dict[str, Any]) -> dict[str, Any]:
    """What the fleet monitor's orchestration keeps of a day's summary (the whole one is in the forecast
    log's `days`): the monitor's output per ticker is built from these, as `summarise` builds a
    per-ticker monitor's."""
    window = (summary.get("metrics") or {}).get("20") or {}
    return {
        "date": summary["date"],
        "forecast": (summary.get("forecast") or {}).get("forecast"),
        "scored": summary.get("scored", 0),
        "mae_ratio": window.get("mae_ratio"),
        "alerts": summary.get("alerts") or [],
        "trigger": summary.get("trigger"),
        "warnings": summary.get("warnings") or [],
    }


def record_retrain(payload: dict[str, Any]) -> dict[str, Any]:
    """After a monitor-started cycle: its instance id and outcome next to the trigger in the log."""
    from retrain.adapters import get_forecast_log

    get_forecast_log().record_retrain(
        payload["ticker"], payload["date"], payload["instance_id"], payload["status"]
    )
    return payload
