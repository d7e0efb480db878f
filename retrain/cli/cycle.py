"""`retrain run` (one full cycle through the local host) and `retrain status`.

`run` starts the local Functions host in this process on the state dir, starts the cycle through the
host's real `POST /api/retrain` route (the same trigger Azure runs), follows the readable status route
printing each step as it happens (stderr), and prints ONE JSON line last on stdout:
`instance_id, status, ticker, data_version, job_name, gate, model_version, scoring_uri, prediction,
timings_s` (plus `runtime_status`, `error`, `elapsed_s`). Exit status: 0 when the cycle completed
(deployed or rejected by the gate), 1 when it failed, 2 for bad usage, 3 when the ticker is busy.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from retrain import settings
from retrain.cli.common import (
    CliError,
    add_state_dir,
    open_or_join_host,
    operator_request_source,
    predict_through,
    prepare_environment,
    recent_closes,
    restore_endpoints,
    say,
    serving_endpoint,
    stop_host,
)
from retrain.host_client import HostClient, HostClientError
from retrain.progress import step_timings


def add_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="one full retraining cycle through the local host")
    run.add_argument("--ticker", help="ticker symbol (default: the first of RETRAIN_TICKERS)")
    run.add_argument(
        "--source",
        help="yfinance, sample, csv:PATH (any path, absolute or relative to the working directory) or "
        "blob:CONTAINER/PATH (default: RETRAIN_SOURCE)",
    )
    run.add_argument(
        "--lookback-days", type=int, help="calendar days of history (default: RETRAIN_LOOKBACK_DAYS)"
    )
    run.add_argument("--force", action="store_true", help="deploy even when the quality gate rejects")
    run.add_argument("--max-epochs", type=int, help="training epochs (default: RETRAIN_MAX_EPOCHS)")
    run.add_argument(
        "--trainer", help="a trainer of this repository, e.g. lstm or ridge (default: RETRAIN_TRAINER)"
    )
    run.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="a hyperparameter for the trainer (repeatable)"
    )
    run.add_argument("--port", type=int, help="host port (default: a free one)")
    run.add_argument(
        "--as-of", help="YYYY-MM-DD: train on data up to and including that trading day (default: latest)"
    )
    add_state_dir(run)
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="list orchestrations, or show one")
    status.add_argument("instance_id", nargs="?")
    add_state_dir(status)
    status.set_defaults(func=cmd_status)


def follow(host: HostClient, instance_id: str, started: float) -> dict[str, Any]:
    """Follow the readable status until the orchestration ends, printing each step as it starts and ends."""
    printed_start: set[int] = set()
    printed_end: set[int] = set()

    def show(status: dict[str, Any]) -> None:
        for i, step in enumerate(status.get("steps") or []):
            if i not in printed_start:
                printed_start.add(i)
                say(f"[{time.monotonic() - started:7.1f}s] {step['step']} ...")
            if step.get("seconds") is not None and i not in printed_end:
                printed_end.add(i)
                say(f"[{time.monotonic() - started:7.1f}s] {step['step']} done in {step['seconds']:.1f}s")

    try:
        return host.follow_cycle(instance_id, on_status=show)
    except HostClientError as exc:
        raise CliError(str(exc), 1) from exc


def _params(pairs: list[str] | None) -> dict[str, str] | None:
    """`--param key=value` pairs -> the request's hyperparameters (strings: the trainer parses them)."""
    if not pairs:
        return None
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--param {pair!r}: use --param key=value, e.g. --param alpha=0.5")
        values[key] = value
    return values


def cmd_run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if args.trainer is not None:  # before starting anything: a clear error with the valid names
        from retrain.trainers import TrainerError, get_trainer

        try:
            get_trainer(args.trainer)
        except TrainerError as exc:
            raise CliError(f"--trainer: {exc}") from exc
    hyperparameters = _params(args.param)
    state_dir = prepare_environment(args.state_dir)
    host, base_url, key = open_or_join_host(state_dir, args.port, "run")
    summary: dict[str, Any] = {}
    try:
        args.source, request_source = operator_request_source(args.source, in_process=host is not None)
        if host is not None:
            restore_endpoints()  # the champion's slot serves again before a new model is rolled out
        body = {
            k: v
            for k, v in {
                "ticker": args.ticker,
                "source": request_source,
                "lookback_days": args.lookback_days,
                "force": args.force or None,
                "max_epochs": args.max_epochs,
                "as_of": args.as_of,
                "trainer": args.trainer,
                "hyperparameters": hyperparameters,
            }.items()
            if v is not None
        }
        say(f"retrain run: host {base_url}, state {state_dir}, request {json.dumps(body)}")
        client = HostClient(base_url, key)
        code, answer = client.start_cycle(body)
        if code == 409:
            raise CliError(f"{answer.get('error')}\n  status: {answer.get('statusQueryGetUri')}", 3)
        if code != 202:
            raise CliError(f"POST /api/retrain answered {code}: {answer}", 2)
        instance_id = answer["id"]
        say(f"[{time.monotonic() - started:7.1f}s] started {instance_id}")
        status = follow(client, instance_id, started)
        summary = _summary(status, args, started)
    finally:
        if host is not None:
            stop_host(host)
    print(json.dumps(summary), flush=True)
    return 0 if summary.get("runtime_status") == "Completed" else 1


