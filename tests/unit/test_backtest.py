"""The policy backtest on short spans of the bundled sample, with the ridge trainer (fast, real fits)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from retrain.backtest import engine
from retrain.backtest.fitting import InProcessTrainer
from retrain.cli import backtest as command

SPAN = ("2010-01-04", "2010-06-30")


def _args(**overrides: object) -> argparse.Namespace:
    values = {
        "ticker": "MSFT",
        "start": SPAN[0],
        "end": SPAN[1],
        "policies": "never,weekly,monthly,drift,performance",
        "trainer": "ridge",
        "param": None,
        "source": "sample",
    }
    values.update(overrides)
    return argparse.Namespace(**values)


def _replay(
    monkeypatch: pytest.MonkeyPatch | None = None, env: dict[str, str] | None = None, **overrides: object
):
    if monkeypatch is not None:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
    tickers, settings = command.parse_settings(_args(**overrides))
    trainer = InProcessTrainer(settings.trainer, settings.hyperparameters)
    replay = engine.Replay(tickers[0], settings, trainer)
    return replay, {p: replay.run(p) for p in settings.policies}


@pytest.fixture(scope="module")
def replayed():
    return _replay()


def test_never_trains_exactly_once_and_serves_that_model_every_day(replayed) -> None:
    replay, results = replayed
    never = results["never"]
    assert never.trainings == 1 and never.deploys == 1 and never.rejections == 0
    # The one model was trained on data through the day before the first forecast, and serves every day.
    assert [e["trigger"] for e in never.events] == ["initial"]
    assert {d.version for d in never.days} == {never.events[0]["date"]}
    # Forecasts cover exactly the span's trading days, each realised on its day.
    first, last = replay.dates.index("2010-01-04"), replay.dates.index("2010-06-30")
    assert [d.date for d in never.days] == replay.dates[first : last + 1]
    assert all(d.realised == replay.closes[replay.dates.index(d.date)] for d in never.days)


def test_weekly_trains_once_per_week_on_the_timers_data(replayed) -> None:
    replay, results = replayed
    weekly = [e for e in results["weekly"].events if e["trigger"] == "weekly"]
    # RETRAIN_SCHEDULE fires Mondays 01:00 UTC: one training per Monday in the span, each on the data
    # known then (through the last trading day before that Monday).
    mondays = [
        d
        for d in np.arange(np.datetime64("2010-01-04"), np.datetime64("2010-06-30"))
        if d.astype(dt.date).weekday() == 0
    ]
    assert len(weekly) == len(mondays) == 26
    weeks = [dt.date.fromisoformat(e["date"]).isocalendar()[:2] for e in weekly]
    assert len(set(weeks)) == len(weeks)
    for event, monday in zip(weekly, mondays, strict=True):
        before = [d for d in replay.dates if d < str(monday)]
        assert event["date"] == before[-1]
    assert results["weekly"].trainings == 1 + len(weekly)  # plus the first model
    assert results["weekly"].deploys + results["weekly"].rejections == results["weekly"].trainings


def test_policies_share_fits_per_training_day(replayed) -> None:
    replay, results = replayed
    days = {e["date"] for r in results.values() for e in r.events if "failed" not in e}
    assert len([v for v in replay._fits.values() if not isinstance(v, str)]) == len(days)
    monthly_days = {e["date"] for e in results["monthly"].events}
    weekly_days = {e["date"] for e in results["weekly"].events}
    assert monthly_days & weekly_days  # e.g. 2010-01-29: a Friday before the 1st, one fit for both


def test_the_backtest_uses_the_live_gate_detectors_and_cooldown_not_copies() -> None:
    from retrain import gate
    from retrain.monitoring import calibration, detectors, monitor

    assert engine.decide_with_test_errors is gate.decide_with_test_errors
    assert engine.drift_reference_end is monitor.drift_reference_end
    assert engine.drift_since_reference is monitor.drift_since_reference
    assert engine.performance_check is monitor.performance_check
    assert engine.decide_trigger is monitor.decide_trigger
    assert engine.in_cooldown is detectors.in_cooldown
    # The live monitor's day (per ticker and fleet alike: both end in `check_day`) calls the same functions.
    names = monitor.check_day.__code__.co_names
    assert {
        "drift_reference_end",
        "drift_since_reference",
        "performance_check",
        "decide_trigger",
        "in_cooldown",
    } <= set(names)
    _, settings = command.parse_settings(_args())
    assert settings.thresholds == calibration.thresholds_from_settings()


def test_changing_a_live_threshold_setting_changes_the_backtest(monkeypatch: pytest.MonkeyPatch) -> None:
    _, default = _replay(policies="drift")
    _, sensitive = _replay(monkeypatch, {"RETRAIN_MONITOR_DRIFT_THRESHOLD": "0.2"}, policies="drift")
    assert sensitive["drift"].trainings > default["drift"].trainings
    monkeypatch.delenv("RETRAIN_MONITOR_DRIFT_THRESHOLD")
    _, cooled = _replay(
        monkeypatch,
        {"RETRAIN_MONITOR_DRIFT_THRESHOLD": "0.2", "RETRAIN_MONITOR_COOLDOWN_DAYS": "60"},
        policies="drift",
    )
    assert cooled["drift"].trainings < sensitive["drift"].trainings


def test_changing_the_gate_setting_changes_the_backtest(monkeypatch: pytest.MonkeyPatch) -> None:
    # Superiority: a larger alpha calls more challengers significantly better, so more deploy.
    _, superiority = _replay(policies="weekly", gate_policy="superiority")
    _, lax = _replay(monkeypatch, {"RETRAIN_GATE_ALPHA": "0.9"}, policies="weekly", gate_policy="superiority")
    assert lax["weekly"].trainings == superiority["weekly"].trainings
    assert lax["weekly"].deploys > superiority["weekly"].deploys
    monkeypatch.delenv("RETRAIN_GATE_ALPHA")
    # The policy setting reaches the backtest's gate: non-inferiority lets fresh models of similar skill
    # through, superiority keeps the champion; --gate-policy overrides the setting.
    _, by_setting = _replay(monkeypatch, {"RETRAIN_GATE_POLICY": "superiority"}, policies="weekly")
    assert by_setting["weekly"].deploys == superiority["weekly"].deploys
    _, noninferiority = _replay(policies="weekly", gate_policy="non-inferiority")
    assert noninferiority["weekly"].deploys > superiority["weekly"].deploys
    reasons = [r for e in noninferiority["weekly"].events for r in e["gate"]]
    assert any(r.startswith("champion check (non-inferiority, margin 0.01)") for r in reasons)
    _, wide = _replay(policies="weekly", gate_policy="non-inferiority", gate_noninferiority_margin="0.5")
    assert wide["weekly"].deploys >= noninferiority["weekly"].deploys
    assert any("margin 0.5" in r for e in wide["weekly"].events for r in e["gate"])


def test_the_in_process_fit_is_the_trainers_own(tmp_path) -> None:
    """The ridge trainer's script, run as a job would, reports the test MAE the backtest's in-process fit
    of the same data gives (the same fit_closes, the same served forecast function)."""
    import os
    import subprocess
    import sys

    from retrain.job_code import assemble_job_code
    from retrain.market_data import fetch_prices
    from retrain.trainers import get_trainer

    prices = fetch_prices("MSFT", "sample", 1825, end="2010-06-30")
    data = tmp_path / "msft.csv"
    prices.to_csv(data, index=False)
    fitting = InProcessTrainer("ridge")
    module = fitting.module
    assert module.__file__ == str(get_trainer("ridge").script_path())
    fitted = fitting.fit(prices["Close"].to_numpy())
    closes = prices["Close"].to_numpy()
    days = fitted.test_days
    windows = np.stack([closes[d - fitted.window : d] for d in days])
    in_process_mae = float(np.mean(np.abs(fitted.evaluation_predict(windows) - closes[days])))
    out = tmp_path / "job"
    # As a job runs it: its own process (MLflow's global state stays out of this one), no MLFLOW_* env,
    # the job's code (the folder with the trainer kit copied in), no PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "PYTHONPATH"}
    script = assemble_job_code(get_trainer("ridge").folder_path(), tmp_path / "code") / "train.py"
    job = subprocess.run(
        [sys.executable, str(script), "--data", str(data), "--output", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=script.parent,
        timeout=600,
    )
    assert job.returncode == 0, job.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mae"] == pytest.approx(in_process_mae, rel=1e-12)
    # The job serves the refit, as the backtest's served model: the same forecasts on the last windows,
    # fitted through the data end (which the evaluation model was not).
    import mlflow.pyfunc

    last = np.stack([closes[d - fitted.window : d] for d in range(len(closes) - 5, len(closes) + 1)])
    frame = pd.DataFrame(last, columns=[f"c{i}" for i in range(fitted.window)])
    served = mlflow.pyfunc.load_model(str(out / "model")).predict(frame)["forecast"].to_numpy()
    assert served == pytest.approx(fitted.served_predict(last), rel=1e-12)
    assert not np.allclose(served, fitted.evaluation_predict(last), rtol=1e-9)
    run = json.loads((out / "run.json").read_text())
    assert run["fitted_data_end"] == str(prices["Date"].iloc[-1].date())
    assert run["evaluation_fit_end"] < run["fitted_data_end"]


def test_the_gate_judges_the_evaluation_model_and_the_refit_serves(replayed) -> None:
    """refit=false is the old behaviour (serve the evaluation model). With the refit (the default) the
    gate sees the same evaluation forecasts, so a first model's decision is the same, but the forecasts
    served afterwards come from the refitted model. The served model's fit end (the drift reference's
    end, as the live monitor reads it from the fitted_data_end tag) is its data end only with the refit."""
    replay, fresh = replayed
    stale_replay, stale = _replay(policies="never", param=["refit=false"])
    first = replay.first_forecast - 1
    model, stale_model = replay.model(first), stale_replay.model(first)
    assert model.fit_end == model.data_end == first
    assert stale_model.fit_end < stale_model.test_days[0]  # the evaluation's fit: before its test days
    assert [e["gate"] for e in fresh["never"].events] == [e["gate"] for e in stale["never"].events]
    served_fresh = np.array([d.forecast for d in fresh["never"].days])
    served_stale = np.array([d.forecast for d in stale["never"].days])
    assert served_fresh.shape == served_stale.shape
    assert not np.allclose(served_fresh, served_stale, rtol=1e-9)


def test_cli_ridge_end_to_end(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from retrain.cli import main

    out = tmp_path / "out"
    code = main(
        [
            "backtest", "--ticker", "MSFT,IBM", "--start", "2010-03-01", "--end", "2010-05-28",
            "--policies", "weekly,never,performance", "--trainer", "ridge", "--out", str(out),
            "--state-dir", str(tmp_path / "state"), "--workers", "1", "--no-progress",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    last = json.loads(captured.out.strip().splitlines()[-1])
    assert last["tickers"] == ["MSFT", "IBM"]
    assert list(last["policies"]) == ["never", "weekly", "performance"]  # never first: the reference
    for values in last["policies"].values():
        assert set(values) >= {"mae_ratio", "ci95", "trainings", "deploys", "rejections", "train_cpu_s"}
        lo, hi = values["ci95"]
        assert lo <= hi and 0.5 < values["mae_ratio"] < 1.5
    assert last["policies"]["never"]["trainings"] == 2  # one per ticker
    assert set(last["by_ticker"]) == {"MSFT", "IBM"}
    assert "policy" in captured.out and "MAE/naive" in captured.out
    with (out / "days.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert set(rows[0]) == {"date", "ticker", "policy", "served_version", "forecast", "realised", "naive"}
    assert len({(r["ticker"], r["policy"]) for r in rows}) == 6
    assert (out / "backtest.png").stat().st_size > 10_000
    assert json.loads((out / "summary.json").read_text())["events"]["IBM"]["never"][0]["trigger"] == "initial"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--start", "2010-13-01"], "YYYY-MM-DD"),
        (["--start", "2010-06-01", "--end", "2010-05-01"], "is not after --start"),
        (["--ticker", "NOPE"], "not in the bundled sample"),
        (["--ticker", "MS FT"], "--ticker"),
        (["--policies", "never,hourly"], "unknown hourly"),
        (["--trainer", "xgboost"], "unknown trainer"),
        (["--param", "alpha=-1"], "alpha"),
        (["--start", "2030-01-01", "--end", "2030-02-01"], "in the future"),
        (["--ticker", "GOOG", "--start", "2004-08-20", "--end", "2004-12-31"], "no model could be trained"),
        (["--start", "2014-01-02", "--end", "2014-03-01"], "no trading day to forecast"),
        (["--gate-policy", "strict"], "use superiority or non-inferiority"),
        (["--gate-noninferiority-margin", "1%"], "send a fraction, e.g. 0.01"),
        (["--gate-noninferiority-margin", "-0.1"], "use a fraction in [0, 1)"),
        (["--gate-baseline-rule", "point"], "use significance or estimate-and-significance"),
    ],
)
def test_bad_input_is_refused_with_what_to_send(
    tmp_path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    from retrain.cli import main

    base = ["backtest", "--trainer", "ridge", "--start", "2010-03-01", "--end", "2010-04-30"]
    argv = [*base, *flags, "--out", str(tmp_path / "o"), "--state-dir", str(tmp_path / "s"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err


@pytest.mark.slow
def test_lstm_backtest_runs_in_process(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from retrain.cli import main

    code = main(
        [
            "backtest", "--ticker", "AAPL", "--start", "2011-01-03", "--end", "2011-02-28",
            "--policies", "never,monthly", "--param", "max_epochs=2", "--out", str(tmp_path / "o"),
            "--state-dir", str(tmp_path / "s"), "--workers", "1", "--no-progress", "--trainer", "lstm",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    last = json.loads(captured.out.strip().splitlines()[-1])
    assert last["trainer"] == "lstm" and last["hyperparameters"]["max_epochs"] == "2"
    assert last["policies"]["monthly"]["trainings"] == 3  # the first model, the Jan 1 and Feb 1 timers


def test_the_monitor_policy_retrains_only_on_the_live_triggers_outside_the_cooldown() -> None:
    _, results = _replay(policies="monitor", start="2008-01-02", end="2009-12-31")
    events = results["monitor"].events
    triggers = [e for e in events if e["trigger"] != "initial"]
    assert triggers and {e["trigger"] for e in triggers} <= {"drift", "performance"}
    days = [np.datetime64(e["date"]) for e in triggers]
    # RETRAIN_MONITOR_COOLDOWN_DAYS (20 trading days) between two triggers, as the live monitor.
    assert all(np.busday_count(a, b) >= 20 for a, b in zip(days, days[1:], strict=False))
    assert all("threshold" in e["reason"] for e in triggers)


def test_drift_is_checked_every_day_however_old_the_served_model_and_re_arms_after_a_rejection() -> None:
    """IBM 2005-2008 under the superiority gate: the first model serves throughout (every drift challenger
    is rejected). The old replay (800 calendar days back from each day) went blind from ~1.7 years after its
    data end; now every day is checked, and each drift trigger compares against the last rejected
    challenger's data."""
    from retrain.backtest import report

    settings = command.parse_settings(
        _args(ticker="IBM", start="2005-01-03", end="2008-12-31", policies="drift", gate_policy="superiority")
    )[1]
    result = engine.replay_ticker("IBM", settings)
    drift = result.policies["drift"]
    assert drift.drift_unchecked_days == 0
    assert drift.summary()["drift_unchecked_share"] == 0.0
    served = {d.made: d.version for d in drift.days}
    triggers = [e for e in drift.events if e["trigger"] == "drift"]
    # A drift trigger more than three years after the serving model's data end.
    assert any(
        np.datetime64(e["date"]) - np.datetime64(served[e["date"]]) > np.timedelta64(3 * 365, "D")
        for e in triggers
    )
    # Re-armed: against the served model's data end until a drift challenger is rejected, then against
    # the data of the latest rejected one (the served model's data end if a deploy came in between).
    rejected: str | None = None
    for event in drift.events:
        if event["trigger"] == "drift":
            assert event["drift_reference_end"] == max(served[event["date"]], rejected or "")
        if event.get("deployed"):
            rejected = None
        elif event["trigger"] == "drift":
            rejected = event["date"]
    assert sum(not e["deployed"] for e in triggers) >= 2  # the re-arm was exercised
    # The summary and the table report the unchecked days.
    summary = report.summarise([result], ["drift"])
    assert summary["policies"]["drift"]["drift_unchecked_days"] == 0
    assert summary["by_ticker"]["IBM"]["drift"]["drift_unchecked_share"] == 0.0
    assert "drift unchecked" in report.table(summary) and "0 (0.0%)" in report.table(summary)


def test_a_third_family_fits_in_process_with_nothing_family_specific_in_the_backtest() -> None:
    """gbr is registered, not named in retrain/backtest: its own fit_closes and in_process_setup suffice."""

    rng = np.random.default_rng(1)
    closes = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 300)))
    fitted = InProcessTrainer("gbr", {"n_estimators": "20"}).fit(closes)
    assert fitted.window == 20 and fitted.epochs is None and fitted.served_fit_end == len(closes) - 1
    days = fitted.test_days
    forecast = fitted.evaluation_predict(np.stack([closes[d - 20 : d] for d in days]))
    assert forecast.shape == days.shape and np.isfinite(forecast).all()
