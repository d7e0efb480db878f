"""Scoring script of the online deployment (Azure ML online-endpoint contract, run by `azmlinfsrv`).

Self-contained: this folder is uploaded as the deployment's code configuration, so it imports nothing
from `retrain` or `trainer`.

- `init()` loads the MLflow pyfunc model from `AZUREML_MODEL_DIR`: either the model folder itself or
  Azure's `<name>/<version>/` nesting with the model folder somewhere below. It checks the model's
  signature once (the columns c0..c{window-1}, doubles, that every request becomes) and picks the
  model's own numpy path when its python model offers one (`forecast_from_closes(ndarray) -> ndarray`,
  checked once against `predict` on a probe); any other MLflow model is scored through
  `predict(DataFrame)`. The artefact stays a standard MLflow model either way.
- `run(request)` reads the raw HTTP request (`@rawhttp`), so it can refuse huge or non-JSON bodies
  itself: every bad input answers 400 with a message saying what to send; only an unexpected internal
  error answers 500 (logged, generic message), and the worker always survives.

Request:  {"close": [floats]} (at least `window` closes, oldest first, newest last; the last `window`
          are used) or {"instances": [[floats], ...]} (each at least `window` long).
Response: {"forecast": [floats], "model": {"name": str, "version": str, "window": int}}

A bundle (docs/bundles.md: `bundle.json` + one MLflow model folder per ticker) serves many tickers from
one process: `init()` loads every ticker's model (the same loader, signature check and numpy path per
model; windows may differ per ticker) and `run()` answers
  {"ticker": "MSFT", "close": [...]}  -> {"ticker", "forecast", "model", "bundle"}
  {"instances": [{"ticker", "close"}, ...]} -> {"predictions": [one per instance, in order], "bundle"},
      a bad instance answering {"ticker", "error", "status": 400|404} in its place;
  GET /score -> the served tickers (model, family, fitted-data end, window) and the bundle identity.
A bundle of one also takes the single-model requests above (no ticker).
"""

import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from werkzeug.exceptions import ClientDisconnected  # flask's, which the inference server runs on

try:  # azureml-inference-server-http >= 0.8 (the package the deployment image runs)
    from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
    from azureml_inference_server_http.api.aml_response import AMLResponse
except ImportError:  # pragma: no cover - older images that ship the azureml-defaults shim
    from azureml.contrib.services.aml_request import AMLRequest, rawhttp
    from azureml.contrib.services.aml_response import AMLResponse

# A child of the server's logger, so our lines go where the server's go.
logger = logging.getLogger("azmlinfsrv.score")

MAX_BODY_BYTES = 1 << 20  # 1 MiB: 1000 instances of a few dozen closes fit with room to spare
MAX_INSTANCES = 1000
# Past the cap we still read (and discard) this much, so the client gets our 400 rather than a reset
# connection; a body larger than this is cut off.
_DRAIN_LIMIT_BYTES = 64 << 20
_READ_CHUNK = 64 << 10
_MLMODEL_SEARCH_DEPTH = 3
_VERSION_DIR = re.compile(r"^\d+\Z")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}\Z")
_UNKNOWN = "unknown"
# The fast path must give the answers predict() gives; checked once at init() on a probe.
_FAST_PATH_RTOL = 1e-9


class ScoringInputError(ValueError):
    """The request is not something we can score; the message says what to send instead."""


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: str


# (n, window) float64 closes -> (n,) forecasts: the model's own numpy path.
NumpyForecast = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LoadedModel:
    pyfunc: Any
    identity: ModelIdentity
    window: int
    path: Path
    # None: score through pyfunc.predict(DataFrame) (any MLflow model).
    fast_forecast: NumpyForecast | None = None


_model: LoadedModel | None = None
_bundle: "LoadedBundle | None" = None  # set instead of _model when AZUREML_MODEL_DIR holds a bundle


# ---------------------------------------------------------------------------------------------------
# Locating the model (pure path logic, no MLflow)


