"""The batch runner: one process trains a batch of tickers with the family's single-ticker entry.

    python trainer_kit/batch.py --inputs DIR --output DIR [--entry train.py] [--param key=value ...]

Run from a job's code folder (the trainer folder with this kit copied in, `retrain.job_code`). DIR holds
`batch.json` and the data (docs/trainer-contract.md, "Batches"):

    {"tickers": [{"ticker": "MSFT", "data": "MSFT.csv", "champion_model": null}, ...]}

`data` is a file name inside DIR; `champion_model`, optional, is an MLflow model directory (relative to DIR
or absolute) or a model URI. For each ticker the family's `run(args)` (the very function its train.py runs
for one ticker) writes `<output>/<ticker>/` (model/, metrics.json, test_errors.json, run.json), staged
beside it and renamed when complete, in an MLflow run nested under the job's run and tagged `ticker`.
A ticker whose data is bad or whose fit fails is reported failed with its reason; the batch goes on.
Imports (torch, Lightning, MLflow, scikit-learn) are paid once for the batch.

`<output>/batch_summary.json`: {"tickers": {T: {"status": "ok", "metrics": {...}, "seconds": s} |
{"status": "failed", "error": "..."}}, "ok": n, "failed": n}, tickers in the manifest's order.
Exit status: 0 when at least one ticker trained, 1 when none did (the summary says why, per ticker),
2 when the batch itself is unusable (no manifest, a bad entry, unusable hyperparameters): one `error:` line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

CODE_DIR = Path(__file__).resolve().parents[1]  # the job's code folder: the family's modules live here
# Run as a script (without -I), this file's folder is sys.path[0], where the kit's modules (data, params,
# ...) would shadow top-level modules of the same names: the job's code folder takes its place.
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(CODE_DIR)
MANIFEST = "batch.json"
SUMMARY = "batch_summary.json"
DEFAULT_EXPERIMENT = "forecaster"
# A ticker names its output folder: letters, digits and the punctuation tickers use (BRK.B, ^GSPC, EURUSD=X).
TICKER_PATTERN = re.compile(r"[A-Za-z0-9^][A-Za-z0-9.^=_-]{0,31}")


class BatchError(RuntimeError):
    """The batch itself cannot run; the message says what to send instead."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a batch of tickers in one process (the trainer kit).")
    p.add_argument(
        "--inputs", required=True, type=Path, help=f"folder with {MANIFEST} and one CSV per ticker"
    )
    p.add_argument("--output", required=True, type=Path, help="folder for <ticker>/ outputs and the summary")
    p.add_argument("--entry", default="train.py", help="the family's entry script in the code folder")
    p.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="hyperparameter (repeatable)"
    )
    return p.parse_args(argv)


def read_manifest(inputs: Path) -> list[dict[str, Any]]:
    """The batch's entries, checked: unique valid tickers, each with a data file inside `inputs`."""
    path = inputs / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BatchError(
            f"no {MANIFEST} in {inputs}; send a folder with {MANIFEST} and one CSV per ticker"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BatchError(f"{path} is not JSON ({exc})") from None
    entries = manifest.get("tickers") if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or not entries:
        raise BatchError(
            f'{path} needs "tickers": a non-empty list of {{"ticker", "data", "champion_model"?}}'
        )
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("ticker"), str)
            or not isinstance(entry.get("data"), str)
        ):
            raise BatchError(f'{path}: entry {i} needs "ticker" and "data" strings, got {entry!r}')
        ticker, data = entry["ticker"], entry["data"]
        if not TICKER_PATTERN.fullmatch(ticker):
            raise BatchError(f"{path}: ticker {ticker!r} is not a ticker (letters, digits, . ^ = _ -)")
        if ticker.upper() in seen:
            raise BatchError(f"{path}: ticker {ticker!r} appears twice; list each ticker once")
        seen.add(ticker.upper())
        if Path(data).name != data:
            raise BatchError(f"{path}: {ticker}'s data {data!r} must be a file name inside {inputs}")
        champion = entry.get("champion_model")
        if champion is not None and not isinstance(champion, str):
            raise BatchError(f"{path}: {ticker}'s champion_model must be a string or null")
    return entries


