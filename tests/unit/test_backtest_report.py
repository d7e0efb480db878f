"""The backtest's figures on constructed replays: scale-free errors, and a pooled interval over shared days."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from retrain.backtest import report
from retrain.backtest.engine import Day, PolicyResult, TickerResult


def _dates(n: int) -> list[str]:
    first = dt.date(2010, 1, 4)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range(n)]


def _ticker(
    name: str, prev: np.ndarray, naive_err: np.ndarray, policy_err: dict[str, np.ndarray]
) -> TickerResult:
    """A replay whose days have the given previous closes and absolute errors (forecasts above the close)."""
    dates = _dates(prev.size)
    realised = prev + naive_err  # the naive forecast is the previous close, so |naive - realised| = naive_err
    policies = {}
    for policy, err in policy_err.items():
        days = [
            Day(dates[i], dates[i], "v", float(realised[i] + err[i]), float(realised[i]), float(prev[i]))
            for i in range(prev.size)
        ]
        policies[policy] = PolicyResult(policy, days=days, trainings=1, deploys=1)
    return TickerResult(name, policies, distinct_fits=1, fit_cpu_s=0.0, first_model=dates[0])


def test_per_ticker_ratio_is_relative_to_the_close_not_in_price_units() -> None:
    # A ticker whose price rises tenfold: naive errors are 1 % of the close throughout; the policy is 2 %
    # off while the price is 10 and 1 % off once it is 100. In price units the late days dominate:
    # (20 x 0.2 + 20 x 1.0) / (20 x 0.1 + 20 x 1.0) = 1.0909; relative, each day weighs the same: 1.5.
    prev = np.array([10.0] * 20 + [100.0] * 20)
    naive_err = prev * 0.01
    weekly_err = np.array([0.2] * 20 + [1.0] * 20)
    rising = _ticker("RISE", prev, naive_err, {"never": naive_err.copy(), "weekly": weekly_err})
    flat_prev = np.full(40, 50.0)
    flat = _ticker(
        "FLAT", flat_prev, flat_prev * 0.01, {"never": flat_prev * 0.01, "weekly": flat_prev * 0.01}
    )
    price_units = float(weekly_err.sum() / naive_err.sum())
    assert price_units == pytest.approx(1.0909, abs=1e-4)

    summary = report.summarise([rising, flat], ["never", "weekly"])

    assert summary["by_ticker"]["RISE"]["weekly"]["mae_ratio"] == pytest.approx(1.5, abs=1e-5)
    assert summary["by_ticker"]["FLAT"]["weekly"]["mae_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert summary["policies"]["weekly"]["mae_ratio"] == pytest.approx((1.5 + 1.0) / 2, abs=1e-5)
    # The per-ticker Diebold-Mariano test is on the same relative errors: 2 % vs 1 % on 20 days and
    # equal on the rest is a significantly worse policy (a price-unit test would see the same sign, so
    # the statistic itself is checked against the relative series).
    from retrain.monitoring.significance import diebold_mariano

    expected = diebold_mariano(weekly_err / prev, naive_err / prev)
    assert summary["by_ticker"]["RISE"]["weekly"]["dm_vs_never"]["statistic"] == pytest.approx(
        round(expected.statistic, 4)
    )
    assert report.MULTIPLICITY_NOTE in report.table(summary)


def test_the_pooled_interval_resamples_the_same_days_for_every_ticker() -> None:
    # Two tickers on the same dates whose policy-minus-never differences are exact opposites every day.
    # Resampled on shared days, each replicate's pooled difference is the mean of +x and -x: exactly 0,
    # so the pooled interval is [0, 0]. Resampled independently per ticker it would not cancel.
    rng = np.random.default_rng(7)
    n = 200
    prev = np.full(n, 100.0)
    naive_err = np.full(n, 1.0)
    delta = rng.normal(0.0, 0.3, size=n)
    a = _ticker("AAA", prev, naive_err, {"never": naive_err.copy(), "weekly": naive_err + delta})
    b = _ticker("BBB", prev, naive_err, {"never": naive_err + delta, "weekly": naive_err.copy()})

    summary = report.summarise([a, b], ["never", "weekly"])

    lo_a, hi_a = summary["by_ticker"]["AAA"]["weekly"]["ci95"]
    assert hi_a - lo_a > 0.01  # each ticker's own interval is wide
    lo, hi = summary["policies"]["weekly"]["ci95"]
    assert lo == pytest.approx(0.0, abs=1e-9) and hi == pytest.approx(0.0, abs=1e-9)


def test_tickers_with_different_days_share_the_calendar_days_they_have() -> None:
    # A ticker that trades only the last half of the other's days still gets an interval, and the
    # reported figures stay finite.
    n = 120
    prev = np.full(n, 20.0)
    naive_err = np.full(n, 0.2)
    rng = np.random.default_rng(3)
    long = _ticker(
        "LONG", prev, naive_err, {"never": naive_err.copy(), "weekly": naive_err + rng.normal(0, 0.05, n)}
    )
    short_days = _ticker(
        "SHORT",
        prev[:60],
        naive_err[:60],
        {"never": naive_err[:60].copy(), "weekly": naive_err[:60] + rng.normal(0, 0.05, 60)},
    )
    for policy in short_days.policies.values():  # move its days to the second half of the calendar
        for day, date in zip(policy.days, _dates(n)[60:], strict=True):
            day.date = date

    summary = report.summarise([long, short_days], ["never", "weekly"])

    for values in (summary["policies"]["weekly"], summary["by_ticker"]["SHORT"]["weekly"]):
        lo, hi = values["ci95"]
        assert np.isfinite(lo) and np.isfinite(hi) and lo < hi
