"""`retrain check-trainer <folder>`: does a trainer folder keep the trainer contract?

It assembles the job's code (the folder with the trainer kit, trainer_kit/, copied in: what Azure ML and
the local platform run) and runs the trainer from it, with no PYTHONPATH, on the bundled sample (MSFT) in a
temporary directory twice: once alone, then with a champion (`--champion-model`: the first run's model, or
one you pass, e.g. of another family). Then it checks every point of docs/trainer-contract.md:

- the entry script exists, runs with `--data/--output` (and `--param`s), exits 0, and rejects a
  hyperparameter it does not know with a non-zero exit;
- an MLflow model at `<output>/model` loads in a FRESH process without the trainer folder on sys.path,
  declares an integer `window` in its metadata and a signature of columns c0..c{window-1}, and answers
  one finite, plausible next close (column `forecast`) per input row;
- `<output>/metrics.json` holds the gate's metrics, finite (`mae`, `naive_mae`, and `champion_mae` with
  a champion), and every numeric metric is finite; the same metrics are in the MLflow run, with the
  artifacts `model/` and `test_errors.json`;
- `<output>/test_errors.json` has dates/actual/model/naive/champion of equal length, ISO dates ascending,
  and reproduces mae, naive_mae and champion_mae; with a champion, its forecasts are those the champion,
  loaded on its own in a fresh process, makes for those dates, and `actual` is each date's Close;
- the run records both fit ends (`fitted_data_end`, `evaluation_fit_end`: YYYY-MM-DD in run.json, the
  MLflow run's tags and the model's metadata, all the same); the evaluation model was fitted before the
  first test day, and the served model through the data end (the CSV's last date), or, with
  `--param refit=false`, the documented rule: the served model is the evaluation model;
- the batch entry: the kit's batch runner trains three tickers in one process (`python -I`), one with
  broken data failing alone with its reason.

Prints a checklist (what is wrong and how to fix it); exit status 0 only when every item passes.
The heavy work happens in subprocesses, so this module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

GATE_METRICS = ("mae", "naive_mae")
CHAMPION_METRIC = "champion_mae"
TEST_ERROR_KEYS = ("dates", "actual", "model", "naive", "champion")
PROBE_PARAM = "check_trainer_unknown_param"
TOLERANCE = 1e-6  # relative: metrics recomputed from test_errors.json must match metrics.json
FIT_END_KEYS = ("fitted_data_end", "evaluation_fit_end")  # retrain.vocabulary's TAG_* of the same names
FALSE_TEXT = ("false", "0", "no")


@dataclass
class Item:
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


@dataclass
class Report:
    folder: Path
    items: list[Item] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(i.ok for i in self.items)

    def add(self, name: str, ok: bool, detail: str = "", fix: str = "") -> bool:
        self.items.append(Item(name, bool(ok), detail, "" if ok else fix))
        return bool(ok)

    def failed(self) -> list[Item]:
        return [i for i in self.items if not i.ok]

    def print(self, out: TextIO) -> None:
        print(f"check-trainer {self.folder}", file=out)
        for item in self.items:
            print(
                f"  [{'PASS' if item.ok else 'FAIL'}] {item.name}"
                + (f": {item.detail}" if item.detail else ""),
                file=out,
            )
            if item.fix:
                print(f"         fix: {item.fix}", file=out)
        passed = sum(i.ok for i in self.items)
        verdict = "keeps the trainer contract" if self.ok else "does NOT keep the trainer contract"
        print(f"{passed}/{len(self.items)} checks passed: {self.folder.name} {verdict}", file=out)


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def sample_csv(dest: Path, ticker: str = "MSFT", lookback_days: int = 1500) -> Path:
    """The bundled sample as the data asset a job gets (Date, Open, High, Low, Close, Volume)."""
    from retrain.market_data import fetch_prices, write_snapshot

    return write_snapshot(
        fetch_prices(ticker, source="sample", lookback_days=lookback_days), ticker, dest
    ).path


def _trainer_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "PYTHONPATH"}
    env.update(
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
            "MLFLOW_EXPERIMENT_NAME": "check-trainer",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _run_trainer(
    script: Path,
    data: Path,
    output: Path,
    work: Path,
    params: Sequence[str],
    champion: Path | None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(script), "--data", str(data), "--output", str(output)]
    for param in params:
        command += ["--param", param]
    if champion is not None:
        command += ["--champion-model", str(champion)]
    # Output goes to files, not pipes, and the trainer runs in its own process group: a grandchild it leaves
    # behind (a data loader worker, a stray server) would hold pipes open until the timeout; here the check
    # goes on as soon as the trainer exits, and the group is stopped then.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            command, cwd=work, env=_trainer_env(work), stdout=out, stderr=err, start_new_session=True
        )
        try:
            returncode = proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            returncode, timed_out = -9, True
        finally:
            _stop_group(proc)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if timed_out:
        stderr = f"{stderr}\ntimed out after {timeout:.0f}s"
    return subprocess.CompletedProcess(command, returncode, stdout, stderr)


def _stop_group(proc: subprocess.Popen[Any]) -> None:
    """Kill the trainer's process group (itself if still running, and whatever it left behind)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


