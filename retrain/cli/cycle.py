"""`retrain run` (one full cycle through the local host) and `retrain status`.

`run` starts the local Functions host in this process on the state dir and starts a fleet cycle through
the host's real `POST /api/retrain` route (the same trigger Azure runs): `--tickers A,B,C` (or `@FILE`)
sends `{"tickers": [...]}`, `--ticker X` sends `{"ticker": X}` (no ticker: the first of RETRAIN_TICKERS),
which the route starts as `{"tickers": [X]}`, a fleet of one through the same path. It shows the fleet's
progress per step and batch on stderr (`FleetProgress`) and prints the fleet's outcome as ONE JSON line
last on stdout:

    {"instance_id", "status", "tickers": {X: {"status", "model_version", "gate", "error", "endpoint",
     "data_version", "batch", ...}}, "endpoints", "batches", "counts", "timings_s", "elapsed_s",
     "warnings", "runtime_status", "error"}

plus, for a fleet of one (`--ticker`, or no ticker), `prediction`: the latest window scored through the
stable URL of the endpoint serving the ticker, whatever serves it (the new model once deployed, else the
champion): `{ticker, scoring_uri, endpoint, last_close, forecast, model, bundle}`, or `{error}` (why
there is none, e.g. nothing serves the ticker yet). A fleet of several tickers prints no prediction.

Exit status (`--ticker` and `--tickers` alike): 0 when every ticker ended deployed, rejected or skipped,
1 when any ticker failed or the fleet itself failed, 2 for bad usage, 3 when every ticker is busy (held by
another cycle or fleet).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

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
    run = sub.add_parser("run", help="one full retraining cycle (a fleet cycle) through the local host")
    run.add_argument(
        "--ticker",
        help="ticker symbol: a fleet of one, its prediction in the last stdout line (default: the first of "
        "RETRAIN_TICKERS)",
    )
    run.add_argument(
        "--tickers",
        metavar="A,B,C|@FILE",
        help="a fleet cycle over these tickers instead of one: comma-separated, or @FILE (one ticker "
        "per line, # comments); progress per batch on stderr, the fleet's outcome as the last stdout line",
    )
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
    tickers = _fleet_tickers(args)
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
                "tickers": tickers,
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
        shown = {**body, "tickers": _shown_tickers(tickers)} if tickers else body
        say(f"retrain run: host {base_url}, state {state_dir}, request {json.dumps(shown)}")
        client = HostClient(base_url, key)
        code, answer = client.start_cycle(body)
        if code == 409:
            where = answer.get("statusQueryGetUri") or ", ".join(
                h["statusQueryGetUri"] for h in (answer.get("holders") or {}).values()
            )
            raise CliError(f"{answer.get('error')}\n  status: {where}", 3)
        if code != 202:
            raise CliError(f"POST /api/retrain answered {code}: {answer}", 2)
        instance_id = answer["id"]
        say(f"[{time.monotonic() - started:7.1f}s] started {instance_id}")
        for ticker, holder in sorted((answer.get("skipped") or {}).items()):
            say(f"  skipped {ticker}: {holder} is retraining it")
        status = follow_fleet(client, instance_id, started)
        summary = _fleet_summary(status)
        if not tickers:  # a fleet of one: what its endpoint now answers
            summary["prediction"] = _prediction(summary, args)
    finally:
        if host is not None:
            stop_host(host)
    print(json.dumps(summary), flush=True)
    return exit_status(summary)


# The tickers' outcomes that are a cycle doing its job (a rejection is the gate's verdict, a skip another
# cycle's work); any other (failed) makes `run` exit 1.
FINE_OUTCOMES = ("deployed", "rejected", "skipped")


def exit_status(summary: dict[str, Any]) -> int:
    """0 when the fleet completed and every ticker ended deployed, rejected or skipped; else 1."""
    outcomes = [(o or {}).get("status") for o in (summary.get("tickers") or {}).values()]
    fine = bool(outcomes) and all(o in FINE_OUTCOMES for o in outcomes)
    completed = summary.get("runtime_status") == "Completed" and summary.get("status") == "completed"
    return 0 if completed and fine else 1


# ------------------------------------------------------------------------------------------ fleets


def _fleet_tickers(args: argparse.Namespace) -> list[str] | None:
    """`--tickers A,B,C` or `@FILE` (settings.parse_tickers, the RETRAIN_TICKERS forms), or None."""
    if args.tickers is None:
        return None
    if args.ticker is not None:
        raise CliError("give --ticker (a fleet of one) or --tickers (a fleet of several), not both")
    try:
        return settings.parse_tickers(args.tickers, what="--tickers")
    except settings.SettingsError as exc:
        raise CliError(str(exc)) from exc


def _shown_tickers(tickers: list[str], limit: int = 10) -> list[str]:
    """The tickers as the request line on stderr shows them: hundreds are cut short."""
    return tickers if len(tickers) <= limit else [*tickers[:limit], f"... {len(tickers) - limit} more"]


class FleetProgress:
    """A fleet's progress on stderr, per batch: on a terminal one line that rewrites itself (a bar of the
    batches done, the counts), otherwise a plain line whenever the step, the batches done or the counts
    change (a log stays readable)."""

    WIDTH = 24

    def __init__(self, started: float, stream: TextIO | None = None):
        self.started = started
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last: tuple[Any, ...] | None = None
        self.open = False  # a rewritten line is on the terminal (end it before anything else)

    def line(self, status: dict[str, Any]) -> str:
        done, batches = int(status.get("batches_done") or 0), int(status.get("batches") or 0)
        filled = self.WIDTH * done // batches if batches else 0
        counts = status.get("counts") or {}
        shown = " ".join(
            f"{name} {counts.get(name, 0)}"
            for name in ("accepted", "deployed", "rejected", "failed", "skipped")
        )
        return (
            f"[{time.monotonic() - self.started:7.1f}s] {status.get('step') or 'pending':13} "
            f"batches {done}/{batches} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {shown}"
        )

    def __call__(self, status: dict[str, Any]) -> None:
        if not status.get("fleet") or status.get("step") is None:
            return
        key = (
            status.get("step"),
            status.get("batches_done"),
            status.get("batches"),
            str(status.get("counts")),
        )
        if self.tty:
            self.stream.write(f"\r{self.line(status)}\x1b[K")
            self.open = True
        elif key != self.last:
            self.stream.write(self.line(status) + "\n")
        self.last = key
        self.stream.flush()

    def close(self) -> None:
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False


def follow_fleet(host: HostClient, instance_id: str, started: float) -> dict[str, Any]:
    """Follow a fleet's readable status until it ends, showing its progress per batch (`FleetProgress`)."""
    progress = FleetProgress(started)
    try:
        return host.follow_cycle(instance_id, on_status=progress)
    except HostClientError as exc:
        raise CliError(str(exc), 1) from exc
    finally:
        progress.close()


