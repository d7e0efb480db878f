"""Windowing, the chronological split (the trainer kit's, every family's) and the LSTM's preprocessing fit,
and the kit's reading of the data asset (pure numpy/pandas)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TRAINER = Path(__file__).resolve().parents[2] / "trainer"
sys.path.insert(0, str(TRAINER))  # trainer/ is a job snapshot, not a package

from forecast_data import fit_scaler, prepare, training_span, window_closes  # noqa: E402
from forecast_features import ReturnScaler, window_log_returns  # noqa: E402

from trainer_kit.data import (  # noqa: E402
    TrainingDataError,
    check_enough_rows,
    load_series,
    min_rows,
    split_sizes,
    windows,
)


def load_closes(path: Path) -> np.ndarray:
    return load_series(path).closes


def random_walk(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50.0 * np.exp(np.cumsum(rng.normal(0.0005, 0.02, n)))


def test_windows_have_window_closes_and_the_next_day_as_target() -> None:
    closes = np.arange(1.0, 31.0)  # day i has close i + 1, so values name their day
    inputs, targets = window_closes(closes, window=5)
    assert inputs.shape == (25, 5) and targets.shape == (25,)
    np.testing.assert_array_equal(inputs[0], [1, 2, 3, 4, 5])
    assert targets[0] == 6  # t + 1, not t
    np.testing.assert_array_equal(inputs[-1], [25, 26, 27, 28, 29])
    assert targets[-1] == 30
    np.testing.assert_array_equal(targets, inputs[:, -1] + 1)


def test_prepared_returns_align_inputs_and_next_day_target() -> None:
    closes = random_walk(300)
    data = prepare(closes, window=10)
    assert data.x.shape == (290, 9)
    k = 123
    raw_inputs = np.diff(np.log(closes[k : k + 10]))
    np.testing.assert_allclose(data.scaler.inverse(data.x[k]), raw_inputs)
    np.testing.assert_allclose(data.scaler.inverse(data.y[k]), np.log(closes[k + 10] / closes[k + 9]))
    np.testing.assert_allclose(window_log_returns(data.input_closes[k : k + 1])[0], raw_inputs)


def test_split_is_chronological_and_covers_every_window_once() -> None:
    data = prepare(random_walk(1035), window=20)
    sizes = data.sizes
    assert (sizes.train, sizes.val, sizes.test) == (710, 152, 153)
    train, val, test = data.part("train"), data.part("val"), data.part("test")
    assert (train.start, train.stop, val.start, val.stop, test.start, test.stop) == (
        0,
        710,
        710,
        862,
        862,
        1015,
    )
    assert test.stop == len(data.y)
    # Target days are strictly later in each part: no part reaches back across time.
    assert data.target_day_index("train").max() < data.target_day_index("val").min()
    assert data.target_day_index("val").max() < data.target_day_index("test").min()
    assert data.target_day_index("test")[-1] == len(data.closes) - 1


@pytest.mark.parametrize("n", [50, 101, 1000, 1015])
def test_split_sizes_add_up(n: int) -> None:
    sizes = split_sizes(n)
    assert sizes.total == n and sizes.train >= sizes.val and sizes.test >= sizes.val


def test_scaler_sees_nothing_after_the_training_span() -> None:
    closes = random_walk(600, seed=3)
    window = 20
    sizes = check_enough_rows(len(closes), window)
    fitted = fit_scaler(closes, sizes, window)

    # Rewrite every price after the last training target (all of validation and test) wildly.
    altered = closes.copy()
    first_unseen = training_span(sizes, window).stop
    altered[first_unseen:] = altered[first_unseen:] * np.linspace(3.0, 0.2, len(altered) - first_unseen)
    assert prepare(altered, window).scaler == fitted
    assert fit_scaler(altered, sizes, window) == fitted

    # The check can fail: changing one price inside the training span does change the scaler.
    touched = closes.copy()
    touched[first_unseen - 1] *= 1.5
    assert fit_scaler(touched, sizes, window) != fitted


def test_training_span_ends_at_the_last_training_target() -> None:
    closes = random_walk(400)
    data = prepare(closes, window=20)
    span = training_span(data.sizes, 20)
    assert span.stop - 1 == data.target_day_index("train")[-1]
    expected = ReturnScaler.fit(closes[: span.stop])
    assert data.scaler == expected
    np.testing.assert_allclose(data.y[data.part("train")].mean(), 0.0, atol=0.1)


def test_scaler_round_trips() -> None:
    scaler = ReturnScaler.fit(random_walk(100))
    returns = np.array([-0.03, 0.0, 0.02])
    np.testing.assert_allclose(scaler.inverse(scaler.transform(returns)), returns)
    assert ReturnScaler.from_dict(scaler.to_dict()) == scaler


def test_too_few_rows_names_the_minimum() -> None:
    needed = min_rows(20)
    check_enough_rows(needed, 20)
    with pytest.raises(TrainingDataError, match=rf"too few rows: {needed - 1} closes.*at least {needed}"):
        check_enough_rows(needed - 1, 20)


def write_csv(path: Path, close: list) -> Path:
    dates = pd.bdate_range("2020-01-01", periods=len(close))
    pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "Close": close}).to_csv(path, index=False)
    return path


def test_load_closes_reads_a_snapshot(tmp_path: Path) -> None:
    closes = random_walk(40)
    np.testing.assert_allclose(load_closes(write_csv(tmp_path / "p.csv", list(closes))), closes)


def test_load_closes_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="data file not found"):
        load_closes(tmp_path / "missing.csv")
    with pytest.raises(TrainingDataError, match=r"non-numeric Close .* row 3 \('abc'\)"):
        load_closes(write_csv(tmp_path / "text.csv", [1.0, 2.0, "abc", 4.0]))
    with pytest.raises(TrainingDataError, match="Close must be > 0"):
        load_closes(write_csv(tmp_path / "neg.csv", [1.0, -2.0, 3.0]))
    (tmp_path / "noclose.csv").write_text("Date,Open\n2020-01-01,1\n")
    with pytest.raises(TrainingDataError, match="no Close column"):
        load_closes(tmp_path / "noclose.csv")
    (tmp_path / "unsorted.csv").write_text("Date,Close\n2020-01-02,1\n2020-01-01,2\n")
    with pytest.raises(TrainingDataError, match="ascending"):
        load_closes(tmp_path / "unsorted.csv")
    (tmp_path / "nodate.csv").write_text("Close\n1\n2\n")  # the contract's CSV has both columns
    with pytest.raises(TrainingDataError, match="no Date column"):
        load_closes(tmp_path / "nodate.csv")
    with pytest.raises(TrainingDataError, match=r"row 2 \(empty or n/a\)"):
        load_closes(write_csv(tmp_path / "na.csv", [1.0, "n/a", 3.0]))


def test_the_kit_windows_are_the_lstm_split() -> None:
    """Every family splits alike: the kit's windows and the LSTM's prepared data name the same samples."""
    closes = random_walk(400)
    data, kit = prepare(closes, window=20), windows(closes, 20)
    assert kit.sizes == data.sizes
    assert np.array_equal(kit.inputs, data.input_closes) and np.array_equal(kit.targets, data.target_closes)
    for name in ("train", "val", "test"):
        assert getattr(kit, name) == data.part(name)
        assert np.array_equal(kit.target_days(getattr(kit, name)), data.target_day_index(name))
