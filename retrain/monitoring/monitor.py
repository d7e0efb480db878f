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


def score_tickers(
    invoke: Callable[[dict[str, Any]], dict[str, Any]],
    closes_by_ticker: dict[str, Sequence[float]],
    budget_s: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """Score several tickers of ONE endpoint that serves a bundle in one batch request
    (`{"instances": [{"ticker", "close"}, ...]}`, the last FORECAST_CLOSES closes each; docs/bundles.md).
    `invoke(payload)` posts to the endpoint (e.g. `lambda p: platform.invoke(endpoint, p)`), waited for as
    `score_with_wait` does. Returns ticker -> the scorer's answer for it: {"ticker", "forecast", "model"},
    or, for an instance the scorer refused, {"ticker", "error", "status"} in its place (the other tickers
    are still answered). A request refused as a whole raises, as `invoke` does."""
    if not closes_by_ticker:
        return {}
    tickers = list(closes_by_ticker)
    payload = {
        "instances": [{"ticker": t, "close": list(closes_by_ticker[t])[-FORECAST_CLOSES:]} for t in tickers]
    }
    answer = score_with_wait(lambda: invoke(payload), budget_s)
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(tickers):
        raise ValueError(
            f"the batch answer has no 'predictions' list of {len(tickers)} entries: {str(answer)[:200]}"
        )
    bundle = answer.get("bundle")
    return {
        ticker: {**prediction, "bundle": bundle} if "error" not in prediction else dict(prediction)
        for ticker, prediction in zip(tickers, predictions, strict=True)
    }


def serving_endpoint(ticker: str) -> str:
    """The endpoint that serves `ticker` now, in any layout: the served ledger's answer (the endpoint of
    its newest live record of the ticker), else the ticker's own endpoint (today's layout)."""
    from retrain import naming
    from retrain.adapters import get_ledger
    from retrain.monitoring.http import candidate_endpoints
    from retrain.monitoring.ledger import served_ticker

    own = naming.endpoint_name(ticker)
    try:
        answer = served_ticker(get_ledger(), ticker, dt.datetime.now(dt.UTC), candidate_endpoints(ticker))
    except Exception as exc:  # noqa: BLE001 - an unreadable ledger must not stop the forecast
        log.warning("served ledger not read for %s (%s); scoring %s", ticker, exc, own)
        return own
    return str(answer["endpoint"]) if answer["serving"] else own


def monitor_day(payload: dict[str, Any]) -> dict[str, Any]:
    """The monitor's work for one trading day (see the module docstring); `payload`: ticker, as_of
    (YYYY-MM-DD or None for the latest data), source, thresholds (dict)."""
    from retrain import naming, settings
    from retrain.adapters import get_forecast_log, get_platform
    from retrain.market_data import fetch_prices, request_data_dir
    from retrain.ports import PlatformError, is_bundle

    ticker = payload["ticker"]
    thresholds = Thresholds(**payload["thresholds"])
    source = payload.get("source") or "yfinance"
    # A CSV the request named (not the operator's RETRAIN_SOURCE) is read only inside RETRAIN_DATA_DIR.
    data_dir = request_data_dir(source, settings.get("RETRAIN_SOURCE"), settings.get("RETRAIN_DATA_DIR"))
    store = get_forecast_log()
    platform = get_platform()
    # The champion first: the prices fetched reach back to the data it was fitted on (its drift reference).
    champion = platform.get_champion(naming.model_name(ticker))
    tags = dict(champion.tags) if champion is not None else {}
    data_end = _champion_data_end(tags)
    fit_end = served_fit_end(tags)
    prices = fetch_prices(
        ticker,
        source=source,
        lookback_days=_history_days(fit_end, payload.get("as_of")),
        end=payload.get("as_of"),
        data_dir=data_dir,
    )
    dates = [d.strftime("%Y-%m-%d") for d in prices["Date"]]
    closes = [float(c) for c in prices["Close"]]
    day = dates[-1]
    alerts: list[dict[str, Any]] = []

    # 1. Join earlier forecasts with the closes now known, then today's forecast of the next close.
    store.join_actuals(ticker, dates, closes)
    endpoint = serving_endpoint(ticker)
    forecast_row: dict[str, Any] | None = None
    # Slots starting or restarting (the scoring URL answers 503 with Retry-After) are waited for.
    score_wait_s = settings.get_float("RETRAIN_MONITOR_SCORE_WAIT_S")
    try:
        state = platform.get_endpoint(endpoint)
        # An endpoint serving a bundle is asked for this ticker; the answer's `model` is the ticker's own
        # model and `bundle` says which deployment answered. A single model keeps today's request.
        bundled = any(is_bundle(m) for m in (state.deployments or {}).values())
        request: dict[str, Any] = {"close": closes[-FORECAST_CLOSES:]}
        if bundled:
            request["ticker"] = ticker
        answer = score_with_wait(lambda: platform.invoke(endpoint, request), score_wait_s)
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
        target = str(np.busday_offset(day, 1, roll="forward"))
        forecast_row = {
            "date": day,
            "target_date": target,
            "last_close": closes[-1],
            "forecast": value,
            "model_name": model.get("name"),
            "model_version": None if model.get("version") is None else str(model.get("version")),
            "slot": slot,
        }
        store.record_forecast(ticker, forecast_row)
    except (PlatformError, KeyError, TypeError, ValueError, IndexError) as exc:
        alerts.append(
            {"kind": "no_forecast", "detail": f"the scoring URL of {endpoint} gave no forecast: {exc}"}
        )

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
    summary = {
        "ticker": ticker,
        "date": day,
        "forecast": forecast_row,
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


def record_retrain(payload: dict[str, Any]) -> dict[str, Any]:
    """After a monitor-started cycle: its instance id and outcome next to the trigger in the log."""
    from retrain.adapters import get_forecast_log

    get_forecast_log().record_retrain(
        payload["ticker"], payload["date"], payload["instance_id"], payload["status"]
    )
    return payload
