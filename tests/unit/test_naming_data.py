"""One way to name data (issue 19 point 11): the CLI user is the operator and names any path (absolute,
or relative to the working directory), an HTTP request names only a file inside RETRAIN_DATA_DIR (and a
blob: source only as the operator's RETRAIN_SOURCE), and every refusal has the one wording
`market_data.data_refusal` builds. The CLI entry points run as real processes in
tests/integration/test_cli_data_names.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrain.cli.common import CliError, operator_request_source
from retrain.market_data import DATA_RULE, MarketDataError, data_refusal, operator_source
from retrain.monitoring.orchestration import MonitorRequestError, parse_monitor_request
from retrain.triggers import BadRequest, parse_retrain_request

ENV = {"RETRAIN_TICKERS": "MSFT", "RETRAIN_SOURCE": "sample"}


def refusals(source: str, env: dict[str, str]) -> list[str]:
    """The message each HTTP entry point answers `source` with (both must refuse it)."""
    messages = []
    with pytest.raises(BadRequest) as retrain:
        parse_retrain_request(json.dumps({"source": source}), env)
    messages.append(str(retrain.value))
    with pytest.raises(MonitorRequestError) as monitor:
        parse_monitor_request({"from": "2012-01-03", "source": source}, env)
    messages.append(str(monitor.value))
    return messages


def test_http_retrain_and_monitor_refuse_with_the_same_words(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    outside = tmp_path / "outside.csv"
    outside.write_text("Date,Open,High,Low,Close,Volume\n")
    cases = [
        (f"csv:{outside}", ENV, "cannot be read: the operator has not set RETRAIN_DATA_DIR"),
        (
            f"csv:{outside}",
            {**ENV, "RETRAIN_DATA_DIR": str(data)},
            "is not a file inside the data directory (paths may not leave it through .. or symlinks)",
        ),
        ("csv:missing.csv", {**ENV, "RETRAIN_DATA_DIR": str(data)}, "is not a file in the data directory"),
        ("blob:prices/{ticker}.csv", ENV, "is not the operator's RETRAIN_SOURCE"),
    ]
    for source, env, problem in cases:
        retrain, monitor = refusals(source, env)
        expected = str(data_refusal(source, problem))
        assert expected.endswith(DATA_RULE)
        assert retrain == expected and monitor == expected, (retrain, monitor)


def test_http_entry_points_accept_the_operators_own_sources(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "msft.csv").write_text("Date,Open,High,Low,Close,Volume\n")
    env = {**ENV, "RETRAIN_DATA_DIR": str(data)}
    assert parse_retrain_request(json.dumps({"source": "csv:msft.csv"}), env).source == "csv:msft.csv"
    assert (
        parse_monitor_request({"from": "2012-01-03", "source": "csv:msft.csv"}, env)["source"]
        == "csv:msft.csv"
    )
    blob_env = {**ENV, "RETRAIN_SOURCE": "blob:prices/{ticker}.csv"}
    assert parse_retrain_request(json.dumps({"source": "blob:prices/{ticker}.csv"}), blob_env).source == (
        "blob:prices/{ticker}.csv"
    )
    assert parse_monitor_request({"from": "2012-01-03"}, blob_env)["source"] == "blob:prices/{ticker}.csv"


def test_operator_source_reads_a_path_as_the_cli_user_named_it(tmp_path: Path) -> None:
    assert operator_source("csv:prices/msft.csv", cwd=tmp_path) == f"csv:{tmp_path / 'prices' / 'msft.csv'}"
    assert operator_source(f" csv:{tmp_path}/a/../b.csv ", cwd="/elsewhere") == f"csv:{tmp_path / 'b.csv'}"
    for source in ("sample", "yfinance", "blob:prices/{ticker}.csv"):
        assert operator_source(source, cwd=tmp_path) == source


def test_the_cli_trusts_its_users_file_with_its_own_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RETRAIN_SOURCE", "sample")
    local, sent = operator_request_source("csv:msft.csv", in_process=True)
    assert local == sent == f"csv:{tmp_path / 'msft.csv'}"
    import os

    assert os.environ["RETRAIN_SOURCE"] == sent  # the in-process host's configured source: trusted


def test_a_running_host_is_sent_the_name_inside_its_data_dir_or_the_cli_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    monkeypatch.chdir(data)
    monkeypatch.setenv("RETRAIN_SOURCE", "sample")
    monkeypatch.setenv("RETRAIN_DATA_DIR", str(data))
    local, sent = operator_request_source("csv:sub/msft.csv", in_process=False)
    assert (local, sent) == (f"csv:{data / 'sub' / 'msft.csv'}", "csv:sub/msft.csv")
    with pytest.raises(CliError) as caught:
        operator_request_source("csv:../outside.csv", in_process=False)
    assert caught.value.code == 2
    message = str(caught.value)
    assert message.startswith("source 'csv:../outside.csv' is outside RETRAIN_DATA_DIR") and message.endswith(
        DATA_RULE
    ), message


def test_the_fetch_activity_refuses_a_requests_blob_source(monkeypatch: pytest.MonkeyPatch) -> None:
    from retrain import activities

    monkeypatch.setenv("RETRAIN_SOURCE", "sample")
    with pytest.raises(MarketDataError, match="is not the operator's RETRAIN_SOURCE"):
        activities.fetch_data({"ticker": "MSFT", "source": "blob:c/x.csv", "instance_id": "i"})