def find_mlflow_model_dir(root: Path, max_depth: int = _MLMODEL_SEARCH_DEPTH) -> Path:
    """The folder holding `MLmodel`: `root` itself or the shallowest one below it (at most `max_depth`
    levels down). Among several at the same depth the first in sorted path order wins, so the choice
    never depends on the file system's listing order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"AZUREML_MODEL_DIR {str(root)!r} is not a directory")
    level = [root]
    for depth in range(max_depth + 1):
        found = sorted(d for d in level if (d / "MLmodel").is_file())
        if found:
            if len(found) > 1:
                logger.warning(
                    "Several MLflow models under %s; using %s (first in sorted order)", root, found[0]
                )
            return found[0]
        if depth == max_depth:
            break
        level = sorted(child for d in level for child in _subdirs(d))
    raise FileNotFoundError(
        f"No MLflow model (a folder with an MLmodel file) in {str(root)!r} or up to {max_depth} levels below it"
    )


def _subdirs(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:  # unreadable folder: nothing to find there
        return []


def model_identity(model_dir: Path, environ: Mapping[str, str] | None = None) -> ModelIdentity:
    """Name and version from Azure's `<name>/<version>/` nesting of `AZUREML_MODEL_DIR`, else from
    `RETRAIN_MODEL_NAME` / `RETRAIN_MODEL_VERSION`, else "unknown"."""
    env = os.environ if environ is None else environ
    model_dir = Path(model_dir)
    version, name = model_dir.name, model_dir.parent.name
    if _VERSION_DIR.match(version) and _MODEL_NAME.match(name):
        return ModelIdentity(name=name, version=version)
    return ModelIdentity(
        name=env.get("RETRAIN_MODEL_NAME") or _UNKNOWN,
        version=env.get("RETRAIN_MODEL_VERSION") or _UNKNOWN,
    )


def window_from_metadata(metadata: dict[str, Any] | None) -> int:
    """The model's input window from its MLmodel `metadata` (the trainer's contract)."""
    window = (metadata or {}).get("window")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"MLmodel metadata must hold a positive integer 'window', got {window!r}")
    return window


def input_columns(window: int) -> list[str]:
    return [f"c{i}" for i in range(window)]


def check_signature(signature: Any, window: int) -> None:
    """Once at init(): the model's declared input must be what every request becomes (columns
    c0..c{window-1}, doubles), so skipping MLflow's per-call schema enforcement loses nothing.
    A model without an input signature is accepted (MLflow enforces nothing for it either)."""
    inputs = getattr(signature, "inputs", None)
    if inputs is None:
        return
    expected = input_columns(window)
    if inputs.is_tensor_spec():
        raise ValueError(
            f"the model's signature takes tensors; this scorer sends a table with the double columns "
            f"{expected[0]}..{expected[-1]} (the closes, oldest first): save the model with that signature"
        )
    names = inputs.input_names()
    if names != expected:
        shown = ", ".join(map(str, names[:6])) + (", ..." if len(names) > 6 else "")
        raise ValueError(
            f"the model's signature takes the columns [{shown}]; this scorer sends {expected[0]}..{expected[-1]}"
            f" (window {window} from the MLmodel metadata): save the model with that signature"
        )
    not_double = [spec.name for spec in inputs.inputs if getattr(spec.type, "name", None) != "double"]
    if not_double:
        raise ValueError(
            f"the model's signature declares {', '.join(not_double[:6])} as non-double; every close is sent "
            "as a double: save the model with double columns"
        )


def find_fast_forecast(pyfunc: Any, window: int) -> NumpyForecast | None:
    """The python model's own numpy path, `forecast_from_closes(ndarray) -> ndarray`, when it has one
    and it answers exactly as `predict` does on a probe; None otherwise (score through predict)."""
    try:
        python_model = pyfunc.unwrap_python_model()
    except Exception:  # not a python_model flavour (sklearn, onnx, ...): no custom methods to use
        return None
    fast = getattr(python_model, "forecast_from_closes", None)
    if not callable(fast):
        return None
    # Two gentle, different histories (a rise and a fall): any real model answers them.
    steps = np.arange(window, dtype=np.float64)
    probe = np.stack([100.0 * 1.001**steps, 100.0 * 0.999**steps])
    try:
        expected = _forecast_column(pyfunc.predict(_frame(probe, window)), len(probe))
        got = np.asarray(fast(probe), dtype=np.float64).reshape(-1)
    except Exception:
        logger.warning(
            "forecast_from_closes failed on the init probe; scoring through predict()", exc_info=True
        )
        return None
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=_FAST_PATH_RTOL, atol=0.0):
        logger.warning(
            "forecast_from_closes answers %s where predict answers %s on the init probe; scoring through predict()",
            got.tolist(),
            expected.tolist(),
        )
        return None
    return fast


def _frame(closes: np.ndarray, window: int) -> Any:
    import pandas as pd

    return pd.DataFrame(closes, columns=input_columns(window), dtype="float64")


def _forecast_column(result: Any, n_rows: int) -> np.ndarray:
    """predict()'s answer as a flat float array: a DataFrame's `forecast` column, or an array/Series."""
    if hasattr(result, "columns"):
        result = result["forecast"]
    forecast = np.asarray(result, dtype=np.float64).reshape(-1)
    if forecast.shape != (n_rows,):
        raise RuntimeError(f"model returned {forecast.size} forecasts for {n_rows} rows")
    return forecast


# ---------------------------------------------------------------------------------------------------
# Validating the request (pure, unit-tested in-process)


def expected_input(window: int) -> str:
    return (
        f'Send a JSON object, either {{"close": [at least {window} positive numbers, oldest first, newest last]}}'
        f' or {{"instances": [[at least {window} positive numbers], ...]}} with at most {MAX_INSTANCES} instances,'
        f" in a body of at most {MAX_BODY_BYTES} bytes."
    )


def _reject_constant(name: str) -> float:
    raise ScoringInputError(f"{name} is not allowed; every close must be a finite positive number")


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ScoringInputError(f"duplicate key {key!r} in the JSON object; send each key once")
        obj[key] = value
    return obj


def parse_body(body: bytes, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """Raw request bytes -> the decoded JSON value. Rejects empty, oversized, non-UTF-8 and non-JSON
    bodies, NaN/Infinity literals and duplicate keys."""
    if len(body) > max_bytes:
        raise ScoringInputError(f"request body is larger than {max_bytes} bytes")
    if not body.strip():
        raise ScoringInputError("request body is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScoringInputError(
            f"request body is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ScoringInputError(
            f"request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise ScoringInputError("request body is nested too deeply") from None


def _close_series(value: Any, where: str, window: int) -> list[float]:
    """One series of closes, checked: a list of at least `window` finite positive numbers. Returns
    its last `window` values."""
    if not isinstance(value, list):
        raise ScoringInputError(f"{where} must be a list of numbers, got {_json_type(value)}")
    if len(value) < window:
        raise ScoringInputError(f"{where} has {len(value)} values; the model needs at least {window}")
    for i, x in enumerate(value):
        # bool is an int in Python but true/false is not a price.
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise ScoringInputError(
                f"{where}[{i}] is {_json_type(x)} {_short(x)}; every close must be a number"
            )
        try:
            as_float = float(x)
        except OverflowError:
            raise ScoringInputError(f"{where}[{i}] is too large to be a price") from None
        if not math.isfinite(as_float):
            raise ScoringInputError(
                f"{where}[{i}] is not finite; every close must be a finite positive number"
            )
        if as_float <= 0.0:
            raise ScoringInputError(f"{where}[{i}] is {x}; every close must be a positive price")
    return [float(x) for x in value[-window:]]


def validate_payload(payload: Any, window: int, max_instances: int = MAX_INSTANCES) -> list[list[float]]:
    """The decoded request -> one row of `window` closes (oldest first) per instance."""
    if not isinstance(payload, dict):
        raise ScoringInputError(f"the JSON body must be an object, got {_json_type(payload)}")
    keys = set(payload)
    if keys == {"close"}:
        return [_close_series(payload["close"], '"close"', window)]
    if keys == {"instances"}:
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise ScoringInputError(
                f'"instances" must be a list of lists of numbers, got {_json_type(instances)}'
            )
        if not instances:
            raise ScoringInputError('"instances" is empty; send at least one list of closes')
        if len(instances) > max_instances:
            raise ScoringInputError(
                f'"instances" has {len(instances)} entries; at most {max_instances} per request'
            )
        return [_close_series(row, f'"instances"[{i}]', window) for i, row in enumerate(instances)]
    if {"close", "instances"} <= keys:
        raise ScoringInputError('send either "close" or "instances", not both')
    unexpected = sorted(keys - {"close", "instances"})
    if unexpected:
        raise ScoringInputError(f"unexpected key(s) {', '.join(map(repr, unexpected))}")
    raise ScoringInputError("the JSON object is empty")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------
# The inference server's entry points


def load(model_root: str | Path, environ: Mapping[str, str] | None = None) -> LoadedModel:
    """Find, load and describe the MLflow model under `model_root`."""
    root = Path(model_root)
    return load_model_dir(find_mlflow_model_dir(root), model_identity(root, environ))


def load_model_dir(mlflow_dir: Path, identity: ModelIdentity, check_requirements: bool = True) -> LoadedModel:
    """Load the MLflow model in `mlflow_dir`, check its signature once and pick its numpy path.
    `check_requirements=False` skips MLflow's comparison of the model's pinned requirements with this
    environment (warnings only) and lets `load_pyfunc` take its fast path (a bundle's later models)."""
    pyfunc = load_pyfunc(Path(mlflow_dir), check_requirements=check_requirements)
    window = window_from_metadata(pyfunc.metadata.metadata)
    check_signature(pyfunc.metadata.signature, window)
    return LoadedModel(
        pyfunc=pyfunc,
        identity=identity,
        window=window,
        path=Path(mlflow_dir),
        fast_forecast=find_fast_forecast(pyfunc, window),
    )


# ---------------------------------------------------------------------------------------------------
# Loading a bundle's models fast. mlflow.pyfunc.load_model parses a model's MLmodel YAML three times with
# pure-Python PyYAML and also reads its input example: most of a small model's load, which a 200-ticker
# slot pays 200 times on every rollout. For the flavour our trainers save (a pickled
# PythonModel, `loader_module: mlflow.pyfunc.model`) the steps below are the ones load_model takes, with
# the MLmodel parsed once (libyaml when PyYAML has it). Anything else goes through load_model itself.

# The python_function keys whose meaning the fast path reproduces (MLflow 3.15's PythonModel saved by
# pickle). A key outside this set (models from code, model_config, a data path, compression, a key a later
# MLflow adds) sends the model through mlflow.pyfunc.load_model, which knows what it means.
_FAST_PYFUNC_KEYS = frozenset(
    {
        "loader_module",
        "python_model",
        "cloudpickle_version",
        "code",
        "env",
        "python_version",
        "streamable",
        "predict_fn",
        "predict_stream_fn",
        "artifacts",
    }
)
_FAST_LOADER_MODULE = "mlflow.pyfunc.model"
_warned_cloudpickle: set[str | None] = set()


def load_pyfunc(mlflow_dir: Path, check_requirements: bool = True) -> Any:
    """The `mlflow.pyfunc.PyFuncModel` in the local folder `mlflow_dir`: what
    `mlflow.pyfunc.load_model(mlflow_dir, suppress_warnings=not check_requirements)` returns.

    With `check_requirements=False` a pickled PythonModel is loaded by `load_python_model_fast` (the same
    steps, the MLmodel parsed once); any other model, and every model when requirements are checked (the
    first of a family, a single model), goes through `mlflow.pyfunc.load_model` unchanged."""
    if not check_requirements:
        model = load_python_model_fast(mlflow_dir)
        if model is not None:
            return model
    import mlflow.pyfunc  # heavy; only the serving process needs it

    return mlflow.pyfunc.load_model(str(mlflow_dir), suppress_warnings=not check_requirements)


def load_python_model_fast(mlflow_dir: Path) -> Any | None:
    """A pickled PythonModel's PyFuncModel as `mlflow.pyfunc.load_model(..., suppress_warnings=True)`
    builds it: the code folder prepended to sys.path, the python model unpickled with cloudpickle, its
    `load_context` run with the artifacts' local paths, wrapped as MLflow wraps it. None when the model is
    not one this reproduces (another flavour or loader, an unknown key, an external model, pickles
    disallowed, a model config from the environment, an MLmodel that does not parse): the caller then uses
    load_model, so such a model loads, or fails, in MLflow's own words. Not done, as the scorer needs none
    of it: reading the input example (`input_example` stays None), Databricks lineage, suppressing traces.
    An error while unpickling or in `load_context` is raised as load_model would raise it."""
    try:
        import cloudpickle
        import yaml
        from mlflow.environment_variables import MLFLOW_ALLOW_PICKLE_DESERIALIZATION
        from mlflow.models import Model
        from mlflow.pyfunc import PyFuncModel, PythonModelContext
        from mlflow.pyfunc.model import _PythonModelPyfuncWrapper  # how load_model wraps a PythonModel
    except ImportError:  # another MLflow layout: its own loader is right by definition
        return None
    if os.environ.get("MLFLOW_PYFUNC_INFERENCE_CONFIG") or not MLFLOW_ALLOW_PICKLE_DESERIALIZATION.get():
        return None
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the same safe constructors, in C
        document = yaml.load((mlflow_dir / "MLmodel").read_bytes(), Loader=loader)
        meta = Model.from_dict(document)
    except Exception:  # load_model says what is wrong with it
        return None
    conf = meta.flavors.get("python_function") if isinstance(meta.flavors, dict) else None
    if (
        not isinstance(conf, dict)
        or conf.get("loader_module") != _FAST_LOADER_MODULE
        or not set(conf) <= _FAST_PYFUNC_KEYS
        or not isinstance(conf.get("python_model"), str)
        or (meta.metadata or {}).get("mlflow.model.isExternal") is True
    ):
        return None
    saved_with = conf.get("cloudpickle_version")
    if saved_with != cloudpickle.__version__ and saved_with not in _warned_cloudpickle:
        # load_model warns on every model; once per saved version says the same for a bundle.
        _warned_cloudpickle.add(saved_with)
        logger.warning(
            "Models saved with CloudPickle %s load under CloudPickle %s, which may be incompatible",
            saved_with or "(version not recorded in MLmodel)",
            cloudpickle.__version__,
        )
    local = str(mlflow_dir)
    if conf.get("code"):
        sys.path = [os.path.join(local, conf["code"]), *sys.path]  # as load_model does
    with open(os.path.join(local, conf["python_model"]), "rb") as fh:
        python_model = cloudpickle.load(fh)
    artifacts = {
        name: os.path.join(local, info["path"]) for name, info in (conf.get("artifacts") or {}).items()
    }
    context = PythonModelContext(artifacts=artifacts, model_config=None)
    python_model.load_context(context=context)
    streamable = conf.get("streamable", False)
    return PyFuncModel(
        model_meta=meta,
        model_impl=_PythonModelPyfuncWrapper(
            python_model=python_model, context=context, signature=meta.signature
        ),
        predict_fn=conf.get("predict_fn", "predict"),
        predict_stream_fn=conf.get("predict_stream_fn", "predict_stream") if streamable else None,
        model_id=meta.model_id,
    )


def init() -> None:
    global _model
    model_root = os.environ.get("AZUREML_MODEL_DIR")
    if not model_root:
        raise RuntimeError("AZUREML_MODEL_DIR is not set; start the server with --model_dir <model folder>")
    manifest = find_bundle_manifest(Path(model_root)) if Path(model_root).is_dir() else None
    if manifest is not None:
        global _bundle
        _bundle = load_bundle(manifest)
        logger.info(
            "Loaded bundle %s version %s (%d tickers) from %s",
            _bundle.identity.name,
            _bundle.identity.version,
            len(_bundle.tickers),
            _bundle.path,
        )
        return
    _model = load(model_root)
    logger.info(
        "Loaded model %s version %s (window %d) from %s; scoring through %s",
        _model.identity.name,
        _model.identity.version,
        _model.window,
        _model.path,
        "its forecast_from_closes (numpy)" if _model.fast_forecast else "predict(DataFrame)",
    )


def predict(model: LoadedModel, rows: list[list[float]]) -> list[float]:
    """Forecast one next close per row: through the model's numpy path when it has one, else with the
    pyfunc contract (a DataFrame with the columns c0..c{window-1})."""
    closes = np.asarray(rows, dtype=np.float64)
    if model.fast_forecast is not None:
        forecast = np.asarray(model.fast_forecast(closes), dtype=np.float64).reshape(-1)
    else:
        forecast = _forecast_column(model.pyfunc.predict(_frame(closes, model.window)), len(rows))
    if forecast.shape != (len(rows),) or not np.isfinite(forecast).all():
        raise RuntimeError(
            f"model returned {forecast.size} forecasts (non-finite among them?) for {len(rows)} rows"
        )
    return forecast.tolist()


def _read_body(request: AMLRequest, max_bytes: int) -> bytes:
    """Up to `max_bytes + 1` bytes of the body, without ever holding more than that in memory."""
    if request.content_length is not None and request.content_length > max_bytes:
        _drain(request.stream)
        raise ScoringInputError(
            f"request body is {request.content_length} bytes; at most {max_bytes} allowed"
        )
    chunks, size = [], 0
    try:
        while size <= max_bytes:
            chunk = request.stream.read(min(_READ_CHUNK, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except ClientDisconnected:
        raise ScoringInputError(
            "request body ended before the length its Content-Length header announced"
        ) from None
    if size > max_bytes:
        _drain(request.stream)
        raise ScoringInputError(f"request body is larger than {max_bytes} bytes")
    return b"".join(chunks)


def _drain(stream: Any) -> None:
    drained = 0
    try:
        while drained < _DRAIN_LIMIT_BYTES:
            chunk = stream.read(_READ_CHUNK)
            if not chunk:
                return
            drained += len(chunk)
    except ClientDisconnected:  # the client gave up sending: nothing left to drain
        return


def _json_response(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> AMLResponse:
    return AMLResponse(body, status, headers or {}, json_str=True)


def score_body(model: LoadedModel, body: bytes) -> dict[str, Any]:
    """Bytes in, response document out (raises ScoringInputError for bad input)."""
    rows = validate_payload(parse_body(body), model.window)
    return {
        "forecast": predict(model, rows),
        "model": {"name": model.identity.name, "version": model.identity.version, "window": model.window},
    }


@rawhttp
def run(request: AMLRequest) -> dict[str, Any] | AMLResponse:
    if _bundle is not None:
        return run_bundle(_bundle, request)
    model = _model
    window = model.window if model else 1
    if request.method != "POST":
        return _json_response(
            {"message": f"Use POST /score. {expected_input(window)}"}, 405, {"Allow": "POST"}
        )
    try:
        if model is None:
            raise RuntimeError("run() called before init() loaded a model")
        body = _read_body(request, MAX_BODY_BYTES)
        # A document, not a Response: the server answers it as JSON with 200 (the same body and headers)
        # and, unlike for a Response, logs no extra line for it on every request.
        return score_body(model, body)
    except ScoringInputError as exc:
        return _json_response({"message": f"Bad request: {exc}. {expected_input(window)}"}, 400)
    except Exception:
        logger.exception("Scoring failed")
        return _json_response(
            {"message": "Internal error while scoring; the server log has the details."}, 500
        )


# ---------------------------------------------------------------------------------------------------
# Bundles: many tickers from one process (docs/bundles.md is the contract; retrain/bundles.py writes it)

BUNDLE_MANIFEST = "bundle.json"
BUNDLE_FORMAT = "retrain-bundle/1"
_TICKER = re.compile(r"^[A-Z0-9.^=-]{1,15}\Z")
_LISTING_HINT = "GET /score lists the served tickers"


class UnknownTickerError(ScoringInputError):
    """A ticker the bundle does not serve (answered 404)."""


@dataclass(frozen=True)
class BundleTicker:
    model: LoadedModel
    family: str
    fitted_data_end: str | None


@dataclass(frozen=True)
class LoadedBundle:
    identity: ModelIdentity
    endpoint: str
    parent_version: str | None
    created: str | None
    path: Path
    tickers: Mapping[str, BundleTicker]

    def describe(self) -> dict[str, str]:
        return {"name": self.identity.name, "version": self.identity.version}

    def listing(self) -> dict[str, Any]:
        """What GET /score answers: the bundle's identity and every ticker it serves."""
        return {
            "bundle": {
                **self.describe(),
                "endpoint": self.endpoint,
                "parent_version": self.parent_version,
                "created": self.created,
            },
            "tickers": {
                ticker: {
                    "name": served.model.identity.name,
                    "version": served.model.identity.version,
                    "family": served.family,
                    "fitted_data_end": served.fitted_data_end,
                    "window": served.model.window,
                }
                for ticker, served in self.tickers.items()
            },
        }


def find_bundle_manifest(root: Path, max_depth: int = _MLMODEL_SEARCH_DEPTH) -> Path | None:
    """The `bundle.json` at `root` or the shallowest one below it (Azure's `<name>/<version>/<folder>`
    nesting), never inside an MLflow model folder; None when there is none (a single model)."""
    level = [Path(root)]
    for depth in range(max_depth + 1):
        level = [d for d in level if not (d / "MLmodel").is_file()]  # a model folder is not a bundle
        found = sorted(d / BUNDLE_MANIFEST for d in level if (d / BUNDLE_MANIFEST).is_file())
        if found:
            if len(found) > 1:
                logger.warning("Several bundles under %s; using %s (first in sorted order)", root, found[0])
            return found[0]
        if depth == max_depth:
            break
        level = sorted(c for d in level for c in _subdirs(d))
    return None


def _manifest_text(document: Mapping[str, Any], key: str, where: str, optional: bool = False) -> str | None:
    value = document.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def load_bundle(manifest_path: Path) -> LoadedBundle:
    """Read a bundle's manifest and load every ticker's model (the same checks as a single model)."""
    manifest_path = Path(manifest_path)
    folder = manifest_path.parent.resolve()
    where = str(manifest_path)
    try:
        document = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(document, dict) or document.get("format") != BUNDLE_FORMAT:
        shown = document.get("format") if isinstance(document, dict) else None
        raise ValueError(f"{where}: 'format' is {shown!r}; this scorer serves {BUNDLE_FORMAT!r}")
    entries = document.get("tickers")
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"{where}: 'tickers' must be a non-empty object {{ticker: entry}}")
    tickers: dict[str, BundleTicker] = {}
    checked_families: set[str] = set()
    for ticker, entry in sorted(entries.items()):
        here = f"{where}: tickers[{ticker!r}]"
        if not isinstance(ticker, str) or not _TICKER.match(ticker):
            raise ValueError(f"{here}: not a ticker (1-15 of A-Z 0-9 . ^ = -)")
        if not isinstance(entry, dict):
            raise ValueError(f"{here} must be an object")
        relative = str(_manifest_text(entry, "path", here))
        model_dir = (folder / relative).resolve()
        if Path(relative).is_absolute() or model_dir == folder or not model_dir.is_relative_to(folder):
            raise ValueError(f"{here}: 'path' {relative!r} must lead to a folder inside the bundle")
        if not (model_dir / "MLmodel").is_file():
            raise ValueError(f"{here}: 'path' {relative!r} holds no MLmodel file")
        identity = ModelIdentity(
            name=str(_manifest_text(entry, "model_name", here)),
            version=str(_manifest_text(entry, "model_version", here)),
        )
        family = str(_manifest_text(entry, "family", here))
        try:
            # MLflow's requirements check (warnings only) once per family: a family's models share their
            # requirements, and on hundreds of tickers the check is half the load time of the bundle.
            model = load_model_dir(model_dir, identity, check_requirements=family not in checked_families)
        except Exception as exc:
            raise ValueError(f"{here}: cannot load the model in {relative!r}: {exc}") from exc
        checked_families.add(family)
        tickers[ticker] = BundleTicker(
            model=model,
            family=family,
            fitted_data_end=_manifest_text(entry, "fitted_data_end", here, optional=True),
        )
    return LoadedBundle(
        identity=ModelIdentity(
            name=str(_manifest_text(document, "name", where)),
            version=str(_manifest_text(document, "version", where)),
        ),
        endpoint=str(_manifest_text(document, "endpoint", where)),
        parent_version=_manifest_text(document, "parent_version", where, optional=True),
        created=_manifest_text(document, "created", where, optional=True),
        path=folder,
        tickers=MappingProxyType(tickers),
    )


def expected_bundle_input(bundle: LoadedBundle) -> str:
    one = next(iter(bundle.tickers)) if len(bundle.tickers) == 1 else None
    example = one or next(iter(bundle.tickers))
    text = (
        f'Send a JSON object, either {{"ticker": "{example}", "close": [at least the ticker\'s window of positive'
        f' numbers, oldest first, newest last]}} or {{"instances": [{{"ticker": ..., "close": [...]}}, ...]}}'
        f" with at most {MAX_INSTANCES} instances, in a body of at most {MAX_BODY_BYTES} bytes."
        f" GET /score lists the {len(bundle.tickers)} served ticker(s) and their windows."
    )
    if one:
        text += f' This bundle serves only {one}, so "ticker" may be left out.'
    return text


def _resolve_ticker(bundle: LoadedBundle, value: Any, where: str) -> str:
    if value is None:
        if len(bundle.tickers) == 1:
            return next(iter(bundle.tickers))
        raise ScoringInputError(
            f'{where} has no "ticker"; this endpoint serves {len(bundle.tickers)} tickers: name one'
            f" ({_LISTING_HINT})"
        )
    if not isinstance(value, str):
        raise ScoringInputError(f'{where}: "ticker" must be a string such as "MSFT", got {_json_type(value)}')
    ticker = value.strip().upper()
    if ticker not in bundle.tickers:
        raise UnknownTickerError(
            f"ticker {_short(value, 20)} is not served by bundle {bundle.identity.name} "
            f"version {bundle.identity.version} ({_LISTING_HINT})"
        )
    return ticker


def _ticker_request(bundle: LoadedBundle, obj: Any, where: str) -> tuple[str, list[float]]:
    """One {"ticker", "close"} object -> (ticker, the last `window` closes of that ticker's model)."""
    if not isinstance(obj, dict):
        raise ScoringInputError(
            f'{where} must be an object {{"ticker": ..., "close": [...]}}, got {_json_type(obj)}'
        )
    unexpected = sorted(set(obj) - {"ticker", "close"})
    if unexpected:
        raise ScoringInputError(f"{where} has unexpected key(s) {', '.join(map(repr, unexpected))}")
    ticker = _resolve_ticker(bundle, obj.get("ticker"), where)
    if "close" not in obj:
        raise ScoringInputError(f'{where} has no "close"')
    label = '"close"' if where == "the request" else f'{where}["close"]'
    return ticker, _close_series(obj["close"], label, bundle.tickers[ticker].model.window)


def _model_doc(model: LoadedModel) -> dict[str, Any]:
    return {"name": model.identity.name, "version": model.identity.version, "window": model.window}


def score_bundle_body(bundle: LoadedBundle, body: bytes) -> dict[str, Any]:
    """Bytes in, response document out for a bundle (raises ScoringInputError / UnknownTickerError for a
    bad request as a whole; a batch answers each bad instance in its place)."""
    payload = parse_body(body)
    if not isinstance(payload, dict):
        raise ScoringInputError(f"the JSON body must be an object, got {_json_type(payload)}")
    if set(payload) == {"instances"} and isinstance(payload["instances"], list):
        instances = payload["instances"]
        if instances and all(isinstance(row, list) for row in instances):
            return _score_bundle_rows(bundle, payload)  # today's request, for a bundle of one
        if not instances:
            raise ScoringInputError('"instances" is empty; send at least one {"ticker", "close"} object')
        if len(instances) > MAX_INSTANCES:
            raise ScoringInputError(
                f'"instances" has {len(instances)} entries; at most {MAX_INSTANCES} per request'
            )
        return {"predictions": score_batch(bundle, instances), "bundle": bundle.describe()}
    if "instances" in payload:
        if set(payload) != {"instances"}:
            raise ScoringInputError('send "instances" alone, or "ticker" and "close"')
        raise ScoringInputError(f'"instances" must be a list, got {_json_type(payload["instances"])}')
    ticker, row = _ticker_request(bundle, payload, "the request")
    model = bundle.tickers[ticker].model
    return {
        "ticker": ticker,
        "forecast": predict(model, [row]),
        "model": _model_doc(model),
        "bundle": bundle.describe(),
    }


def _score_bundle_rows(bundle: LoadedBundle, payload: dict[str, Any]) -> dict[str, Any]:
    if len(bundle.tickers) != 1:
        raise ScoringInputError(
            f'"instances" holds bare lists of closes; this endpoint serves {len(bundle.tickers)} tickers: '
            'send objects {"ticker": ..., "close": [...]}'
        )
    ticker, served = next(iter(bundle.tickers.items()))
    rows = validate_payload(payload, served.model.window)
    return {
        "ticker": ticker,
        "forecast": predict(served.model, rows),
        "model": _model_doc(served.model),
        "bundle": bundle.describe(),
    }


def score_batch(bundle: LoadedBundle, instances: list[Any]) -> list[dict[str, Any]]:
    """One answer per instance, in order. Valid rows of the same ticker are forecast together (one
    vectorised call per ticker); a bad instance answers its error and status in its place."""
    answers: list[dict[str, Any] | None] = [None] * len(instances)
    by_ticker: dict[str, list[tuple[int, list[float]]]] = {}
    for i, obj in enumerate(instances):
        where = f'"instances"[{i}]'
        try:
            ticker, row = _ticker_request(bundle, obj, where)
        except ScoringInputError as exc:
            named = (
                obj.get("ticker") if isinstance(obj, dict) and isinstance(obj.get("ticker"), str) else None
            )
            status = 404 if isinstance(exc, UnknownTickerError) else 400
            answers[i] = {"ticker": named, "error": str(exc), "status": status}
            continue
        by_ticker.setdefault(ticker, []).append((i, row))
    for ticker, rows in by_ticker.items():
        model = bundle.tickers[ticker].model
        try:
            forecasts = predict(model, [row for _, row in rows])
        except Exception:  # one model's failure is its instances', not the whole batch's
            logger.exception("Scoring %s failed", ticker)
            for i, _ in rows:
                answers[i] = {"ticker": ticker, "error": "internal error while scoring", "status": 500}
            continue
        doc = _model_doc(model)
        for (i, _), forecast in zip(rows, forecasts, strict=True):
            answers[i] = {"ticker": ticker, "forecast": [forecast], "model": doc}
    return [a for a in answers if a is not None]


def run_bundle(bundle: LoadedBundle, request: AMLRequest) -> dict[str, Any] | AMLResponse:
    guidance = expected_bundle_input(bundle)
    if request.method == "GET":
        return bundle.listing()
    if request.method != "POST":
        return _json_response(
            {"message": f"Use POST /score to score, GET /score to list. {guidance}"},
            405,
            {"Allow": "GET, POST"},
        )
    try:
        return score_bundle_body(bundle, _read_body(request, MAX_BODY_BYTES))
    except UnknownTickerError as exc:
        return _json_response({"message": f"Not found: {exc}. {guidance}"}, 404)
    except ScoringInputError as exc:
        return _json_response({"message": f"Bad request: {exc}. {guidance}"}, 400)
    except Exception:
        logger.exception("Scoring failed")
        return _json_response(
            {"message": "Internal error while scoring; the server log has the details."}, 500
        )
