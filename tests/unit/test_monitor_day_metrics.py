"""`day_metrics`: what of a monitored day goes to MLflow (finite numbers only, named by window)."""

from __future__ import annotations

from retrain.monitoring.monitor import day_metrics


def test_day_metrics_names_by_window_and_leaves_out_what_does_not_exist() -> None:
    summary = {
        "date": "2012-07-03",
        "forecast": {"last_close": 30.0, "forecast": 30.3, "model_version": "1"},
        "scored": 21,
        "metrics": {
            "20": {"n": 20, "mae": 0.4, "naive_mae": 0.5, "mae_ratio": 0.8, "directional_accuracy": 0.55},
            "60": None,  # not enough scored days yet
        },
        "drift": {"statistic": 0.2, "ks_returns": 0.2, "ks_abs_returns": float("nan"), "n_new": 20},
        "cusum": None,
        "alerts": [{"kind": "data_stale"}],
    }
    assert day_metrics(summary) == {
        "n_20": 20.0,
        "mae_20": 0.4,
        "naive_mae_20": 0.5,
        "mae_ratio_20": 0.8,
        "directional_accuracy_20": 0.55,
        "drift": 0.2,
        "drift_ks_returns": 0.2,
        "forecast": 30.3,
        "last_close": 30.0,
        "scored": 21.0,
        "alerts": 1.0,
    }
    # A day without a forecast (the endpoint did not answer) still logs what it has.
    assert day_metrics({"date": "2012-07-04", "forecast": None, "scored": 0, "alerts": []}) == {
        "scored": 0.0,
        "alerts": 0.0,
    }