# Runs in a fresh interpreter (`python -I`: no PYTHONPATH, no script dir, cwd = the work dir): the model
# must load with only what it carries. Prints one JSON object.
_PROBE = r"""
import json, math, sys
from pathlib import Path
model_dir, folders, data_csv, run_id, tracking = sys.argv[1:6]
folders = [Path(f).resolve() for f in folders.split("\n")]
out = {"trainer_on_path": [p for p in sys.path if p and Path(p).resolve() in folders]}
try:
    import numpy as np, pandas as pd
    import mlflow, mlflow.pyfunc
    from mlflow.models import Model
    # The MLmodel file's metadata, read whether or not the model itself loads.
    declared = Model.load(model_dir).metadata or {}
    out["fit_ends"] = {k: declared.get(k) for k in ("fitted_data_end", "evaluation_fit_end")}
    model = mlflow.pyfunc.load_model(model_dir)
    out["loaded"] = True
    meta = model.metadata.metadata or {}
    out["window"] = meta.get("window")
    sig = model.metadata.get_input_schema()
    out["inputs"] = None if sig is None else [c.name for c in sig.inputs]
    out["from_trainer_folder"] = sorted(
        name for name, mod in list(sys.modules.items())
        if getattr(mod, "__file__", None)
        and any(Path(mod.__file__).resolve().is_relative_to(f) for f in folders)
    )
    window = meta.get("window")
    if isinstance(window, int) and not isinstance(window, bool) and window >= 1:
        closes = pd.read_csv(data_csv)["Close"].to_numpy(dtype="float64")
        rows = np.stack([closes[i - window:i] for i in range(len(closes) - 5, len(closes) + 1)])
        frame = pd.DataFrame(rows, columns=[f"c{i}" for i in range(window)])
        result = model.predict(frame)
        out["output_type"] = type(result).__name__
        if hasattr(result, "columns") and "forecast" in result.columns:
            values = [float(v) for v in result["forecast"].to_numpy()]
            out["forecast"] = [v if math.isfinite(v) else str(v) for v in values]
        out["rows"] = len(rows)
        out["last_close"] = [float(r[-1]) for r in rows]
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
if run_id:
    try:
        from mlflow.tracking import MlflowClient
        client = MlflowClient(tracking_uri=tracking)
        run = client.get_run(run_id)
        out["run_metrics"] = {k: v for k, v in run.data.metrics.items()}
        out["run_fit_ends"] = {k: run.data.tags.get(k) for k in ("fitted_data_end", "evaluation_fit_end")}
        out["run_artifacts"] = [a.path for a in client.list_artifacts(run_id)]
        out["run_model_files"] = [a.path for a in client.list_artifacts(run_id, "model")]
    except Exception as exc:
        out["run_error"] = f"{type(exc).__name__}: {exc}"
print("PROBE " + json.dumps(out))
"""


# The champion, loaded on its own in a fresh process, forecasts the dates the trainer reported: for each
# date, the `window` closes before it (its own window) from the data. Prints one JSON object.
_CHAMPION_PROBE = r"""
import json, sys
champion_dir, data_csv, dates_file = sys.argv[1:4]
out = {}
try:
    import numpy as np, pandas as pd
    import mlflow.pyfunc
    model = mlflow.pyfunc.load_model(champion_dir)
    window = int(model.metadata.metadata["window"])
    frame = pd.read_csv(data_csv)
    day = {d: i for i, d in enumerate(pd.to_datetime(frame["Date"]).dt.strftime("%Y-%m-%d"))}
    closes = frame["Close"].to_numpy(dtype="float64")
    dates = json.load(open(dates_file))
    unknown = [d for d in dates if d not in day]
    if unknown:
        raise ValueError(f"dates not in the data: {unknown[:3]}")
    rows = np.stack([closes[day[d] - window : day[d]] for d in dates])
    result = model.predict(pd.DataFrame(rows, columns=[f"c{i}" for i in range(window)]))
    out["forecast"] = [float(v) for v in result["forecast"].to_numpy()]
    out["actual"] = [float(closes[day[d]]) for d in dates]
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
print("PROBE " + json.dumps(out))
"""


