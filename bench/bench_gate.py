"""The gate's baseline check (the first model's only check): how often a model of a given skill passes,
under the rule before gate policies (`significance`: fails only when significantly worse than naive x
(1 + margin)) and today's (`estimate-and-significance`: also the point estimate within the margin).

    python bench/bench_gate.py [--trials 400] [--seed 0] [--margin 0.05] [--alpha 0.05]

Data: the bundled daily closes (2000-2013) of MSFT, AAPL, IBM and GOOG; each trial takes a random
187-day test window (the trainers' test window at the default lookback) of one ticker in turn. The
naive forecast is persistence (tomorrow = today), its errors the real day-to-day changes. The model
under test is "k x as bad as persistence": its error on each day is the naive error x k x a noise factor
of mean 1, so its errors follow persistence's (as the near-persistence models we train do) with a spread
of their own. Two noise factors: 0.5 or 1.5 with equal odds ("two-point"), and a lognormal of sigma 0.5
scaled to mean 1. A pass at k = 1.10 is a model 10 % worse than persistence let through; a failure at
k = 1.00 is an equally good model kept out. Seeded: the same command prints the same table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from retrain.gate import (  # noqa: E402
    BASELINE_RULES,
    GatePolicy,
    decide_with_test_errors,
)
from retrain.market_data import fetch_prices  # noqa: E402

TICKERS = ("MSFT", "AAPL", "IBM", "GOOG")
TEST_DAYS = 187
SCALES = (0.95, 1.0, 1.05, 1.10, 1.20)


def noise(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if kind == "two-point":
        return rng.choice([0.5, 1.5], n)
    sigma = 0.5
    return rng.lognormal(0.0, sigma, n) / np.exp(sigma**2 / 2)  # mean 1


def pass_rates(
    closes: dict[str, np.ndarray],
    scale: float,
    kind: str,
    trials: int,
    seed: int,
    margin: float,
    alpha: float,
) -> dict[str, float]:
    """Share of trials whose first model passes the gate, per baseline rule."""
    rng = np.random.default_rng(seed)
    passed = dict.fromkeys(BASELINE_RULES, 0)
    names = list(closes)
    for i in range(trials):
        series = closes[names[i % len(names)]]
        start = int(rng.integers(0, series.size - TEST_DAYS - 1))
        today, actual = series[start : start + TEST_DAYS], series[start + 1 : start + TEST_DAYS + 1]
        naive_error = actual - today
        model_error = naive_error * scale * noise(kind, rng, TEST_DAYS)
        test_errors = {
            "actual": actual.tolist(),
            "model": (actual + model_error).tolist(),
            "naive": today.tolist(),
            "champion": None,
        }
        metrics = {
            "mae": float(np.mean(np.abs(model_error))),
            "naive_mae": float(np.mean(np.abs(naive_error))),
        }
        for rule in BASELINE_RULES:
            decision = decide_with_test_errors(
                metrics,
                test_errors,
                has_champion=False,
                baseline_margin=margin,
                level=alpha,
                policy=GatePolicy(baseline_rule=rule),
            )
            passed[rule] += decision.deploy
    return {rule: count / trials for rule, count in passed.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margin", type=float, default=0.05, help="RETRAIN_GATE_BASELINE_MARGIN")
    parser.add_argument("--alpha", type=float, default=0.05, help="RETRAIN_GATE_ALPHA")
    args = parser.parse_args()
    closes = {t: fetch_prices(t, "sample")["Close"].to_numpy(dtype=float) for t in TICKERS}
    print(
        f"first-model pass rate, {args.trials} random {TEST_DAYS}-day windows of {', '.join(TICKERS)} "
        f"(bundled sample), margin {args.margin:g}, alpha {args.alpha:g}, seed {args.seed}\n"
    )
    print(
        "| model error / persistence's | noise | old rule (significance) | new rule (estimate-and-significance) |"
    )
    print("|---|---|---|---|")
    for kind in ("two-point", "lognormal"):
        for scale in SCALES:
            rates = pass_rates(closes, scale, kind, args.trials, args.seed, args.margin, args.alpha)
            print(
                f"| {scale:.2f} | {kind} | {rates['significance']:.1%} | "
                f"{rates['estimate-and-significance']:.1%} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