def _fleet_summary(status: dict[str, Any]) -> dict[str, Any]:
    """The fleet's outcome (its output: tickers, endpoints, batches, counts, timings_s, elapsed_s) with
    `runtime_status` and `error`; a fleet that ended without an output (failed, terminated) says so."""
    output = status.get("output")
    summary: dict[str, Any] = (
        dict(output)
        if isinstance(output, dict)
        else {
            "instance_id": status.get("instance_id"),
            "status": "failed",
            "tickers": {},
            "endpoints": {},
            "batches": [],
            "counts": status.get("counts") or {},
            "timings_s": step_timings(status.get("steps") or []),
            "elapsed_s": None,
            "warnings": status.get("warnings") or [],
        }
    )
    summary["runtime_status"] = status.get("runtime_status")
    summary["error"] = status.get("error") or (
        None
        if status.get("runtime_status") == "Completed"
        else f"the fleet ended {status.get('runtime_status')}"
    )
    return summary


def _prediction(summary: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """A fleet of one's latest window scored through the stable URL of the endpoint serving its ticker
    (whatever serves: the new model or the champion), or `{error}` saying why there is none."""
    ticker = next(iter(summary.get("tickers") or {}), None) or (args.ticker or settings.tickers()[0]).upper()
    try:
        served = serving_endpoint(ticker)
        if served is None:
            return {"ticker": ticker, "error": f"no endpoint serves {ticker} yet"}
        source = args.source or settings.get("RETRAIN_SOURCE")
        lookback = args.lookback_days or settings.get_int("RETRAIN_LOOKBACK_DAYS")
        closes = recent_closes(ticker, str(source), lookback)
        answer = predict_through(served, closes)
        return {
            "ticker": ticker,
            "scoring_uri": served.endpoint.scoring_uri,
            "endpoint": served.endpoint.name,
            "last_close": closes[-1],
            "forecast": answer["forecast"][0],
            "model": answer.get("model"),
            **({"bundle": answer["bundle"]} if answer.get("bundle") else {}),
        }
    except Exception as exc:  # noqa: BLE001 - the cycle's outcome stands; say why there is no prediction
        return {"ticker": ticker, "error": str(exc)}


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
