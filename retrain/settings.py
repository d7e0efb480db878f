"""Typed settings, read from the environment (Azure app settings, or `local.settings.json` `Values`
that the local host and the CLI load into the environment, as `func start` does).

`SETTINGS` is the single list of every setting the code reads: `local.settings.sample.json` and the
Bicep app settings are checked against it by a test, so a new setting must be declared here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    description: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    # What to retrain and when.
    Setting(
        "RETRAIN_TICKERS",
        "MSFT",
        "Ticker symbols the weekly timer retrains (one fleet cycle over them) and the daily monitor watches (one orchestration a day): comma-separated (MSFT,AAPL), or @FILE naming a file of tickers, one per line, # comments (relative to the working directory).",
    ),
    Setting("RETRAIN_SCHEDULE", "0 0 1 * * Mon", "Six-field NCRONTAB (UTC) of the retraining timer."),
    Setting(
        "RETRAIN_SOURCE",
        "yfinance",
        "Market data source: yfinance, sample (bundled real data), csv:PATH (a relative PATH inside RETRAIN_DATA_DIR when that is set) or blob:CONTAINER/PATH; {ticker} in PATH becomes each ticker (csv:{ticker}.csv).",
    ),
    Setting(
        "RETRAIN_BLOB_ACCOUNT_URL",
        None,
        "Blob endpoint (https://ACCOUNT.blob.core.windows.net) a blob:CONTAINER/PATH source reads, with the app's identity.",
    ),
    Setting(
        "RETRAIN_YFINANCE_ATTEMPTS",
        "4",
        "Attempts of each yfinance download when Yahoo rate-limits or the network fails (1..20).",
    ),
    Setting(
        "RETRAIN_YFINANCE_BACKOFF_SECONDS",
        "2",
        "Wait before the second yfinance attempt; it doubles after each (at most 60 s a wait).",
    ),
    Setting(
        "RETRAIN_DATA_DIR",
        None,
        "Directory of CSV files a request may name as csv:NAME (relative to it); unset: requests name no CSV.",
    ),
    Setting("RETRAIN_LOOKBACK_DAYS", "1825", "Calendar days of history fetched for each training run."),
    Setting("RETRAIN_PLATFORM", "local", "ML platform adapter: local (embedded) or azureml."),
    Setting("RETRAIN_STATE_DIR", ".retrain", "Local platform and host state directory."),
    # Training.
    Setting(
        "RETRAIN_TRAINER",
        "lstm",
        "Trainer of each cycle: a trainer folder of the repository, by the name it is registered under in retrain/trainers.py (see docs/trainer-contract.md).",
    ),
    Setting("RETRAIN_MAX_EPOCHS", "30", "Maximum training epochs (early stopping usually ends sooner)."),
    Setting(
        "RETRAIN_JOB_POLL_MINUTES",
        "10",
        "Longest wait for the job-finished event between job status polls (the first poll comes after 15 s, then the interval doubles up to this).",
    ),
    Setting("RETRAIN_JOB_TIMEOUT_HOURS", "24", "Give up on a training job after this many hours."),
    Setting(
        "RETRAIN_TRAINING_BATCH",
        "50",
        "Tickers per training job of a fleet cycle: one job (and one sub-orchestration) trains a batch.",
    ),
    Setting(
        "RETRAIN_FLEET_PARALLEL_BATCHES",
        "4",
        "Batches of a fleet cycle in flight at once (sub-orchestrations, each with its training job).",
    ),
    Setting(
        "RETRAIN_LOCAL_BATCH_JOBS",
        "0",
        "Local platform: batch training jobs (fleet cycles) that train at once; the others wait Queued for a slot. 0: one per CPU core.",
    ),
    # Quality gate and rollout.
    Setting(
        "RETRAIN_GATE_BASELINE_MARGIN",
        "0.05",
        "Tolerated excess of the challenger's error over the naive forecast's (a fraction): the band of the gate's significance test (a fixed margin when the trainer writes no test_errors.json).",
    ),
    Setting(
        "RETRAIN_GATE_ALPHA",
        "0.05",
        "Significance level of the gate's Diebold-Mariano tests on the per-day test errors.",
    ),
    # The champion policy's default is chosen by the policy backtest (`bench/bench_policies.py`,
    # docs/backtest.md): on the bundled tickers, deploying every fresh model that is not significantly
    # worse (non-inferiority) served worse forecasts than keeping a champion until a challenger is
    # significantly better. This is the one place it is set.
    Setting(
        "RETRAIN_GATE_POLICY",
        "superiority",
        "How a challenger is compared with the champion: superiority (deploy only when significantly better) or non-inferiority (deploy unless significantly worse than the champion x (1 + RETRAIN_GATE_NONINFERIORITY_MARGIN)).",
    ),
    # 1 %: two models of similar skill differ by about that on a test window, so a fresh model that is
    # as good as the champion passes, while one clearly worse (the test can tell 5-10 %) does not.
    Setting(
        "RETRAIN_GATE_NONINFERIORITY_MARGIN",
        "0.01",
        "Non-inferiority policy: tolerated excess of the challenger's error over the champion's on the same days (a fraction, 0.01 = 1 % worse).",
    ),
    Setting(
        "RETRAIN_GATE_METRIC",
        "mae",
        "Challenger test metric the quality gate judges (written by the trainer to metrics.json).",
    ),
    Setting("RETRAIN_GATE_BASELINE_METRIC", "naive_mae", "Naive baseline's metric on the same test days."),
    Setting(
        "RETRAIN_GATE_CHAMPION_METRIC",
        "champion_mae",
        "Champion's metric on the same test days (written when a champion is given).",
    ),
    Setting(
        "RETRAIN_GATE_DIRECTION",
        "lower",
        "lower (errors such as mae) or higher (scores): which direction of the gate metric is better.",
    ),
    Setting("RETRAIN_CANARY_PERCENT", "10", "Traffic share the new slot gets before it takes 100%."),
    Setting(
        "RETRAIN_SMOKE_MAX_LATENCY_MS",
        "2000",
        "Smoke test fails when a scoring call takes longer than this (a rollout's batch of up to 50 tickers"
        " that does is judged again one request per ticker).",
    ),
    Setting(
        "RETRAIN_KEEP_OLD_SLOT",
        "false",
        "Keep the retired slot deployed at 0% (cold standby) instead of deleting it.",
    ),
    Setting(
        "RETRAIN_DEPLOY_TIMEOUT_MINUTES",
        "60",
        "Give up on a deployment that has not succeeded after this long.",
    ),
    Setting(
        "RETRAIN_ENDPOINTS",
        "shared",
        "Which endpoint serves which ticker: shared (one endpoint for all), per-ticker, or groups such as tech=MSFT,AAPL;energy=XOM.",
    ),
    Setting(
        "RETRAIN_ROLLOUT_POLL_MINUTES",
        "2",
        "A cycle waiting for its endpoint's rollout asks for one again this often (one finishing meanwhile missed it).",
    ),
    # Monitoring (thresholds calibrated on nulls with no change in them; see retrain/monitoring/calibration.py).
    Setting(
        "RETRAIN_MONITOR_SCHEDULE",
        "0 30 21 * * 1-5",
        "Six-field NCRONTAB (UTC) of the daily monitor, one orchestration over RETRAIN_TICKERS (default: weekdays after the US close).",
    ),
    Setting(
        "RETRAIN_MONITOR_DRIFT_THRESHOLD",
        "0.487",
        "KS distance on returns/|returns| (last 20 days vs the 250 up to the served model's data end) above which drift triggers a retrain.",
    ),
    Setting(
        "RETRAIN_MONITOR_CUSUM_THRESHOLD",
        "10.593",
        "CUSUM level on the served model's |error| - |naive error| above which a retrain is triggered.",
    ),
    Setting(
        "RETRAIN_MONITOR_COOLDOWN_DAYS",
        "20",
        "Trading days after a monitor-triggered retrain during which no other one is triggered.",
    ),
    Setting(
        "RETRAIN_MONITOR_SCORE_WAIT_S",
        "120",
        "Longest wait (seconds) of one monitored day for a scoring URL that answers 503/429 with Retry-After (slots starting); then the day has no forecast.",
    ),
    Setting(
        "RETRAIN_MONITOR_SIGNAL_TICKERS",
        None,
        'Azure ML model monitoring: JSON object from signal names to tickers, e.g. {"data-drift-signal": "MSFT"}; unset: a signal named <ticker>_<signal> (docs/azure.md) names its ticker.',
    ),
    # Host keys (generated and kept in the state dir when unset locally; Azure manages its own).
    Setting("RETRAIN_FUNCTION_KEY", None, "Function-level key for HTTP triggers (local host).", secret=True),
    Setting("RETRAIN_SYSTEM_KEY", None, "Master key of the local host: it opens every route.", secret=True),
    # Azure ML workspace (the azureml platform).
    Setting("AZURE_SUBSCRIPTION_ID", None, "Subscription of the Azure ML workspace."),
    Setting("AZURE_RESOURCE_GROUP", None, "Resource group of the Azure ML workspace."),
    Setting("AZUREML_WORKSPACE_NAME", None, "Azure ML workspace name."),
    Setting(
        "AZUREML_COMPUTE_NAME",
        "cpu-cluster",
        "AmlCompute cluster for training (created with min 0 nodes if missing).",
    ),
    Setting("AZUREML_COMPUTE_SIZE", "Standard_DS3_v2", "VM size of the training cluster."),
    Setting("AZUREML_COMPUTE_MAX_NODES", "2", "Maximum nodes of the training cluster."),
    Setting("AZUREML_ENDPOINT_INSTANCE_TYPE", "Standard_DS3_v2", "VM size of the online deployments."),
    Setting(
        "RETRAIN_ENDPOINT_SUFFIX",
        None,
        "Suffix of online endpoint names (unique per region); empty: derived from the workspace in Azure.",
    ),
    Setting(
        "AZURE_CLIENT_ID",
        None,
        "Client id of the user-assigned managed identity (DefaultAzureCredential reads it).",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def declared_defaults() -> dict[str, str]:
    """Every declared setting that has a default: what the local host falls back to for a `%NAME%`
    binding reference (in Azure the Bicep app settings provide each one)."""
    return {s.name: s.default for s in SETTINGS if s.default is not None}


class SettingsError(ValueError):
    pass


def get(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The raw value of a declared setting (its default when unset)."""
    if name not in _BY_NAME:
        raise KeyError(f"{name} is not a declared setting; add it to retrain.settings.SETTINGS")
    env = os.environ if environ is None else environ
    value = env.get(name)
    return value if value not in (None, "") else _BY_NAME[name].default


