"""The forecaster network, the pyfunc prediction path, price metrics and a real (tiny) Lightning fit."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

TRAINER = Path(__file__).resolve().parents[2] / "trainer"
sys.path.insert(0, str(TRAINER))  # trainer/ is a job snapshot, not a package

import train  # noqa: E402
from forecast_data import prepare  # noqa: E402
from forecast_features import ReturnScaler  # noqa: E402
from forecast_net import LSTMForecaster  # noqa: E402
from forecaster_pyfunc import ForecasterModel, forecast_from_closes  # noqa: E402

from trainer_kit.contract import price_metrics  # noqa: E402


def test_network_maps_a_batch_of_windows_to_one_value_each() -> None:
    net = LSTMForecaster(hidden_size=8)
    assert net(torch.zeros(4, 19, 1)).shape == (4,)


def zero_net(hidden: int = 4) -> LSTMForecaster:
    net = LSTMForecaster(hidden_size=hidden)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    return net


def test_forecast_is_last_close_times_exp_of_the_predicted_return() -> None:
    scaler = ReturnScaler(mean=0.01, std=0.02)
    closes = np.array([[10.0, 11.0, 12.0], [50.0, 40.0, 30.0]])
    # A zeroed network predicts standardised 0, i.e. the mean return.
    np.testing.assert_allclose(
        forecast_from_closes(zero_net(), scaler, closes), closes[:, -1] * math.exp(0.01)
    )


def test_forecast_scales_with_the_price_level() -> None:
    """Log-return inputs make the model level-free: the same path 10x higher gives a 10x forecast."""
    torch.manual_seed(0)
    net = LSTMForecaster(hidden_size=8)
    scaler = ReturnScaler(mean=0.0005, std=0.02)
    closes = np.array([[20.0, 20.5, 20.1, 21.0, 20.8]])
    np.testing.assert_allclose(
        forecast_from_closes(net, scaler, closes * 10), forecast_from_closes(net, scaler, closes) * 10
    )


def pyfunc_with(window: int) -> ForecasterModel:
    model = ForecasterModel()
    model.window, model.scaler, model.net = window, ReturnScaler(0.0, 0.01), zero_net()
    return model


def test_pyfunc_predict_returns_one_forecast_column() -> None:
    frame = pd.DataFrame([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], columns=["c0", "c1", "c2"])
    out = pyfunc_with(3).predict(None, frame)
    assert list(out.columns) == ["forecast"] and out["forecast"].dtype == np.float64
    np.testing.assert_allclose(out["forecast"], [3.0, 1.0])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame([[1.0, 2.0]], columns=["c0", "c1"]), "missing: c2"),
        (pd.DataFrame([[1.0, 0.0, 3.0]], columns=["c0", "c1", "c2"]), "greater than 0"),
        (pd.DataFrame([[1.0, np.nan, 3.0]], columns=["c0", "c1", "c2"]), "finite"),
    ],
)
def test_pyfunc_rejects_bad_rows_with_a_reason(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pyfunc_with(3).predict(None, frame)


def test_price_metrics_by_hand() -> None:
    m = price_metrics(
        forecast=np.array([11.0, 9.0]), actual=np.array([10.0, 10.0]), previous=np.array([12.0, 10.0])
    )
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(1.0)
    assert m["mape"] == pytest.approx(10.0)
    assert m["naive_mae"] == pytest.approx(1.0)
    assert m["mae_vs_naive"] == pytest.approx(1.0)


def zigzag(n: int) -> np.ndarray:
    """Returns alternate +2 % / -1.5 %: the next return is predictable from the last, persistence is not."""
    rng = np.random.default_rng(1)
    returns = np.where(np.arange(n) % 2 == 0, 0.02, -0.015) + rng.normal(0, 0.001, n)
    return 40.0 * np.exp(np.cumsum(returns))


def test_lightning_fit_learns_a_predictable_pattern_and_is_repeatable() -> None:
    torch.set_num_threads(1)
    data = prepare(zigzag(400), window=6)
    config = train.TrainConfig(
        window=6, hidden_size=8, max_epochs=25, learning_rate=1e-2, batch_size=32, patience=25
    )
    seen: list[int] = []
    fit = train.fit_lightning(data, config, on_epoch=lambda epoch, tl, vl: seen.append(epoch))
    assert seen == list(range(25)) and fit.epochs == 25
    assert fit.history[-1]["val_loss"] < 0.2 * fit.history[0]["val_loss"]
    assert fit.best_val_loss == min(h["val_loss"] for h in fit.history)

    test = data.part("test")
    forecast = forecast_from_closes(fit.net, data.scaler, data.input_closes[test])
    m = price_metrics(forecast, data.target_closes[test], data.input_closes[test][:, -1])
    assert m["mae_vs_naive"] < 0.5  # the pattern is learnt; persistence misses every day's move

    again = train.fit_lightning(data, config)
    assert again.history == fit.history  # same seed, same losses, epoch for epoch


def test_early_stopping_ends_before_max_epochs() -> None:
    # A learning rate this high cannot keep improving val loss; patience 1 must stop the run early.
    data = prepare(zigzag(300), window=6)
    config = train.TrainConfig(
        window=6, hidden_size=4, max_epochs=40, learning_rate=0.5, batch_size=32, patience=1
    )
    fit = train.fit_lightning(data, config)
    assert fit.epochs < 40


def test_the_refit_trains_the_selected_epochs_on_every_window_and_is_what_serves() -> None:
    """Evaluate, then refit: the evaluation model (early stopping on validation) is what the metrics
    measure; the served one trains the same configuration, same seed, on all windows for the evaluation's
    best epoch count, with the scaler of the whole series. refit=false serves the evaluation model."""
    torch.set_num_threads(1)
    closes = zigzag(300)
    data = prepare(closes, window=6)
    config = train.TrainConfig(
        window=6, hidden_size=4, max_epochs=40, learning_rate=0.5, batch_size=32, patience=1
    )
    fitted = train.fit_closes(closes, config)
    evaluation = fitted.evaluation
    best = 1 + min(range(evaluation.epochs), key=lambda i: evaluation.history[i]["val_loss"])
    assert evaluation.best_epoch == best and evaluation.epochs < 40  # early stopping chose it
    assert fitted.epochs == evaluation.epochs
    assert fitted.served.epochs == best  # the refit ran exactly that many epochs
    assert fitted.served.data.sizes.train == len(closes) - 6  # every window trains
    assert fitted.served.data.scaler == ReturnScaler.fit(closes)  # fitted on the whole series
    assert fitted.evaluation_fit_end == data.target_day_index("train")[-1] < fitted.test_days[0]
    assert fitted.served_fit_end == len(closes) - 1

    test = data.input_closes[data.part("test")]
    assert np.array_equal(
        fitted.evaluation_predict(test), forecast_from_closes(evaluation.net, data.scaler, test)
    )
    assert not np.allclose(fitted.served_predict(test), fitted.evaluation_predict(test), rtol=1e-9)
    again = train.fit_closes(closes, config)
    assert np.array_equal(again.served_predict(test), fitted.served_predict(test))  # same seed

    stale = train.fit_closes(closes, dataclasses.replace(config, refit=False))
    assert stale.served_predict is stale.evaluation_predict
    assert stale.served_fit_end == stale.evaluation_fit_end
    assert np.array_equal(stale.evaluation_predict(test), fitted.evaluation_predict(test))


def test_refit_is_a_hyperparameter_like_the_flags() -> None:
    assert train.config_from_params([]).refit is True
    assert train.config_from_params(["refit=false"]).refit is False
    with pytest.raises(train.TrainerError, match="unusable hyperparameters"):
        train.config_from_params(["refit=maybe"])
