"""The policy backtest's replay: one ticker, every policy, day by day with data as known each day.

Timing (one rule for every policy): a training on data through trading day j serves the forecasts made
from the close of day j+1 on. That is what the live system does: the weekly timer fires on Monday 01:00
UTC with data through Friday and the new model serves Monday's forecast; the monitor forecasts after a
day's close and then starts a cycle on that day's data, whose model serves from the next day's forecast.
The first model of every policy is trained on data through the day before the first forecast (the
trading day before --start's first forecast), or, when that history is too short for the live data
checks (`retrain.market_data.MIN_ROWS` rows) or the trainer, on the first day it suffices; until a model
serves, the naive forecast (today's close) is what "serves" (served version `none`).

What is the live system's own code here, not a copy:
- data as of each day: `retrain.market_data.fetch_prices` once up to --end, then its own as-of trim
  (`_trim_window`: nothing after the day, `lookback_days` calendar days back) and `validate_prices` with
  `MIN_ROWS` before each training, exactly what a cycle's `fetch_data` applies;
- fitting: the trainer folder's `fit_closes` (`retrain.backtest.fitting`), which its `train.py`'s run uses;
- the gate: `retrain.gate.decide_with_test_errors` with the cycle's settings (`CycleInput.from_settings`:
  margin, alpha, gate metrics, gate policy; `--gate-policy` and its margin may override the policy) on the challenger's test errors with the champion on the same days;
- schedules: `functions_host.ncrontab` on `RETRAIN_SCHEDULE` (weekly) and `MONTHLY_SCHEDULE`;
- the monitor: `retrain.monitoring.monitor.drift_reference_end` (the served model's data, re-armed
  after a rejected drift challenger), `drift_since_reference`, `performance_check` and `decide_trigger`,
  `retrain.monitoring.detectors.in_cooldown`, thresholds from
  `retrain.monitoring.calibration.thresholds_from_settings` (the RETRAIN_MONITOR_* settings). The live
  monitor fetches prices back to the served model's data, so the replay reads the whole series; a day
  whose drift check could not run is counted (`drift_unchecked_days`), as the monitor alerts on it.

Trainings are cached per (data end day) within a ticker and trainer, so policies that train on the same
day share one fit; each policy is still charged the fit's CPU seconds (its cost had it run alone).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from functions_host import ncrontab
from retrain.backtest.fitting import FitError, FittedModel, InProcessTrainer
from retrain.gate import GateMetrics, GatePolicy, decide_with_test_errors
from retrain.market_data import MIN_ROWS, MarketDataError, _trim_window, fetch_prices, validate_prices
from retrain.monitoring.detectors import REFERENCE_DAYS, Thresholds, in_cooldown
from retrain.monitoring.monitor import (
    decide_trigger,
    drift_reference_end,
    drift_since_reference,
    performance_check,
)

SCHEDULE_POLICIES = ("weekly", "monthly")
MONITOR_POLICIES = ("drift", "performance", "monitor")  # monitor: both detectors, as the live monitor
DRIFT_POLICIES = ("drift", "monitor")
POLICIES = ("never", *SCHEDULE_POLICIES, *MONITOR_POLICIES)
DEFAULT_POLICIES = ("never", "weekly", "monthly", "drift", "performance")
MONTHLY_SCHEDULE = "0 0 1 1 * *"  # 01:00 UTC on the 1st: the weekly timer's hour, once a month
CLOSE_UTC = dt.time(21, 0)  # a day's close is known from 21:00 UTC (the monitor runs at 21:30)


class BacktestError(ValueError):
    """Input the backtest cannot run on; the message says what to send instead."""


@dataclass(frozen=True)
class BacktestSettings:
    """Everything a replay depends on besides the ticker: the live settings a cycle and the monitor read."""

    start: dt.date
    end: dt.date
    policies: tuple[str, ...]
    trainer: str
    hyperparameters: dict[str, Any]
    source: str
    lookback_days: int | None
    baseline_margin: float
    gate_alpha: float
    gate_metrics: dict[str, Any]
    gate_policy: str  # retrain.gate.GatePolicy fields: the champion policy, its margin, the baseline rule
    gate_noninferiority_margin: float
    gate_baseline_rule: str
    thresholds: Thresholds
    weekly_schedule: str
    monthly_schedule: str = MONTHLY_SCHEDULE

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "policies": list(self.policies),
            "trainer": self.trainer,
            "hyperparameters": dict(self.hyperparameters),
            "source": self.source,
            "lookback_days": self.lookback_days,
            "baseline_margin": self.baseline_margin,
            "gate_alpha": self.gate_alpha,
            "gate_metrics": dict(self.gate_metrics),
            "gate_policy": self.gate_policy,
            "gate_noninferiority_margin": self.gate_noninferiority_margin,
            "gate_baseline_rule": self.gate_baseline_rule,
            "thresholds": self.thresholds.to_dict(),
            "weekly_schedule": self.weekly_schedule,
            "monthly_schedule": self.monthly_schedule,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BacktestSettings:
        values = dict(data)
        values["start"] = dt.date.fromisoformat(values["start"])
        values["end"] = dt.date.fromisoformat(values["end"])
        values["policies"] = tuple(values["policies"])
        values["thresholds"] = Thresholds(**values["thresholds"])
        return cls(**values)


@dataclass
class Day:
    """One served forecast: made at the close of `made`, for `date`."""

    date: str
    made: str
    version: str  # the served model's data end (its "version" in the backtest), or "none"
    forecast: float
    realised: float
    naive: float


@dataclass
class PolicyResult:
    policy: str
    days: list[Day] = field(default_factory=list)
    trainings: int = 0
    deploys: int = 0
    rejections: int = 0
    train_cpu_s: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)  # trainings: date, trigger, deployed, reasons
    drift_unchecked_days: int = 0  # forecast days with a served model whose drift check could not run

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "trainings": self.trainings,
            "deploys": self.deploys,
            "rejections": self.rejections,
            "train_cpu_s": round(self.train_cpu_s, 3),
        }
        if self.policy in DRIFT_POLICIES:
            out["drift_unchecked_days"] = self.drift_unchecked_days
            out["drift_unchecked_share"] = round(self.drift_unchecked_days / max(len(self.days), 1), 4)
        return out


@dataclass
class TickerResult:
    ticker: str
    policies: dict[str, PolicyResult]
    distinct_fits: int
    fit_cpu_s: float  # CPU actually spent: shared fits counted once
    first_model: str | None


class _Model:
    """A fitted model: the served model's forecasts for every day of the series (one batched predict),
    and the evaluation model's for its own test days (what the gate judged it on; the trainer's
    test_errors.json). With refit the two differ: the served one was refitted on all the data."""

    def __init__(self, fitted: FittedModel, data_end: int, first_row: int, closes: np.ndarray):
        self.fitted = fitted
        self.data_end = data_end
        w = fitted.window
        # next_close[d]: the served model's forecast of day d's close from the w closes before it
        # (NaN before day w): what it serves once deployed, and the champion's side of a later gate.
        self.next_close = np.full(closes.size + 1, np.nan)
        windows = np.lib.stride_tricks.sliding_window_view(closes, w)
        self.next_close[w:] = fitted.served_predict(windows)
        self.test_days = np.asarray(fitted.test_days) + first_row  # positions in the full series
        # Its fitted_data_end (position): the data end with the refit, the evaluation's without.
        self.fit_end = fitted.served_fit_end + first_row
        # evaluation_close[i]: the evaluation model's forecast of test_days[i].
        if fitted.evaluation_predict is fitted.served_predict:
            self.evaluation_close = self.next_close[self.test_days]
        else:
            self.evaluation_close = fitted.evaluation_predict(
                np.stack([closes[d - w : d] for d in self.test_days])
            )


class Replay:
    """One ticker: its prices up to --end, the fit cache, and the policies replayed over it."""

    def __init__(
        self,
        ticker: str,
        settings: BacktestSettings,
        trainer: InProcessTrainer,
        on_day: Callable[[int], None] | None = None,
    ):
        self.ticker = ticker
        self.settings = settings
        self.trainer = trainer
        self.on_day = on_day or (lambda n: None)
        try:
            # min_rows=2: a short history is judged per training below (MIN_ROWS as of each day).
            prices = fetch_prices(
                ticker, source=settings.source, lookback_days=None, end=settings.end, min_rows=2
            )
        except MarketDataError as exc:
            raise BacktestError(str(exc)) from None
        self.prices = prices
        self.dates = [d.strftime("%Y-%m-%d") for d in prices["Date"]]
        self.closes = prices["Close"].to_numpy(dtype=np.float64)
        day64 = prices["Date"].to_numpy(dtype="datetime64[D]")
        first = int(np.searchsorted(day64, np.datetime64(settings.start, "D")))
        # Forecast days: made at the close of f, for f + 1; the targets are the span's trading days.
        self.first_forecast = max(first - 1, 0)
        self.last_forecast = len(self.dates) - 2
        if first >= len(self.dates) or self.last_forecast < self.first_forecast:
            raise BacktestError(
                f"{ticker}: no trading day to forecast between {settings.start} and {settings.end} in the "
                f"{settings.source} data (it ends {self.dates[-1]}); send a span inside the data"
            )
        self.n_days = self.last_forecast - self.first_forecast + 1
        self.gate_names = GateMetrics.from_dict(settings.gate_metrics)
        self.gate_policy = GatePolicy(
            settings.gate_policy, settings.gate_noninferiority_margin, settings.gate_baseline_rule
        )
        self._fits: dict[int, _Model | str] = {}
        self.fit_cpu_s = 0.0

    # ------------------------------------------------------------------------------------ training

    def as_of(self, j: int) -> tuple[int, np.ndarray] | str:
        """(first row, closes) a cycle with data as of day j trains on, or why it cannot."""
        day = self.prices["Date"].iloc[j].date()
        what = f"{self.settings.source} data for {self.ticker}"
        try:
            frame = _trim_window(self.prices.iloc[: j + 1], self.settings.lookback_days, day, what)
        except MarketDataError as exc:
            return str(exc)
        if len(frame) < MIN_ROWS:  # fetch_prices validated every row once; what is left is validate_prices'
            # row count (the same check and message a cycle's fetch_data fails with).
            try:
                validate_prices(frame, min_rows=MIN_ROWS, what=what)
            except MarketDataError as exc:
                return str(exc)
        first_row = j + 1 - len(frame)
        return first_row, frame["Close"].to_numpy(dtype=np.float64)

    def model(self, j: int) -> _Model | str:
        """The model trained on data through day j (cached), or why there is none."""
        cached = self._fits.get(j)
        if cached is not None:
            return cached
        data = self.as_of(j)
        if isinstance(data, str):
            result: _Model | str = data
        else:
            first_row, closes = data
            try:
                fitted = self.trainer.fit(closes)
            except FitError as exc:
                result = str(exc)
            else:
                self.fit_cpu_s += fitted.cpu_s
                result = _Model(fitted, j, first_row, self.closes)
        self._fits[j] = result
        return result

    def gate(self, challenger: _Model, champion: _Model | None) -> dict[str, Any]:
        """The live gate on the challenger's test days, the champion forecasting the same days."""
        days = challenger.test_days
        actual = self.closes[days]
        model = challenger.evaluation_close  # the challenger as measured: its evaluation model
        naive = self.closes[days - 1]
        test_errors: dict[str, Any] = {
            "dates": [self.dates[d] for d in days],
            "actual": actual.tolist(),
            "model": model.tolist(),
            "naive": naive.tolist(),
            "champion": None,
        }
        mae = float(np.mean(np.abs(model - actual)))
        naive_mae = float(np.mean(np.abs(naive - actual)))
        error = model - actual
        metrics = {
            "mae": mae,
            "rmse": float(np.sqrt(np.mean(error**2))),
            "mape": float(np.mean(np.abs(error) / actual) * 100.0),
            "naive_mae": naive_mae,
            "mae_vs_naive": mae / naive_mae if naive_mae > 0 else float("inf"),
        }
        if champion is not None:
            forecast = champion.next_close[days]  # the champion as it serves
            test_errors["champion"] = forecast.tolist()
            metrics["champion_mae"] = float(np.mean(np.abs(forecast - actual)))
        return decide_with_test_errors(
            metrics,
            test_errors,
            has_champion=champion is not None,
            baseline_margin=self.settings.baseline_margin,
            level=self.settings.gate_alpha,
            names=self.gate_names,
            policy=self.gate_policy,
        ).to_dict()

    # ------------------------------------------------------------------------------------ schedules

    def schedule_data_ends(self, expression: str) -> set[int]:
        """Data-end days of a timer's firings: a firing at T trains on the last close known at T."""
        schedule = ncrontab.parse(expression)
        lo = self.first_forecast
        begin = dt.datetime.combine(self.prices["Date"].iloc[lo].date(), CLOSE_UTC, dt.UTC)
        end = dt.datetime.combine(self.prices["Date"].iloc[self.last_forecast].date(), CLOSE_UTC, dt.UTC)
        close_s = np.timedelta64(CLOSE_UTC.hour * 3600 + CLOSE_UTC.minute * 60, "s")
        known = self.prices["Date"].to_numpy(dtype="datetime64[s]") + close_s  # when each close is known
        ends: set[int] = set()
        t = schedule.next_after(begin)
        while t <= end:
            j = int(np.searchsorted(known, np.datetime64(t.replace(tzinfo=None), "s"), side="right")) - 1
            if j >= lo:
                ends.add(j)
            t = schedule.next_after(t)
        return ends

    # ------------------------------------------------------------------------------------ policies

    def run(self, policy: str) -> PolicyResult:
        s = self.settings
        result = PolicyResult(policy)
        scheduled: set[int] = set()
        if policy == "weekly":
            scheduled = self.schedule_data_ends(s.weekly_schedule)
        elif policy == "monthly":
            scheduled = self.schedule_data_ends(s.monthly_schedule)
        served: _Model | None = None
        bootstrapped = False
        last_trigger: str | None = None
        rejected_drift_ends: list[str] = []  # data ends of drift challengers the gate rejected

        def train(j: int, trigger: str, reason: str | None = None, reference_end: str | None = None) -> None:
            nonlocal served
            model = self.model(j)
            if isinstance(model, str):  # the cycle would fail at its data or training step
                result.events.append({"date": self.dates[j], "trigger": trigger, "failed": model})
                return
            result.trainings += 1
            result.train_cpu_s += model.fitted.cpu_s
            decision = self.gate(model, served)
            if decision["deploy"]:
                served = model
                result.deploys += 1
            else:
                result.rejections += 1
                if trigger == "drift":  # the monitor records the cycle's outcome beside its trigger
                    rejected_drift_ends.append(self.dates[j])
            event = {
                "date": self.dates[j],
                "trigger": trigger,
                "reason": reason,
                "deployed": decision["deploy"],
                "gate": decision["reasons"],
            }
            if trigger == "drift":
                event["drift_reference_end"] = reference_end
            result.events.append(event)

        # The first model: data through the day before the first forecast, or the first day it suffices.
        if self.first_forecast >= 1 and not isinstance(self.model(self.first_forecast - 1), str):
            train(self.first_forecast - 1, "initial")
            bootstrapped = True

        for f in range(self.first_forecast, self.last_forecast + 1):
            today = self.dates[f]
            if served is not None:
                forecast = float(served.next_close[f + 1])
                version = self.dates[served.data_end]
            else:
                forecast, version = float(self.closes[f]), "none"
            result.days.append(
                Day(
                    self.dates[f + 1],
                    today,
                    version,
                    forecast,
                    float(self.closes[f + 1]),
                    float(self.closes[f]),
                )
            )
            self.on_day(1)

            # After the close of f: decisions on data through f; a new model serves from f + 1.
            if not bootstrapped:
                if not isinstance(self.model(f), str):
                    train(f, "initial")
                    bootstrapped = True
                continue
            if policy in SCHEDULE_POLICIES and f in scheduled:
                train(f, policy)
            elif policy in MONITOR_POLICIES and served is not None:
                data_end = self.dates[served.data_end]
                drift = None
                reference_end = None
                if policy in DRIFT_POLICIES:
                    # The served model's fitted_data_end, as the live monitor reads it from its tag (the
                    # data end with the refit; the evaluation's fit end with refit=false).
                    fit_end = self.dates[served.fit_end]
                    reference_end = drift_reference_end(fit_end, data_end, rejected_drift_ends)
                    # The live monitor fetches from before the reference to the day: the same closes.
                    lo = max(0, bisect.bisect_right(self.dates, reference_end) - REFERENCE_DAYS - 2)
                    outcome = drift_since_reference(
                        self.dates[lo : f + 1], self.closes[lo : f + 1], reference_end
                    )
                    drift = outcome.result
                    if outcome.not_checked is not None:
                        result.drift_unchecked_days += 1
                cusum = None
                if policy in ("performance", "monitor"):
                    # Scored forecasts of the champion since its data end: made at g, realised at g + 1 <= f.
                    g = np.arange(served.data_end + 1, f)
                    if g.size:
                        cusum = performance_check(
                            served.next_close[g + 1],
                            self.closes[g + 1],
                            self.closes[g],
                            self._test_errors(served),
                            s.thresholds.cusum,
                            data_end,
                        )
                cooling = in_cooldown(last_trigger, today, s.thresholds.cooldown_days)
                trigger = decide_trigger(drift, cusum, s.thresholds, cooling)
                if trigger is not None:
                    last_trigger = today
                    train(f, trigger["trigger"], trigger["reason"], reference_end)
        return result

    def _test_errors(self, model: _Model) -> dict[str, Any]:
        cached = getattr(model, "_test_errors_payload", None)
        if cached is None:
            days = model.test_days
            cached = {
                "actual": self.closes[days].tolist(),
                "model": model.evaluation_close.tolist(),  # test_errors.json: the evaluation's
                "naive": self.closes[days - 1].tolist(),
            }
            model._test_errors_payload = cached  # type: ignore[attr-defined]
        return cached


def replay_ticker(
    ticker: str,
    settings: BacktestSettings,
    trainer: InProcessTrainer | None = None,
    on_day: Callable[[int], None] | None = None,
) -> TickerResult:
    """Every policy of `settings` over one ticker (fits shared across policies)."""
    trainer = trainer or InProcessTrainer(settings.trainer, settings.hyperparameters)
    replay = Replay(ticker, settings, trainer, on_day)
    results = {policy: replay.run(policy) for policy in settings.policies}
    if not any(r.trainings for r in results.values()):
        reasons = {v for v in replay._fits.values() if isinstance(v, str)}
        raise BacktestError(
            f"{ticker}: no model could be trained between {settings.start} and {settings.end} "
            f"({'; '.join(sorted(reasons))[:400]}); send a later --end or an earlier --start with more "
            f"history before it (a training needs {MIN_ROWS} trading days within the lookback)"
        )
    first = next(
        (e["date"] for e in results[settings.policies[0]].events if e.get("trigger") == "initial"), None
    )
    distinct = sum(1 for v in replay._fits.values() if not isinstance(v, str))
    return TickerResult(ticker, results, distinct, replay.fit_cpu_s, first)