def get_int(name: str, environ: Mapping[str, str] | None = None) -> int:
    raw = get(name, environ)
    try:
        return int(str(raw))
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None


def get_float(name: str, environ: Mapping[str, str] | None = None) -> float:
    raw = get(name, environ)
    try:
        return float(str(raw))
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


def get_bool(name: str, environ: Mapping[str, str] | None = None) -> bool:
    raw = str(get(name, environ)).strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off", "none"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; use true or false")


def get_list(name: str, environ: Mapping[str, str] | None = None) -> list[str]:
    return [item.strip() for item in str(get(name, environ) or "").split(",") if item.strip()]


# A ticker file holds hundreds or thousands of tickers (at most 16 characters a line): 1 MB is far more.
MAX_TICKER_FILE_BYTES = 1024 * 1024
TICKERS_HELP = (
    "send comma-separated tickers (MSFT,AAPL,BRK.B) or @FILE: a file of tickers, one per line, "
    "# starting a comment, the path absolute or relative to the working directory"
)


def tickers(
    environ: Mapping[str, str] | None = None, *, cwd: str | os.PathLike[str] | None = None
) -> list[str]:
    """RETRAIN_TICKERS as canonical tickers (upper case), de-duplicated in their order (`parse_tickers`):
    what the timer retrains; its first is the default ticker of a request. A bad entry is a
    `SettingsError` naming it (its line in a file)."""
    return parse_tickers(str(get("RETRAIN_TICKERS", environ) or ""), what="RETRAIN_TICKERS", cwd=cwd)


