"""Null models for the monitor's calibration: return series with nothing changing in them that still keep
volatility clustering (issue 18).

Shuffling a ticker's returns (`calibration.shuffles`) keeps their distribution but destroys volatility
clustering, and clustering is exactly what makes a 20-day window look unlike the year before it: on
shuffles the drift threshold 0.374 held one false alarm a year, on these nulls it fired about three times
a year. Two nulls, both stationary and seeded:

- GARCH(1,1) with Student-t innovations fitted per ticker (`fit_garch_t`, the `arch` package, imported
  only when fitting: it is a dev dependency, never the Function App's), simulated from its stationary
  distribution by `simulate_garch_t` (numpy only).
- The stationary block bootstrap (Politis and Romano, 1994) of the real returns with a mean block length
  of 60 trading days (`stationary_bootstrap`): no model assumed, clustering kept within blocks.

Public API
----------
- `GarchT` (mu, omega, alpha, beta, nu in return units) and `fit_garch_t(returns) -> GarchT`.
- `simulate_garch_t(params, days, seed) -> np.ndarray`.
- `stationary_bootstrap(returns, days, seed, mean_block=60) -> np.ndarray`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BLOCK_DAYS = 60  # mean block length of the bootstrap: about a quarter, longer than most volatility bursts
BURN_IN_DAYS = 1000  # simulated days dropped so a path starts from the stationary distribution


@dataclass(frozen=True)
class GarchT:
    """r_t = mu + sigma_t z_t, sigma_t^2 = omega + alpha (r_{t-1} - mu)^2 + beta sigma_{t-1}^2, z_t a
    Student-t with `nu` degrees of freedom scaled to unit variance. Units: daily log returns."""

    mu: float
    omega: float
    alpha: float
    beta: float
    nu: float

    def __post_init__(self) -> None:
        if not (self.omega > 0 and self.alpha >= 0 and self.beta >= 0 and self.alpha + self.beta < 1):
            raise ValueError(
                f"GARCH(1,1) {self.to_dict()} is not stationary: send omega > 0, alpha, beta >= 0 and "
                "alpha + beta < 1"
            )
        if not self.nu > 2:
            raise ValueError(f"Student-t nu {self.nu}: send nu > 2 (finite variance)")

    @property
    def unconditional_variance(self) -> float:
        return self.omega / (1.0 - self.alpha - self.beta)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_garch_t(returns: Sequence[float] | np.ndarray) -> GarchT:
    """Maximum-likelihood GARCH(1,1)-t with a constant mean, fitted on percent returns (the scale `arch`
    is tuned for) and converted back to return units."""
    from arch import arch_model  # dev dependency: the bench and the tests fit, the Function App never does

    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    if r.size < 250 or not np.all(np.isfinite(r)):
        raise ValueError(f"returns: {r.size} values; send at least 250 finite daily log returns to fit")
    result = arch_model(100.0 * r, mean="Constant", vol="GARCH", p=1, q=1, dist="t").fit(disp="off")
    if result.convergence_flag != 0:
        raise ValueError(f"GARCH(1,1)-t fit did not converge (flag {result.convergence_flag})")
    p = result.params
    return GarchT(
        mu=float(p["mu"]) / 100.0,
        omega=float(p["omega"]) / 1e4,
        alpha=float(p["alpha[1]"]),
        beta=float(p["beta[1]"]),
        nu=float(p["nu"]),
    )


def simulate_garch_t(params: GarchT, days: int, seed: int) -> np.ndarray:
    """`days` daily log returns from the stationary GARCH(1,1)-t process (seeded; burn-in dropped)."""
    if days < 1:
        raise ValueError(f"days {days}: send at least 1")
    rng = np.random.default_rng(seed)
    total = days + BURN_IN_DAYS
    z = rng.standard_t(params.nu, size=total) * np.sqrt((params.nu - 2.0) / params.nu)
    out = np.empty(total)
    variance = params.unconditional_variance
    for t in range(total):
        shock = np.sqrt(variance) * z[t]
        out[t] = params.mu + shock
        variance = params.omega + params.alpha * shock * shock + params.beta * variance
    return out[BURN_IN_DAYS:]


def stationary_bootstrap(
    returns: Sequence[float] | np.ndarray, days: int, seed: int, mean_block: int = BLOCK_DAYS
) -> np.ndarray:
    """Politis-Romano stationary bootstrap: blocks of geometric length (mean `mean_block`) starting at
    uniform positions, wrapping around the end; the resampled series is stationary."""
    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    if r.size < 2 or days < 1 or mean_block < 1:
        raise ValueError(
            f"bootstrap of {r.size} returns to {days} days in blocks of {mean_block}: send >= 2 returns, "
            "days >= 1 and a mean block >= 1"
        )
    rng = np.random.default_rng(seed)
    index = np.empty(days, dtype=np.int64)
    position = int(rng.integers(r.size))
    new_block = rng.random(days) < 1.0 / mean_block
    starts = rng.integers(r.size, size=days)
    for t in range(days):
        if t and new_block[t]:
            position = int(starts[t])
        index[t] = position
        position = (position + 1) % r.size
    return r[index]