def load_family(entry: str) -> ModuleType:
    """The family's entry script, imported once (its own modules resolve from the code folder)."""
    script = CODE_DIR / entry
    if Path(entry).name != entry or not script.is_file():
        raise BatchError(f"no entry script {entry!r} in {CODE_DIR}; pass --entry with the family's train.py")
    if str(CODE_DIR) not in sys.path:
        sys.path.insert(0, str(CODE_DIR))
    spec = importlib.util.spec_from_file_location(f"family_{Path(entry).stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)) or not callable(getattr(module, "parse_args", None)):
        raise BatchError(f"{entry} has no run(args) and parse_args(argv): see docs/trainer-contract.md")
    return module


def configure_tracking(output: Path) -> None:
    """One tracking store for the batch: the job's (MLFLOW_TRACKING_URI) or a SQLite file in the output."""
    import mlflow

    if os.environ.get("MLFLOW_TRACKING_URI"):
        return
    uri = f"sqlite:///{(output / 'mlflow.db').resolve()}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    if not os.environ.get("MLFLOW_RUN_ID"):
        name = os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
        if mlflow.get_experiment_by_name(name) is None:
            mlflow.create_experiment(name, artifact_location=(output / "mlartifacts").resolve().as_uri())
        mlflow.set_experiment(name)


def _expected_errors(family: ModuleType) -> tuple[type[BaseException], ...]:
    """The errors a family raises on purpose (bad data, arguments, champion), with a clear message."""
    names = ("TrainerError", "TrainingDataError")
    return tuple(e for e in (getattr(family, n, None) for n in names) if isinstance(e, type))


def _reason(exc: BaseException, family: ModuleType) -> str:
    """One line: the family's own message for the errors it raises on purpose, the type otherwise."""
    if isinstance(exc, _expected_errors(family)):
        return str(exc)
    if isinstance(exc, SystemExit):
        return f"the family's run exited with status {exc.code} (its stderr says why)"
    return f"training failed: {type(exc).__name__}: {exc}"


def _finite(metrics: Any) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in (metrics or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def train_one(
    family: ModuleType, entry: dict[str, Any], inputs: Path, output: Path, params: list[str]
) -> dict[str, Any]:
    """One ticker through the family's single-ticker run, into `<output>/<ticker>/` (renamed when complete)."""
    import mlflow

    ticker = entry["ticker"]
    final, staging = output / ticker, output / f".{ticker}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    if final.exists():
        raise BatchError(f"{final} already exists; pass an empty --output folder")
    champion = entry.get("champion_model")
    if champion and "://" not in champion and ":/" not in champion and not Path(champion).is_absolute():
        champion = str(inputs / champion)  # a model directory shipped inside the inputs folder
    argv = ["--data", str(inputs / entry["data"]), "--output", str(staging)]
    argv += ["--champion-model", champion] if champion else []
    for pair in params:
        argv += ["--param", pair]
    started = time.perf_counter()
    try:
        metrics = family.run(family.parse_args(argv))
        run_info = json.loads((staging / "run.json").read_text(encoding="utf-8"))
        mlflow.MlflowClient().set_tag(run_info["run_id"], "ticker", ticker)
        os.replace(staging, final)
    except (Exception, SystemExit) as exc:  # SystemExit: argparse or a sys.exit must not end the batch
        if not isinstance(exc, _expected_errors(family)):  # the family's own errors say it in one line
            traceback.print_exc()
        while mlflow.active_run() is not None and mlflow.active_run().info.run_id != _PARENT_RUN[0]:
            mlflow.end_run("FAILED")  # a run the family left open on the way out
        shutil.rmtree(staging, ignore_errors=True)
        return {"status": "failed", "error": _reason(exc, family)}
    return {"status": "ok", "metrics": _finite(metrics), "seconds": round(time.perf_counter() - started, 3)}


_PARENT_RUN: list[str | None] = [None]


def run_batch(args: argparse.Namespace) -> dict[str, Any]:
    inputs, output = args.inputs.resolve(), args.output.resolve()
    entries = read_manifest(inputs)
    family = load_family(args.entry)
    expected = _expected_errors(family)
    if callable(getattr(family, "config_from_params", None)):
        try:  # the same hyperparameters for every ticker: refuse them once, before any training
            family.config_from_params(list(args.param))
        except expected as exc:
            raise BatchError(str(exc)) from exc
    output.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    configure_tracking(output)
    results: dict[str, Any] = {}
    # The job's run (MLFLOW_RUN_ID, set by Azure ML and the local job runner) or a new one holds the batch;
    # each ticker's run is nested under it (the family's run nests when a run is active).
    with mlflow.start_run() as parent:
        _PARENT_RUN[0] = parent.info.run_id
        mlflow.set_tags({"batch_tickers": ",".join(e["ticker"] for e in entries)[:5000]})
        for i, entry in enumerate(entries, 1):
            results[entry["ticker"]] = outcome = train_one(family, entry, inputs, output, list(args.param))
            detail = outcome.get("error") or f"mae={outcome['metrics'].get('mae', float('nan')):.4f}"
            print(
                f"[{i}/{len(entries)}] {entry['ticker']}: {outcome['status']} ({detail})",
                file=sys.stderr,
                flush=True,
            )
        summary = {
            "tickers": results,
            "ok": sum(r["status"] == "ok" for r in results.values()),
            "failed": sum(r["status"] == "failed" for r in results.values()),
        }
        mlflow.log_metrics({"batch_ok": summary["ok"], "batch_failed": summary["failed"]})
        tmp = output / f"{SUMMARY}.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, output / SUMMARY)
        mlflow.log_artifact(str(output / SUMMARY))
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run_batch(args)
    except BatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"ok": summary["ok"], "failed": summary["failed"]}))
    if not summary["ok"]:
        print(f"error: no ticker of the batch trained; see {args.output / SUMMARY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