def parse_tickers(
    value: str, *, what: str = "RETRAIN_TICKERS", cwd: str | os.PathLike[str] | None = None
) -> list[str]:
    """`A,B,C` or `@FILE` (one ticker per line, `#` starts a comment, blank lines ignored; a relative
    path is relative to `cwd`, default the working directory, like every operator path) as canonical,
    unique tickers in their order. `what` names the value in errors (the setting, or a CLI flag)."""
    from retrain import naming  # naming reads settings lazily: imported here, not at the top

    text = value.strip()
    if text.startswith("@"):
        name = text[1:].strip()
        if not name:
            raise SettingsError(f"{what}=@ names no file: {TICKERS_HELP}")
        shown, path = f"{what}=@{name}", Path(name).expanduser()
        if not path.is_absolute():
            path = Path(cwd if cwd is not None else os.getcwd()) / path
        try:
            if path.stat().st_size > MAX_TICKER_FILE_BYTES:
                raise SettingsError(
                    f"{shown}: the file has more than {MAX_TICKER_FILE_BYTES} bytes; send one ticker per line"
                )
            content = path.read_text(encoding="utf-8-sig")  # a BOM is not a ticker
        except FileNotFoundError:
            raise SettingsError(f"{shown}: no such file ({path}); {TICKERS_HELP}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(
                f"{shown}: the file cannot be read as UTF-8 text ({type(exc).__name__}); {TICKERS_HELP}"
            ) from None
        entries = [
            (f"{shown}: line {n}", line.split("#", 1)[0].strip())
            for n, line in enumerate(content.splitlines(), 1)
        ]
    else:
        shown = what
        entries = [(f"{what}: item {n}", item.strip()) for n, item in enumerate(text.split(","), 1)]
    found: dict[str, None] = {}  # ordered and de-duplicated
    for where, entry in entries:
        if not entry:
            continue
        try:
            ticker = naming.validate_ticker(entry)
        except naming.TickerError as exc:
            hint = " (one ticker per line)" if text.startswith("@") and ("," in entry or " " in entry) else ""
            raise SettingsError(f"{where}: {exc}{hint}") from None
        found.setdefault(ticker)
    if not found:
        raise SettingsError(f"{shown} names no ticker: {TICKERS_HELP}")
    return list(found)


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    return Path(str(get("RETRAIN_STATE_DIR", environ))).resolve()
