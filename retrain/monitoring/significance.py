"""Is one forecast's error really different from another's? The Diebold-Mariano test, pure Python + numpy.

- `diebold_mariano(errors_a, errors_b)` -> `DMResult`: on the absolute-error loss differential
  d_t = |a_t| - |b_t| (the same series the monitor's CUSUM watches), with a Newey-West (Bartlett) long-run
  variance (absolute errors cluster with volatility, so d_t is autocorrelated) and the Harvey-Leybourne-Newbold
  small-sample correction, compared with Student's t on n - 1 degrees of freedom. `p_a_better` is the
  one-sided p-value of "a has the smaller expected loss", `p_a_worse` of the opposite.
- `student_t_cdf(t, df)`: via the regularised incomplete beta function (no scipy in the Function App).

The gate (`retrain.gate.decide_with_test_errors`) and the policy backtest use these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


class SignificanceError(ValueError):
    """Errors that cannot be compared (unpaired, too few, not finite); the message says what to send."""


@dataclass(frozen=True)
class DMResult:
    statistic: float  # HLN-corrected DM statistic; < 0 when a has the smaller mean loss
    p_a_better: float  # one-sided p-value of H1: E|a| < E|b|
    p_a_worse: float  # one-sided p-value of H1: E|a| > E|b|
    mean_differential: float  # mean of |a| - |b|
    n: int
    lags: int  # Newey-West lags used for the long-run variance

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 3e-16:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def newey_west_lags(n: int) -> int:
    """The usual automatic bandwidth floor(4 (n/100)^(2/9))."""
    return int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))


def diebold_mariano(
    errors_a: Sequence[float] | np.ndarray,
    errors_b: Sequence[float] | np.ndarray,
    *,
    horizon: int = 1,
    lags: int | None = None,
) -> DMResult:
    """Compare the absolute errors of forecasts a and b on the same days (see the module docstring)."""
    a = np.asarray(errors_a, dtype=np.float64).reshape(-1)
    b = np.asarray(errors_b, dtype=np.float64).reshape(-1)
    if a.size != b.size:
        raise SignificanceError(f"{a.size} errors of a and {b.size} of b: send one error of each per day")
    if a.size < 10:
        raise SignificanceError(f"{a.size} paired errors; at least 10 days are needed for a test")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise SignificanceError("errors contain NaN or infinite values; send finite numbers")
    d = np.abs(a) - np.abs(b)
    n = d.size
    mean = float(d.mean())
    L = newey_west_lags(n) if lags is None else int(lags)
    L = max(L, horizon - 1)
    centred = d - mean
    long_run = float(centred @ centred) / n
    for k in range(1, min(L, n - 1) + 1):
        weight = 1.0 - k / (L + 1.0)
        long_run += 2.0 * weight * float(centred[k:] @ centred[:-k]) / n
    if long_run <= 0.0 or not math.isfinite(long_run):
        # Identical losses every day (e.g. the same model twice): nothing distinguishes them.
        if mean == 0.0:
            return DMResult(0.0, 1.0, 1.0, 0.0, n, L)
        statistic = math.copysign(math.inf, mean)
    else:
        dm = mean / math.sqrt(long_run / n)
        h = horizon
        statistic = dm * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    cdf = student_t_cdf(statistic, n - 1)
    return DMResult(statistic, cdf, 1.0 - cdf, mean, n, L)