def _summary(status: dict[str, Any], args: argparse.Namespace, started: float) -> dict[str, Any]:
    raw_output = status.get("output")
    output: dict[str, Any] = raw_output if isinstance(raw_output, dict) else {}
    ids = status.get("ids") or {}
    ticker = output.get("ticker") or (args.ticker or settings.tickers()[0]).upper()
    summary: dict[str, Any] = {
        "instance_id": status.get("instance_id"),
        "status": output.get("status") or ("failed" if status.get("runtime_status") == "Failed" else None),
        "runtime_status": status.get("runtime_status"),
        "ticker": ticker,
        "data_version": output.get("data_version") or ids.get("data_version"),
        "job_name": output.get("job_name") or ids.get("job_name"),
        "gate": output.get("gate") or status.get("decision"),
        "model_version": output.get("model_version") or ids.get("model_version"),
        "scoring_uri": output.get("scoring_uri") or ids.get("scoring_uri"),
        # The rollout's endpoint when deployed; otherwise the one found serving the ticker (below).
        "endpoint": output.get("endpoint") if output.get("bundle") else None,
        "bundle": (
            {"name": output["bundle"], "version": output.get("bundle_version")}
            if output.get("bundle")
            else None
        ),
        "rollout": output.get("rollout"),
        "slot": output.get("slot"),
        "prediction": None,
        "error": status.get("error"),
        "warnings": status.get("warnings") or [],
        "timings_s": step_timings(status.get("steps") or []),
    }
    # Score the latest window through the stable URL (whatever serves: the new model or the champion).
    try:
        served = serving_endpoint(ticker)
        if served is not None:
            summary["scoring_uri"] = served.endpoint.scoring_uri
            summary["endpoint"] = summary["endpoint"] or served.endpoint.name
            source = args.source or settings.get("RETRAIN_SOURCE")
            lookback = args.lookback_days or settings.get_int("RETRAIN_LOOKBACK_DAYS")
            closes = recent_closes(ticker, str(source), lookback)
            answer = predict_through(served, closes)
            summary["prediction"] = {
                "last_close": closes[-1],
                "forecast": answer["forecast"][0],
                "model": answer.get("model"),
                **({"bundle": answer["bundle"]} if answer.get("bundle") else {}),
            }
    except Exception as exc:  # noqa: BLE001 - the cycle's outcome stands; say why there is no prediction
        summary["prediction"] = {"error": str(exc)}
    summary["elapsed_s"] = round(time.monotonic() - started, 2)
    return summary


def cmd_status(args: argparse.Namespace) -> int:
    state_dir = prepare_environment(args.state_dir)
    from functions_host.durable.engine import DurableEngine

    def _never(*_: Any) -> str:
        raise RuntimeError("status is read-only")

    engine = DurableEngine(
        state_dir / "host" / "durable.sqlite", _never, _never
    )  # not started: read-only queries
    try:
        if args.instance_id:
            status = engine.get_status(args.instance_id, show_input=False)
            if status is None:
                raise CliError(f"no orchestration {args.instance_id!r} in {state_dir}", 1)
            print(json.dumps(_readable(status), indent=2))
        else:
            for status in engine.list_instances():
                raw_custom = status.get("customStatus")
                custom: dict[str, Any] = raw_custom if isinstance(raw_custom, dict) else {}
                print(
                    f"{status['instanceId']:40} {status['runtimeStatus']:10} {custom.get('step') or '':18} "
                    f"{status.get('createdTime')}"
                )
    finally:
        engine.close()
    return 0


def _readable(status: dict[str, Any]) -> dict[str, Any]:
    from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus

    from retrain.triggers import readable_status

    return readable_status(DurableOrchestrationStatus.from_json(status))
