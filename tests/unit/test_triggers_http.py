"""The HTTP trigger's body validation and status rendering (pure parts of `retrain.triggers`), and the
Function App's registration surface."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus

from retrain.fleet import MAX_FLEET_TICKERS, FleetInput
from retrain.trainers import names
from retrain.triggers import BadRequest, parse_request, parse_retrain_request, readable_status
from retrain.workflow import TICKER_GUARD_ACTIVITY

TRAINER_NAMES = ", ".join(names())  # the registry's, as the refusal lists them

ENV = {
    "RETRAIN_TICKERS": "MSFT,AAPL",
    "RETRAIN_SOURCE": "sample",
    "RETRAIN_LOOKBACK_DAYS": "900",
    "RETRAIN_JOB_POLL_MINUTES": "0.05",
    "RETRAIN_CANARY_PERCENT": "25",
}


def test_empty_body_takes_everything_from_settings():
    for body in (b"", None, "  "):
        cycle = parse_retrain_request(body, ENV)
        assert cycle.ticker == "MSFT" and cycle.source == "sample" and cycle.lookback_days == 900
        assert cycle.force is False and cycle.trigger == "http"
        assert cycle.poll_minutes == pytest.approx(0.05) and cycle.canary_percent == 25


def test_fields_override_settings_and_ticker_is_normalised(tmp_path):
    (tmp_path / "x.csv").write_text("Date,Open,High,Low,Close,Volume\n")
    body = json.dumps(
        {"ticker": " aapl ", "lookback_days": 400, "source": "csv:x.csv", "force": True, "max_epochs": 2}
    )
    cycle = parse_retrain_request(body.encode(), {**ENV, "RETRAIN_DATA_DIR": str(tmp_path)})
    assert (cycle.ticker, cycle.lookback_days, cycle.source, cycle.force) == (
        "AAPL",
        400,
        "csv:x.csv",
        True,
    )
    assert (cycle.trainer, cycle.hyperparameters) == ("lstm", {"max_epochs": 2})
    # The input round-trips through JSON (it is the orchestration input).
    assert type(cycle).from_dict(json.loads(json.dumps(cycle.to_dict()))) == cycle


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"MSFT"', "must be a JSON object"),
        ('{"tickr": "MSFT"}', "unknown field(s) tickr"),
        ('{"ticker": ""}', "ticker must be a non-empty string"),
        ('{"ticker": 42}', "ticker must be a non-empty string"),
        ('{"ticker": "MS FT/.."}', "ticker:"),
        ('{"lookback_days": "365"}', "lookback_days='365'"),
        ('{"lookback_days": 5}', "from 30 to 36500"),
        ('{"lookback_days": true}', "lookback_days=True"),
        ('{"source": "bloomberg"}', "yfinance, sample, csv:PATH or blob:CONTAINER/PATH"),
        ('{"source": "csv:"}', "yfinance, sample, csv:PATH or blob:CONTAINER/PATH"),
        ('{"force": "yes"}', "expected true or false"),
        ('{"max_epochs": 0}', "from 1 to 1000"),
        (
            '{"trainer": "../trainer"}',
            f"unknown trainer '../trainer'; use one of the trainers in this repository: {TRAINER_NAMES}",
        ),
        ('{"trainer": "/tmp/evil"}', f"use one of the trainers in this repository: {TRAINER_NAMES}"),
        ('{"trainer": 3}', "unknown trainer 3"),
        ('{"trainer": "ridge", "max_epochs": 3}', "trainer ridge does not train in epochs"),
        ('{"hyperparameters": [1]}', "hyperparameters must be an object"),
        ('{"hyperparameters": {"alpha": "1 && rm"}}', "no spaces or quotes"),
        # The trainer's declared bounds (its hyperparameters.json), not only safe text.
        (
            '{"hyperparameters": {"max_epochs": 100000000}}',
            "max_epochs='100000000': expected an integer from 1 to 1000",
        ),
        (
            '{"hyperparameters": {"patience": 100000000}}',
            "patience='100000000': expected an integer from 1 to 1000",
        ),
        ('{"hyperparameters": {"threads": 512}}', "threads='512': expected an integer from 1 to 64"),
        ('{"hyperparameters": {"learning_rate": "fast"}}', "expected a number from 1e-06 to 1.0"),
        ('{"hyperparameters": {"refit": "maybe"}}', "refit='maybe': expected true or false"),
        ('{"hyperparameters": {"max_epoch": 5}}', "trainer lstm has no hyperparameter 'max_epoch'; it takes"),
        (
            '{"trainer": "ridge", "hyperparameters": {"alpha": -1}}',
            "expected a number from 0.0 to 1000000.0 or auto",
        ),
        ('{"trainer": "ridge", "hyperparameters": {"window": 100000}}', "expected an integer from 3 to 500"),
    ],
)
def test_bad_bodies_say_what_to_send(body, says):
    with pytest.raises(BadRequest) as err:
        parse_retrain_request(body, ENV)
    assert says in str(err.value)


def test_a_tickers_body_is_a_fleet_normalised_with_the_requests_settings(tmp_path):
    (tmp_path / "MSFT.csv").write_text("Date,Open,High,Low,Close,Volume\n")
    body = {"tickers": [" msft", "AAPL", "MSFT"], "trainer": "ridge", "source": "csv:{ticker}.csv"}
    request = parse_request(json.dumps(body), {**ENV, "RETRAIN_DATA_DIR": str(tmp_path)})
    assert request.fleet and request.ticker is None and request.tickers == ["MSFT", "AAPL"]
    assert request.overrides["trainer"] == "ridge" and request.overrides["source"] == "csv:{ticker}.csv"
    one = parse_request('{"tickers": ["msft"]}', ENV)  # a fleet of one, not a single cycle
    assert one.fleet and one.tickers == ["MSFT"]
    single = parse_request('{"ticker": "msft"}', ENV)
    assert not single.fleet and single.ticker == "MSFT"
    with pytest.raises(BadRequest, match="a fleet request"):
        parse_retrain_request('{"tickers": ["MSFT"]}', ENV)
    assert FleetInput.from_settings(["MSFT", "AAPL"], "http", ENV, **request.overrides).tickers == [
        "MSFT",
        "AAPL",
    ]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"ticker": "MSFT", "tickers": ["AAPL"]}, "not both"),
        ({"tickers": []}, "tickers is empty: send at least one ticker"),
        ({"tickers": "MSFT,AAPL"}, 'a string; send a JSON list of symbols, e.g. ["MSFT", "AAPL"]'),
        ({"tickers": "@tickers.txt"}, "a file of tickers is the operator's"),
        ({"tickers": ["MSFT", "@tickers.txt"]}, "a file of tickers is the operator's"),
        ({"tickers": ["MSFT", 42]}, "42 is not a symbol"),
        ({"tickers": {"MSFT": 1}}, "expected a JSON list of symbols"),
        ({"tickers": ["MS FT/.."]}, "tickers:"),
        (
            {"tickers": [f"T{i}" for i in range(MAX_FLEET_TICKERS + 1)]},
            f"at most {MAX_FLEET_TICKERS}: split it",
        ),
        ({"tickers": ["MSFT"], "lookback_days": 5}, "from 30 to 36500"),
    ],
)
def test_bad_fleet_bodies_say_what_to_send(body, says):
    with pytest.raises(BadRequest) as err:
        parse_request(json.dumps(body), ENV)
    assert says in str(err.value)


def test_trainer_and_hyperparameters_come_from_the_body_or_the_settings():
    ridge = parse_retrain_request(
        b'{"trainer": "ridge", "hyperparameters": {"alpha": 0.5, "window": 10}}', ENV
    )
    assert (ridge.trainer, ridge.hyperparameters) == ("ridge", {"alpha": 0.5, "window": 10})
    # The default trainer takes max_epochs from RETRAIN_MAX_EPOCHS; a body value wins.
    lstm = parse_retrain_request(
        b'{"hyperparameters": {"max_epochs": 4, "seed": 7}}', {**ENV, "RETRAIN_MAX_EPOCHS": "9"}
    )
    assert (lstm.trainer, lstm.hyperparameters) == ("lstm", {"max_epochs": 4, "seed": 7})
    assert parse_retrain_request(b"", {**ENV, "RETRAIN_MAX_EPOCHS": "9"}).hyperparameters == {
        "max_epochs": "9"
    }
    from_setting = parse_retrain_request(b"", {**ENV, "RETRAIN_TRAINER": "ridge"})
    assert (from_setting.trainer, from_setting.hyperparameters) == ("ridge", {})
    with pytest.raises(BadRequest, match="unknown trainer 'xgb'; use one of"):
        parse_retrain_request(b"", {**ENV, "RETRAIN_TRAINER": "xgb"})
    gate = parse_retrain_request(
        b"", {**ENV, "RETRAIN_GATE_METRIC": "rmse", "RETRAIN_GATE_DIRECTION": "lower"}
    )
    assert gate.gate_metrics == {
        "metric": "rmse",
        "baseline": "naive_mae",
        "champion": "champion_mae",
        "higher_is_better": False,
    }


def test_readable_status_of_a_running_and_a_failed_instance():
    custom = {
        "step": "wait_for_job",
        "steps": [{"step": "fetch_data", "started": "t", "seconds": 1.5}],
        "decision": None,
        "ids": {"job_name": "retrain-msft-2026w48-train"},
        "warnings": [],
    }
    running = DurableOrchestrationStatus(
        name="retrain_orchestrator",
        instanceId="retrain-msft-2026w48",
        createdTime="2026-11-23T01:00:00Z",
        lastUpdatedTime="2026-11-23T01:00:05Z",
        runtimeStatus="Running",
        customStatus=custom,
    )
    answer = readable_status(running)
    assert answer["runtime_status"] == "Running" and answer["step"] == "wait_for_job"
    assert answer["steps"][0]["seconds"] == 1.5 and answer["ids"]["job_name"].endswith("-train")
    failed = DurableOrchestrationStatus(
        instanceId="x",
        createdTime="2026-11-23T01:00:00Z",
        runtimeStatus="Failed",
        output="Orchestrator function 'x' failed: boom",
        customStatus={**custom, "step": "failed", "error": "job ended Failed"},
    )
    assert readable_status(failed)["error"] == "job ended Failed"


def test_function_app_registers_every_function_without_ml_libraries():
    # A fresh interpreter: the Function App must import without torch, lightning or mlflow.
    code = (
        "import sys, function_app\n"
        "names = sorted(f.get_function_name() for f in function_app.app.get_functions())\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'mlflow'))\n"
        "print(' '.join(names)); print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
    ).stdout.splitlines()
    names = set(out[0].split())
    assert {
        "start_retrain",
        "retrain_status",
        "terminate_retrain",
        "monitor_status",
        "terminate_monitor",
        TICKER_GUARD_ACTIVITY,  # the orchestrator calls it by this name
        "retrain_timer",
        "job_events",
        "retrain_orchestrator",
        "fetch_data",
        "submit_training",
        "get_job_status",
        "register_model",
        "smoke_test",
    } <= names
    assert out[1] == "[]"


# --- what a request may read (issue 9 point 1) ---------------------------------------------------------------
def _data_dir(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "msft.csv").write_text("Date,Open,High,Low,Close,Volume\n")
    (data / "sub" / "aapl.csv").write_text("Date,Open,High,Low,Close,Volume\n")
    outside = tmp_path / "outside.csv"
    outside.write_text("Date,Open,High,Low,Close,Volume\n2020-01-02,1,1,1,1,1\n")
    (data / "link.csv").symlink_to(outside)
    (data / "etc").symlink_to("/etc")
    return data, outside


def test_a_request_names_no_csv_unless_a_data_dir_is_configured(tmp_path):
    for source in ("csv:/proc/self/environ", "csv:msft.csv"):
        with pytest.raises(BadRequest, match="the operator has not set RETRAIN_DATA_DIR"):
            parse_retrain_request(json.dumps({"source": source}), ENV)
    # the operator's own configured source is not a request's choice: it stays allowed
    own = {**ENV, "RETRAIN_SOURCE": "csv:/srv/prices.csv"}
    assert parse_retrain_request(json.dumps({"source": "csv:/srv/prices.csv"}), own).source == (
        "csv:/srv/prices.csv"
    )


def test_a_request_names_only_files_inside_the_data_dir(tmp_path):
    data, outside = _data_dir(tmp_path)
    env = {**ENV, "RETRAIN_DATA_DIR": str(data)}
    for name in ("msft.csv", "sub/aapl.csv", "./sub/../msft.csv", str(data / "msft.csv")):
        assert parse_retrain_request(json.dumps({"source": f"csv:{name}"}), env).source == f"csv:{name}"
    refused = (
        "/proc/self/environ",
        "../outside.csv",
        "sub/../../outside.csv",
        str(outside),  # a valid CSV, but outside the directory
        "link.csv",  # a symlink out of it
        "etc/passwd",  # through a symlinked directory
        "missing.csv",
        "sub",  # a directory
    )
    for name in refused:
        with pytest.raises(BadRequest) as caught:
            parse_retrain_request(json.dumps({"source": f"csv:{name}"}), env)
        message = str(caught.value)
        assert "inside" in message and "RETRAIN_DATA_DIR" in message, message
        if not name.startswith("/"):  # the answer names what was sent, never the resolved path
            assert str(tmp_path) not in message and "/etc" not in message


def test_huge_values_are_not_echoed():
    huge = "A" * 10_000_000
    for body in ({"ticker": huge}, {"source": huge}, {huge: 1}, {"max_epochs": huge}):
        with pytest.raises(BadRequest) as caught:
            parse_retrain_request(json.dumps(body), ENV)
        assert len(str(caught.value)) < 2000


def test_deeply_nested_body_is_a_bad_request():
    with pytest.raises(BadRequest, match="nests too deeply"):
        parse_retrain_request(b"[" * 100_000 + b"]" * 100_000, ENV)


def test_the_fetch_activity_applies_the_same_policy(tmp_path, monkeypatch):
    from retrain import activities
    from retrain.market_data import MarketDataError

    data, outside = _data_dir(tmp_path)
    monkeypatch.setenv("RETRAIN_SOURCE", "sample")
    monkeypatch.delenv("RETRAIN_DATA_DIR", raising=False)
    payload = {"ticker": "MSFT", "source": f"csv:{outside}", "lookback_days": None, "instance_id": "i"}
    with pytest.raises(MarketDataError, match="RETRAIN_DATA_DIR"):
        activities.fetch_data(payload)
    monkeypatch.setenv("RETRAIN_DATA_DIR", str(data))
    for source in (f"csv:{outside}", "csv:link.csv", "csv:/proc/self/environ"):
        with pytest.raises(MarketDataError, match="inside the data directory|not a file in the data"):
            activities.fetch_data({**payload, "source": source})


def test_a_setting_out_of_the_trainers_bounds_is_refused_with_them():
    # RETRAIN_MAX_EPOCHS reaches the trainer as a hyperparameter: the same declared bounds apply.
    with pytest.raises(BadRequest, match="max_epochs='5000': expected an integer from 1 to 1000"):
        parse_retrain_request(b"", {**ENV, "RETRAIN_MAX_EPOCHS": "5000"})
    assert parse_retrain_request(
        b'{"trainer": "ridge", "hyperparameters": {"alpha": "auto", "refit": false}}', ENV
    ).hyperparameters == {"alpha": "auto", "refit": False}
