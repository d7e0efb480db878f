"""The trainers that live in this repository, and how hyperparameters reach them.

A trainer is a folder with an entry script (the contract: docs/trainer-contract.md), self-contained once the
trainer kit (trainer_kit/) is copied in. A cycle names its trainer (`RETRAIN_TRAINER`, the `trainer` field of
`POST /api/retrain`, `retrain run --trainer`); the name is looked up here, so a request can only pick a
folder that ships with the code, never a path. Adding a model family = adding a folder and one line to
`TRAINERS`: the Makefile's environments, the environment tests, check-trainer's tests and the backtest read
this registry.

Hyperparameters pass through generically: every `{key: value}` becomes `--param key=value` (the trainer
parses the string). The adapters keep no list of flags; a trainer rejects a parameter it does not know.
Imports nothing heavy: the Function App side uses this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Trainer:
    name: str  # what a request names
    folder: str  # relative to the repository root: the Azure ML job's code, the local subprocess's cwd
    model_family: str  # recorded on every registered version (tag `model_family`)
    description: str
    entry_script: str = "train.py"
    # Hyperparameters a cycle sets from a setting when the request does not: {param: SETTING_NAME}.
    setting_params: Mapping[str, str] = field(default_factory=dict)
    # Hyperparameters `retrain backtest` passes when the command line does not (its training budget).
    backtest_params: Mapping[str, str] = field(default_factory=dict)
    # Hyperparameters the contract's tests (check-trainer on every registered trainer) train with: a
    # small budget where the defaults would be slow.
    check_params: Mapping[str, str] = field(default_factory=dict)

    def folder_path(self, repo_root: Path = REPO_ROOT) -> Path:
        return Path(repo_root) / self.folder

    def script_path(self, repo_root: Path = REPO_ROOT) -> Path:
        return self.folder_path(repo_root) / self.entry_script


DEFAULT_TRAINER = "lstm"
TRAINERS: dict[str, Trainer] = {
    t.name: t
    for t in (
        Trainer(
            "lstm",
            "trainer",
            "lstm",
            "LSTM on standardised daily log returns (PyTorch Lightning)",
            setting_params={"max_epochs": "RETRAIN_MAX_EPOCHS"},
            backtest_params={"max_epochs": "10"},
            check_params={"max_epochs": "2"},
        ),
        Trainer(
            "ridge",
            "trainers/ridge",
            "ridge",
            "Ridge regression on lagged daily log returns (scikit-learn; served with numpy only)",
        ),
        Trainer(
            "gbr",
            "trainers/gbr",
            "gbr",
            "Gradient boosting on lagged daily log returns (scikit-learn; served with numpy)",
        ),
    )
}


class TrainerError(ValueError):
    """An unknown trainer or an unusable hyperparameter; the message says what to send instead."""


def names() -> list[str]:
    return sorted(TRAINERS)


def get_trainer(name: Any) -> Trainer:
    """The registered trainer called `name` (never a path: a request cannot point at arbitrary code)."""
    if not isinstance(name, str) or name not in TRAINERS:
        raise TrainerError(
            f"unknown trainer {name!r}; use one of the trainers in this repository: {', '.join(names())}"
        )
    return TRAINERS[name]


# A key becomes an Azure ML input name (`param_<key>`) and part of a command line: identifier-safe.
_PARAM_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\Z")
# A value is substituted into the job's shell command: no spaces, quotes or shell metacharacters.
_PARAM_VALUE = re.compile(r"^[A-Za-z0-9_.,:+\-]{1,256}\Z")


def _cut(value: Any, limit: int = 60) -> str:
    """A request's value quoted back in an error, cut short: a 1 MB value is not echoed."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def param_value(key: str, value: Any) -> str:
    """The string form of one hyperparameter (bool -> true/false); raises TrainerError when unusable."""
    if not isinstance(key, str) or not _PARAM_KEY.match(key):
        raise TrainerError(
            f"hyperparameter name {_cut(key)} is invalid: use a letter then letters, digits or '_' (max 64)"
        )
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise TrainerError(f"hyperparameter {key}={_cut(value)} must be a finite number")
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        raise TrainerError(
            f"hyperparameter {key}={_cut(value)} must be a string, number or boolean, not {type(value).__name__}"
        )
    if not _PARAM_VALUE.match(text):
        raise TrainerError(
            f"hyperparameter {key}={_cut(text)}: use 1-256 letters, digits or . , : + - _ (no spaces or quotes)"
        )
    return text