def _probe_champion(
    champion: str, data: Path, dates: list[str], work: Path, timeout: float
) -> dict[str, Any]:
    dates_file = work / "champion-dates.json"
    dates_file.write_text(json.dumps(dates), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("MLFLOW_")}
    command = [sys.executable, "-I", "-c", _CHAMPION_PROBE, champion, str(data), str(dates_file)]
    try:
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"loading the champion timed out after {timeout:.0f}s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("PROBE "):
            return json.loads(line[len("PROBE ") :])
    return {"error": f"the champion probe exited {done.returncode}: {_tail(done.stderr)}"}


def _probe(
    model_dir: Path, folders: Sequence[Path], data: Path, run_id: str, work: Path, timeout: float
) -> dict[str, Any]:
    """The model in a fresh process; `folders` (the trainer folder, the job's code) must not serve it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("MLFLOW_")}
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    listed = "\n".join(str(f) for f in folders)
    command = [sys.executable, "-I", "-c", _PROBE, str(model_dir), listed, str(data), run_id]
    command.append(f"sqlite:///{work / 'mlflow.db'}")
    try:
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"loading the model timed out after {timeout:.0f}s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("PROBE "):
            return json.loads(line[len("PROBE ") :])
    return {"error": f"the probe process exited {done.returncode}: {_tail(done.stderr)}"}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=1e-9)


def _mean_abs(xs: Sequence[float], ys: Sequence[float]) -> float:
    return sum(abs(x - y) for x, y in zip(xs, ys, strict=True)) / len(xs)


def _read_json(path: Path) -> tuple[Any, str]:
    try:
        return json.loads(path.read_text(encoding="utf-8")), ""
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"{path.name} is not valid JSON ({exc})"


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")


def _check_outputs(report: Report, label: str, output: Path, with_champion: bool) -> tuple[dict, dict]:
    """metrics.json and test_errors.json of one run; returns both (empty when unusable)."""
    metrics, problem = _read_json(output / "metrics.json")
    required = (*GATE_METRICS, CHAMPION_METRIC) if with_champion else GATE_METRICS
    if not isinstance(metrics, dict):
        report.add(
            f"{label}: metrics.json",
            False,
            problem or "not a JSON object",
            f"write <output>/metrics.json as an object with {', '.join(required)} (numbers)",
        )
        metrics = {}
    else:
        bad = [k for k in required if not _finite(metrics.get(k))]
        report.add(
            f"{label}: metrics.json has the gate's metrics, finite",
            not bad,
            ", ".join(f"{k}={metrics.get(k)!r}" for k in required),
            f"write {', '.join(bad)} as finite numbers (computed on the test days"
            + (f"; {CHAMPION_METRIC} from --champion-model on the SAME days)" if with_champion else ")"),
        )
        numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        nonfinite = sorted(k for k, v in numeric.items() if not math.isfinite(v))
        report.add(
            f"{label}: every numeric metric is finite",
            not nonfinite,
            f"{len(numeric)} numeric" + (f"; not finite: {', '.join(nonfinite)}" if nonfinite else ""),
            "write null or leave out a metric that cannot be computed; never NaN or Infinity",
        )

    errors, problem = _read_json(output / "test_errors.json")
    fix_shape = (
        'write <output>/test_errors.json as {"dates": ["YYYY-MM-DD", ...], "actual": [...], "model": [...], '
        '"naive": [...], "champion": [...] or null}, one entry per test target day'
    )
    if not isinstance(errors, dict):
        report.add(f"{label}: test_errors.json", False, problem or "not a JSON object", fix_shape)
        return metrics, {}
    issues: list[str] = []
    missing = [k for k in TEST_ERROR_KEYS if k not in errors]
    if missing:
        issues.append(f"missing {', '.join(missing)}")
    series = {k: errors.get(k) for k in ("actual", "model", "naive")}
    dates = errors.get("dates")
    if not isinstance(dates, list) or not dates:
        issues.append("dates must be a non-empty list")
        dates = []
    elif not all(isinstance(d, str) and _DATE.match(d) for d in dates):
        issues.append("dates must be YYYY-MM-DD strings")
    elif dates != sorted(set(dates)):
        issues.append("dates must be unique and ascending")
    for key, values in series.items():
        if not isinstance(values, list) or len(values) != len(dates) or not all(_finite(v) for v in values):
            issues.append(f"{key} must be {len(dates)} finite numbers (one per date)")
    champion = errors.get("champion")
    if with_champion:
        if (
            not isinstance(champion, list)
            or len(champion) != len(dates)
            or not all(_finite(v) for v in champion)
        ):
            issues.append(f"champion must be {len(dates)} finite numbers when --champion-model is given")
    elif champion is not None:
        issues.append("champion must be null without --champion-model")
    report.add(
        f"{label}: test_errors.json has the contract's shape",
        not issues,
        "; ".join(issues) or f"{len(dates)} test days, {dates[0]} .. {dates[-1]}",
        fix_shape,
    )
    if issues or not metrics:
        return metrics, errors if not issues else {}
    checks = [("mae", "model"), ("naive_mae", "naive")] + (
        [(CHAMPION_METRIC, "champion")] if with_champion else []
    )
    wrong = []
    for metric, key in checks:
        recomputed = _mean_abs(errors[key], errors["actual"])
        if not _finite(metrics.get(metric)) or not _close(recomputed, float(metrics[metric])):
            wrong.append(f"{metric} {metrics.get(metric)!r} but mean |{key} - actual| = {recomputed:.6g}")
    report.add(
        f"{label}: test_errors.json reproduces metrics.json",
        not wrong,
        "; ".join(wrong) or ", ".join(m for m, _ in checks),
        "compute the metrics from the very forecasts written to test_errors.json (same days, same values)",
    )
    return metrics, errors


def _check_model(report: Report, probe: dict[str, Any], folder: Path) -> None:
    loaded = bool(probe.get("loaded"))
    report.add(
        "model loads in a fresh process without the trainer folder on sys.path",
        loaded and not probe.get("trainer_on_path") and not probe.get("from_trainer_folder"),
        probe.get("error", "")
        if not loaded
        else (
            f"imported from the trainer folder: {', '.join(probe['from_trainer_folder'])}"
            if probe.get("from_trainer_folder")
            else "mlflow.pyfunc.load_model in python -I"
        ),
        "save the model with mlflow.pyfunc.save_model(..., code_paths=[the modules it imports]) and its "
        "fitted state as artifacts, so the model directory carries everything it needs",
    )
    if not loaded:
        return
    window = probe.get("window")
    window_ok = isinstance(window, int) and not isinstance(window, bool) and window >= 1
    report.add(
        "metadata declares an integer window",
        window_ok,
        f"window={window!r}",
        'pass metadata={"window": <int>, ...} to save_model: the scorer reads it to cut the input',
    )
    if not window_ok:
        return
    assert isinstance(window, int)
    expected = [f"c{i}" for i in range(window)]
    inputs = probe.get("inputs")
    report.add(
        "signature: inputs c0..c{window-1} (oldest first)",
        inputs == expected,
        f"inputs {inputs if inputs is None or len(inputs) <= 4 else inputs[:2] + ['...'] + inputs[-1:]}",
        f"save a ModelSignature with double columns c0..c{window - 1} and an output column forecast",
    )
    forecast = probe.get("forecast")
    rows = int(probe.get("rows") or 0)
    last = probe.get("last_close") or []
    ok = (
        isinstance(forecast, list)
        and len(forecast) == rows
        and all(_finite(v) for v in forecast)
        and all(0.5 * c <= v <= 2.0 * c for v, c in zip(forecast, last, strict=False))
    )
    report.add(
        "predict: one finite next close per input row (column forecast)",
        ok,
        probe.get("error")
        or (
            f"{rows} rows -> {forecast[:3]}..."
            if isinstance(forecast, list)
            else f"returned {probe.get('output_type')} without a forecast column"
        ),
        "return a pandas DataFrame with one float column 'forecast': the next close (in price units) for "
        "each row of closes",
    )


def _check_mlflow_run(report: Report, probe: dict[str, Any], metrics: dict[str, Any], label: str) -> None:
    if "run_error" in probe or "run_metrics" not in probe:
        report.add(
            f"{label}: MLflow run",
            False,
            probe.get("run_error", "no run found (run.json missing?)"),
            "log to the active MLflow run (mlflow.start_run() honours MLFLOW_TRACKING_URI / MLFLOW_RUN_ID) and "
            "write <output>/run.json with its run_id",
        )
        return
    run_metrics = probe["run_metrics"]
    missing = [
        k
        for k in metrics
        if _finite(metrics.get(k)) and k in (*GATE_METRICS, CHAMPION_METRIC) and k not in run_metrics
    ]
    report.add(
        f"{label}: the gate's metrics are in the MLflow run",
        not missing,
        f"missing: {', '.join(missing)}"
        if missing
        else ", ".join(k for k in run_metrics if k in metrics)[:120],
        "mlflow.log_metrics({...}) with the same values as metrics.json",
    )
    artifacts = set(probe.get("run_artifacts") or [])
    model_files = {Path(p).name for p in probe.get("run_model_files") or []}
    need = [a for a in ("test_errors.json",) if a not in artifacts] + (
        [] if "MLmodel" in model_files else ["model/MLmodel"]
    )
    report.add(
        f"{label}: MLflow run artifacts model/ and test_errors.json",
        not need,
        f"missing: {', '.join(need)}" if need else "present",
        'mlflow.log_artifacts(<output>/model, artifact_path="model") and mlflow.log_artifact(<output>/test_errors.json)',
    )


def _last_date(data: Path) -> str:
    import csv

    with data.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return str(rows[-1]["Date"])[:10]


def _refit_param(params: Sequence[str]) -> bool:
    """Whether the run is expected to refit: true unless the last `refit=` param says false."""
    values = [p.partition("=")[2] for p in params if p.partition("=")[0] == "refit"]
    return not (values and values[-1].strip().lower() in FALSE_TEXT)


def _check_fit_ends(
    report: Report,
    run_record: dict[str, Any],
    probe: dict[str, Any],
    data_end: str,
    test_dates: list[str],
    refit: bool,
) -> None:
    """Both fit ends are recorded alike everywhere, and the served one is the data end (or the rule)."""
    recorded = {k: run_record.get(k) for k in FIT_END_KEYS}
    elsewhere = {"MLflow run tags": probe.get("run_fit_ends"), "model metadata": probe.get("fit_ends")}
    issues = [
        f"run.json {k}={v!r} is not YYYY-MM-DD"
        for k, v in recorded.items()
        if not (isinstance(v, str) and _DATE.match(v))
    ]
    issues += [
        f"{where} {found!r} differ from run.json" for where, found in elsewhere.items() if found != recorded
    ]
    report.add(
        "the run records both fit ends (fitted_data_end, evaluation_fit_end)",
        not issues,
        "; ".join(issues) or ", ".join(f"{k} {v}" for k, v in recorded.items()),
        "write fitted_data_end (the last target date the served model was fitted on) and evaluation_fit_end "
        "(the evaluation model's) as YYYY-MM-DD into run.json, the MLflow run's tags and the model's metadata",
    )
    if issues:
        return
    served, evaluation = str(recorded["fitted_data_end"]), str(recorded["evaluation_fit_end"])
    problems = []
    if test_dates and not evaluation < test_dates[0]:
        problems.append(f"evaluation_fit_end {evaluation} is not before the first test day {test_dates[0]}")
    if refit and served != data_end:
        problems.append(f"fitted_data_end {served}, but the data ends {data_end}")
    if not refit and served != evaluation:
        problems.append(f"refit=false, but fitted_data_end {served} is not evaluation_fit_end {evaluation}")
    report.add(
        "the served model was fitted through the data end"
        if refit
        else "refit=false: the served model is the evaluation model",
        not problems,
        "; ".join(problems)
        or (
            f"fitted_data_end {served} = data end"
            if refit
            else f"fitted_data_end = evaluation_fit_end {served}"
        ),
        "evaluate on the held-out test part, then refit the selected configuration on ALL the data and save "
        "that model (docs/trainer-contract.md); with --param refit=false serve the evaluation model itself",
    )


def check_trainer(
    folder: Path | str,
    *,
    params: Sequence[str] = (),
    entry_script: str = "train.py",
    work_dir: Path | None = None,
    timeout: float = 900.0,
    champion_model: str | None = None,
) -> Report:
    """Run the trainer in `folder` on the bundled sample and check the contract; see the module docstring."""
    folder = Path(folder).resolve()
    report = Report(folder)
    script = folder / entry_script
    inside = script.resolve().is_relative_to(folder)
    if not report.add(
        f"entry script {entry_script} inside the folder",
        inside,
        f"{script} resolves to {script.resolve()}" if not inside else str(script),
        f"name a script inside {folder.name}/ (a relative path such as train.py, not ../, an absolute path "
        "or a symlink out of the folder): the folder is the job's whole code",
    ):
        return report
    if not report.add(
        f"entry script {entry_script}",
        script.is_file(),
        str(script),
        f"put the trainer's entry script at {folder.name}/{entry_script} (it gets --data, --output, --param)",
    ):
        return report
    from retrain.trainers import HYPERPARAMETERS_FILE, TrainerError, read_declaration

    try:
        declared, problem = read_declaration(folder), ""
    except TrainerError as exc:
        declared, problem = {}, str(exc)
    if not report.add(
        f"declares its hyperparameters ({HYPERPARAMETERS_FILE})",
        bool(declared),
        problem or ", ".join(sorted(declared)),
        f"write {folder.name}/{HYPERPARAMETERS_FILE}: "
        '{"name": {"type": "int|float|bool", "min": ..., "max": ..., "default": ...}} for each '
        "hyperparameter (docs/trainer-contract.md); the edge refuses values outside it",
    ):
        return report
    from retrain.job_code import JobCodeError, assemble_job_code

    with tempfile.TemporaryDirectory(prefix="check-trainer-", dir=work_dir) as tmp:
        work = Path(tmp)
        # Every run below runs the job's code, as Azure ML and the local platform do: the folder with the
        # trainer kit copied in, nothing else importable (no PYTHONPATH; the repository is not on the path).
        try:
            code, problem = assemble_job_code(folder, work / "code"), ""
        except JobCodeError as exc:
            code, problem = None, str(exc)
        if not report.add(
            "the job's code is the folder plus trainer_kit/",
            code is not None,
            problem or "assembled",
            "leave trainer_kit/ out of the trainer folder: it is copied in at submit time",
        ):
            return report
        assert code is not None
        script = code / entry_script
        data = sample_csv(work / "data")
        first = work / "run1"
        done = _run_trainer(script, data, first, work, params, None, timeout)
        if not report.add(
            "trains on the sample: exit 0",
            done.returncode == 0,
            f"exit {done.returncode}" + (f": {_tail(done.stderr)}" if done.returncode else ""),
            "run it yourself: python <folder>/train.py --data <csv with Date,Close> --output <empty dir> "
            "(with the repository root on PYTHONPATH for the trainer kit)",
        ):
            return report
        model_dir = first / "model"
        if not report.add(
            "an MLflow model at <output>/model",
            (model_dir / "MLmodel").is_file(),
            str(model_dir),
            "save the pyfunc model with mlflow.pyfunc.save_model(path=<output>/model, ...)",
        ):
            return report
        run1, _ = _read_json(first / "run.json")
        run_id = str((run1 or {}).get("run_id") or "")
        probe = _probe(model_dir, [folder, code], data, run_id, work, timeout)
        _check_model(report, probe, folder)
        metrics1, errors1 = _check_outputs(report, "alone", first, with_champion=False)
        _check_mlflow_run(report, probe, metrics1, "alone")
        _check_fit_ends(
            report,
            run1 if isinstance(run1, dict) else {},
            probe,
            _last_date(data),
            list((errors1 or {}).get("dates") or []),
            _refit_param(params),
        )

        second = work / "run2"
        champion = champion_model or str(model_dir)  # another family's champion, or its own first model
        done = _run_trainer(script, data, second, work, params, Path(champion), timeout)
        if report.add(
            "trains with --champion-model: exit 0",
            done.returncode == 0,
            f"exit {done.returncode}" + (f": {_tail(done.stderr)}" if done.returncode else ""),
            "accept --champion-model <MLflow model dir or URI>, load it with mlflow.pyfunc.load_model and "
            "forecast the same test days with the last `window` closes of its metadata",
        ):
            _, errors2 = _check_outputs(report, "with champion", second, with_champion=True)
            if errors2:
                expected = _probe_champion(champion, data, errors2["dates"], work, timeout)
                forecasts = expected.get("forecast")
                same = (
                    isinstance(forecasts, list)
                    and len(forecasts) == len(errors2["champion"])
                    and all(_close(a, b) for a, b in zip(forecasts, errors2["champion"], strict=True))
                )
                actual_ok = isinstance(expected.get("actual"), list) and all(
                    _close(a, b) for a, b in zip(expected["actual"], errors2["actual"], strict=True)
                )
                if expected.get("error"):
                    detail = expected["error"]
                elif same and actual_ok:
                    detail = "the champion, loaded on its own, forecasts exactly these values for these dates"
                elif not same:
                    detail = "the champion's forecasts differ from what it forecasts for these dates"
                else:
                    detail = "actual is not the Close of each date"
                report.add(
                    "champion compared on the same test days",
                    same and actual_ok,
                    detail,
                    "give the champion, for each test target day, the closes of the `window` days before it "
                    "(its own window, from the full series); write its forecasts under champion and the day's "
                    "Close under actual",
                )
            if errors1 and errors2:
                report.add(
                    "the same test days with and without a champion",
                    errors1["dates"] == errors2["dates"],
                    f"{len(errors1['dates'])} days",
                    "the test days must not depend on --champion-model",
                )

        probe_done = _run_trainer(
            script, data, work / "run3", work, [*params, f"{PROBE_PARAM}=1"], None, timeout
        )
        report.add(
            "rejects a hyperparameter it does not know",
            probe_done.returncode != 0 and PROBE_PARAM in probe_done.stderr,
            f"--param {PROBE_PARAM}=1: exit {probe_done.returncode}"
            + (f", {_tail(probe_done.stderr, 1)}" if probe_done.returncode else ""),
            "exit non-zero with a message naming the unknown key and the ones accepted (a typo must not "
            "train silently with defaults)",
        )
        key, spec = next(iter(sorted(declared.items())))
        outside = (
            "maybe"
            if spec["type"] == "bool"
            else str(spec["max"] + (1 if spec["type"] == "int" else spec["max"]))
        )
        bound_done = _run_trainer(
            script, data, work / "run4", work, [*params, f"{key}={outside}"], None, timeout
        )
        report.add(
            "refuses a value outside its declared bounds",
            bound_done.returncode != 0 and key in bound_done.stderr,
            f"--param {key}={outside}: exit {bound_done.returncode}"
            + (f", {_tail(bound_done.stderr, 1)}" if bound_done.returncode else ""),
            f"parse each hyperparameter within the type and bounds {HYPERPARAMETERS_FILE} declares and exit "
            "non-zero naming the key (the trainer enforces its own contract, not only the edge)",
        )
        _check_batch(
            report,
            code,
            entry_script,
            params,
            data,
            list((errors1 or {}).get("dates") or []),
            work,
            timeout,
        )
    return report


BATCH_GOOD, BATCH_BROKEN = ("CHECKA", "CHECKB"), "BROKEN"


def _batch_inputs(inputs: Path, data: Path) -> None:
    """The batch the check trains: the sample twice (the second a shorter history) and, between them, a
    ticker whose data is broken (no number in Close): it must fail alone."""
    inputs.mkdir(parents=True)
    (inputs / f"{BATCH_GOOD[0]}.csv").write_bytes(data.read_bytes())
    (inputs / f"{BATCH_GOOD[1]}.csv").write_bytes(
        sample_csv(inputs.parent / "short", lookback_days=1000).read_bytes()
    )
    rows = data.read_text(encoding="utf-8").splitlines()
    header = rows[0].split(",")
    close = header.index("Close")
    broken = [rows[0]] + [
        ",".join("n/a" if i == close else v for i, v in enumerate(r.split(","))) for r in rows[1:]
    ]
    (inputs / f"{BATCH_BROKEN}.csv").write_text("\n".join(broken) + "\n", encoding="utf-8")
    order = [BATCH_GOOD[0], BATCH_BROKEN, BATCH_GOOD[1]]
    manifest = {"tickers": [{"ticker": t, "data": f"{t}.csv"} for t in order]}
    (inputs / "batch.json").write_text(json.dumps(manifest), encoding="utf-8")


def _check_batch(
    report: Report,
    code: Path,
    entry_script: str,
    params: Sequence[str],
    data: Path,
    single_dates: list[str],
    work: Path,
    timeout: float,
) -> None:
    """The batch entry: the job's code (the folder with the trainer kit copied in) runs the kit's batch
    runner on its own (`python -I`, no PYTHONPATH) over three tickers, one of them with broken data."""
    from retrain.job_code import BATCH_RUNNER

    inputs, output = work / "batch" / "inputs", work / "batch" / "outputs"
    _batch_inputs(inputs, data)
    command = [
        sys.executable,
        "-I",
        str(code / BATCH_RUNNER),
        "--inputs",
        str(inputs),
        "--output",
        str(output),
    ]
    command += ["--entry", entry_script]
    for param in params:
        command += ["--param", param]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            command, cwd=work, env=_trainer_env(work), stdout=out, stderr=err, start_new_session=True
        )
        try:
            returncode = proc.wait(timeout=timeout * 3)
        except subprocess.TimeoutExpired:
            returncode = -9
        finally:
            _stop_group(proc)
        err.seek(0)
        stderr = err.read()
    if not report.add(
        "batch: the batch runner trains 3 tickers in one process",
        returncode == 0,
        f"exit {returncode}" + (f": {_tail(stderr)}" if returncode else ""),
        "the batch runner calls the family's run(parse_args([...])) per ticker: keep run(args) and "
        "parse_args(argv) in the entry script (docs/trainer-contract.md, Batches)",
    ):
        return
    summary, problem = _read_json(output / "batch_summary.json")
    results = summary.get("tickers", {}) if isinstance(summary, dict) else {}
    problems = [problem] if problem else []
    for ticker in BATCH_GOOD:
        outcome, out_dir = results.get(ticker) or {}, output / ticker
        metrics, _ = _read_json(out_dir / "metrics.json")
        errors, _ = _read_json(out_dir / "test_errors.json")
        run_json, _ = _read_json(out_dir / "run.json")
        if outcome.get("status") != "ok":
            problems.append(f"{ticker}: {outcome or 'not in the summary'}")
        elif not (out_dir / "model" / "MLmodel").is_file():
            problems.append(f"{ticker}: no model/ in {out_dir}")
        elif not isinstance(metrics, dict) or not all(_finite(metrics.get(k)) for k in GATE_METRICS):
            problems.append(f"{ticker}: metrics.json lacks finite {', '.join(GATE_METRICS)}")
        elif not isinstance(errors, dict) or not errors.get("dates"):
            problems.append(f"{ticker}: no test_errors.json with dates")
        elif not isinstance(run_json, dict) or not all(run_json.get(k) for k in ("run_id", *FIT_END_KEYS)):
            problems.append(f"{ticker}: run.json lacks run_id or the fit ends")
    first_errors, _ = _read_json(output / BATCH_GOOD[0] / "test_errors.json")
    if not problems and single_dates and (first_errors or {}).get("dates") != single_dates:
        problems.append(
            f"{BATCH_GOOD[0]}: its test days differ from the single-ticker run's on the same data"
        )
    report.add(
        "batch: each good ticker's outputs (model/, metrics.json, test_errors.json, run.json)",
        not problems,
        "; ".join(problems) or f"{', '.join(BATCH_GOOD)} under <output>/<ticker>/, as the single-ticker run",
        "run(args) must write the single-ticker outputs into args.output (the runner stages and renames it)",
    )
    broken = results.get(BATCH_BROKEN) or {}
    failed_alone = (
        broken.get("status") == "failed"
        and bool(str(broken.get("error") or "").strip())
        and not (output / BATCH_BROKEN).exists()
        and (results.get(BATCH_GOOD[1]) or {}).get("status") == "ok"
    )
    report.add(
        "batch: a ticker with broken data fails alone, with its reason",
        failed_alone,
        f"{BATCH_BROKEN}: {broken.get('error') or broken or 'not in the summary'}",
        "raise an error naming the problem (the family's TrainerError) for bad data; the runner records it "
        "and goes on with the next ticker",
    )


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="retrain check-trainer", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv), out)


def add_arguments(parser: Any) -> None:
    parser.add_argument("folder", help="the trainer folder (e.g. trainer or trainers/ridge)")
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="passed to the trainer"
    )
    parser.add_argument("--entry-script", default="train.py", help="the entry script in the folder")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per trainer run")
    parser.add_argument(
        "--champion-model",
        help="an MLflow model dir to use as the champion (e.g. another family's; default: the trainer's own "
        "first model)",
    )


def run(args: Any, out: TextIO | None = None) -> int:
    report = check_trainer(
        args.folder,
        params=args.param,
        entry_script=args.entry_script,
        timeout=args.timeout,
        champion_model=str(Path(args.champion_model).resolve()) if args.champion_model else None,
    )
    report.print(out or sys.stdout)
    return 0 if report.ok else 1
