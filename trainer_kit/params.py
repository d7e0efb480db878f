"""The trainer contract's command line: `--data --output [--champion-model] [--param key=value ...]`, and
each hyperparameter the family declares in its `hyperparameters.json`, as a flag too (`--max-epochs 5`).

Every value is parsed within its declared type and bounds (the trainer enforces its own contract, as the
edge does before a job starts: retrain.trainers.validate_hyperparameters). A parse error raises
TrainerError with argparse's message (one line, naming the key), never a bare exit: the batch runner
records it as the ticker's reason, and `main` prints it and exits 2.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

HYPERPARAMETERS_FILE = "hyperparameters.json"
BOOLEAN_TEXT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
CONTRACT_INPUTS = ("data", "output", "champion_model", "param")


class TrainerError(RuntimeError):
    """A failure with a clear cause (bad arguments, unusable champion, occupied output); the message says
    what to send instead."""


def read_declaration(folder: Path) -> dict[str, dict[str, Any]]:
    """The family's declared hyperparameters: name -> {type, min, max, also, default, help}."""
    path = Path(folder) / HYPERPARAMETERS_FILE
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainerError(f"{path}: {exc}; declare the hyperparameters there") from None
    if not isinstance(table, dict) or not table:
        raise TrainerError(f"{path}: the top level must be a non-empty object of name -> declaration")
    return table


def converter(key: str, spec: dict[str, Any]) -> Callable[[str], Any]:
    """The argparse type of hyperparameter `key`: its declared type within its declared bounds (or one of
    its `also` words, returned as text)."""
    kind, low, high, also = spec["type"], spec.get("min"), spec.get("max"), spec.get("also") or []

    def convert(text: str) -> Any:
        if text.strip() in also:
            return text.strip()
        if kind == "bool":
            value = BOOLEAN_TEXT.get(text.strip().lower())
            if value is None:
                raise argparse.ArgumentTypeError(f"expected true or false, got {text}")
            return value
        expected = f"{'an integer' if kind == 'int' else 'a number'} from {low} to {high}" + (
            f" or {' or '.join(also)}" if also else ""
        )
        try:
            number = int(text) if kind == "int" else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}") from None
        if not math.isfinite(number) or not low <= number <= high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return number

    convert.__name__ = key
    return convert


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # a TrainerError, not an exit: see the module docstring
        raise TrainerError(message)


def parse_args(
    declared: dict[str, dict[str, Any]], argv: list[str] | None = None, description: str = ""
) -> argparse.Namespace:
    """The contract's inputs plus one attribute per declared hyperparameter (its default, its flag, or a
    `--param key=value`, which wins over the flag)."""
    p = _Parser(description=description)
    p.add_argument("--data", required=True, type=Path, help="CSV with Date (ascending) and Close columns")
    p.add_argument("--output", required=True, type=Path, help="directory for model/, metrics.json, ...")
    p.add_argument("--champion-model", default=None, help="MLflow model dir or URI of the current champion")
    for key, spec in declared.items():
        p.add_argument(
            f"--{key.replace('_', '-')}",
            dest=key,
            type=converter(key, spec),
            default=spec["default"],
            help=f"{spec.get('help', key)} (default {spec['default']})",
        )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter as key=value, repeatable (the trainer contract's generic form): any flag "
        "above with '_' for '-', e.g. window=10; wins over the flag",
    )
    args = p.parse_args(argv)
    for pair in args.param:  # the orchestration passes hyperparameters generically; each parses like its flag
        key, sep, value = pair.partition("=")
        if not sep or key not in declared:
            p.error(f"--param {pair!r}: use key=value with key one of {', '.join(sorted(declared))}")
        try:
            setattr(args, key, converter(key, declared[key])(value))
        except argparse.ArgumentTypeError as exc:
            p.error(f"--param {key}={value!r}: {exc}")
    return args


def values(declared: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """{name: parsed value} of every declared hyperparameter."""
    return {key: getattr(args, key) for key in declared}