def param_pairs(hyperparameters: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Sorted (key, string value) pairs: what both adapters turn into `--param key=value`."""
    if hyperparameters is None:
        return []
    if not isinstance(hyperparameters, Mapping):
        raise TrainerError(
            f"hyperparameters must be an object of name -> value, not {type(hyperparameters).__name__}"
        )
    return [(key, param_value(key, hyperparameters[key])) for key in sorted(hyperparameters)]


def param_args(hyperparameters: Mapping[str, Any] | None) -> list[str]:
    """`--param key=value` for each hyperparameter (the local subprocess's argv)."""
    args: list[str] = []
    for key, text in param_pairs(hyperparameters):
        args += ["--param", f"{key}={text}"]
    return args


def default_hyperparameters(trainer: Trainer, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The hyperparameters a cycle of `trainer` takes from settings (e.g. RETRAIN_MAX_EPOCHS for the LSTM)."""
    from retrain.settings import get

    values: dict[str, Any] = {}
    for param, setting in trainer.setting_params.items():
        raw = get(setting, environ)
        if raw not in (None, ""):
            values[param] = str(raw)
    return values


HYPERPARAMETERS_FILE = "hyperparameters.json"  # in the trainer folder: the contract's declared table
_TYPES = ("int", "float", "bool")


def declared_hyperparameters(trainer: Trainer, repo_root: Path = REPO_ROOT) -> dict[str, dict[str, Any]]:
    """The trainer's declared hyperparameters (its folder's hyperparameters.json): name -> {type, min, max,
    also, default}. Raises TrainerError when the declaration is missing or malformed."""
    return read_declaration(trainer.folder_path(repo_root))


def read_declaration(folder: Path) -> dict[str, dict[str, Any]]:
    import json

    path = Path(folder) / HYPERPARAMETERS_FILE
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainerError(
            f"{path}: {exc}; a trainer declares its hyperparameters there as "
            '{"name": {"type": "int|float|bool", "min": ..., "max": ..., "default": ...}} '
            "(docs/trainer-contract.md)"
        ) from None
    problems = []
    if not isinstance(table, dict) or not table:
        problems.append("the top level must be a non-empty object of name -> declaration")
        table = {}
    for name, spec in table.items():
        if not isinstance(spec, dict) or spec.get("type") not in _TYPES:
            problems.append(f"{name}: type must be one of {', '.join(_TYPES)}")
        elif spec["type"] != "bool" and not (
            isinstance(spec.get("min"), int | float)
            and isinstance(spec.get("max"), int | float)
            and spec["min"] <= spec["max"]
        ):
            problems.append(f"{name}: a number needs min <= max")
    if problems:
        raise TrainerError(f"{path}: {'; '.join(problems)}")
    return table


def _expected(spec: Mapping[str, Any]) -> str:
    if spec["type"] == "bool":
        return "true or false"
    also = spec.get("also") or []
    kind = "an integer" if spec["type"] == "int" else "a number"
    return f"{kind} from {spec['min']} to {spec['max']}" + (f" or {' or '.join(also)}" if also else "")


def check_hyperparameter(name: str, value: Any, spec: Mapping[str, Any]) -> None:
    """Raise TrainerError unless `value` (as a request sends it: a string, number or boolean) has the
    declared type and lies within the declared bounds."""
    text = param_value(name, value)
    if text in (spec.get("also") or []):
        return
    kind = spec["type"]
    ok: bool
    if kind == "bool":
        ok = text.lower() in ("true", "false", "1", "0", "yes", "no")
    else:
        try:
            number = int(text) if kind == "int" else float(text)
            ok = math.isfinite(number) and spec["min"] <= number <= spec["max"]
        except ValueError:
            ok = False
    if not ok:
        raise TrainerError(f"hyperparameter {name}={text!r}: expected {_expected(spec)}")


def validate_hyperparameters(trainer: Trainer, hyperparameters: Mapping[str, Any] | None) -> None:
    """The edge's check of a cycle's hyperparameters against the trainer's declaration (names, types and
    bounds): a request cannot step around a limit the trainer declares. Raises TrainerError saying what
    to send."""
    param_pairs(hyperparameters)  # an object of safe names and values
    declared = declared_hyperparameters(trainer)
    for name, value in (hyperparameters or {}).items():
        if name not in declared:
            raise TrainerError(
                f"trainer {trainer.name} has no hyperparameter {name!r}; it takes "
                f"{', '.join(sorted(declared))}"
            )
        check_hyperparameter(name, value, declared[name])
