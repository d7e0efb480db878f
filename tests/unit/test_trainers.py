"""The trainer registry, the generic `--param` pass-through, and the rule that no adapter or orchestrator
code names a model-specific flag (the trainers' own CLIs are read to know which names those are)."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from retrain import trainers
from retrain.trainers import TrainerError, get_trainer, param_args

REPO = Path(__file__).resolve().parents[2]
# The code that must stay model-agnostic: the orchestrator, the activities, the port and both adapters.
AGNOSTIC = [
    REPO / "retrain" / "workflow.py",
    REPO / "retrain" / "activities.py",
    REPO / "retrain" / "ports.py",
    *(REPO / "retrain" / "local").glob("*.py"),
    *(REPO / "retrain" / "azureml").glob("*.py"),
]


def _hyperparameter_names() -> set[str]:
    """Every hyperparameter the shipped trainers take, read from the trainers' own sources."""
    names: set[str] = set()
    for trainer in trainers.TRAINERS.values():
        source = trainer.script_path().read_text()
        names |= {n.replace("-", "_") for n in re.findall(r'add_argument\(\s*"--([a-z][a-z-]+)"', source)}
        names |= set(trainers.declared_hyperparameters(trainer))  # the contract's declaration
    return names - {"data", "output", "champion_model", "param"}  # the contract's own inputs


def _code_mentions(path: Path, names: set[str]) -> set[str]:
    """Names used as identifiers, or as string literals (a key, or a `--flag`), outside comments and
    docstrings' prose."""
    found: set[str] = set()
    with path.open("rb") as fh:
        for token in tokenize.tokenize(fh.readline):
            if token.type == tokenize.NAME and token.string in names:
                found.add(token.string)
            elif token.type == tokenize.STRING:
                try:
                    value = ast.literal_eval(token.string)
                except (ValueError, SyntaxError):  # f-strings: look at the raw text
                    value = token.string
                if not isinstance(value, str):
                    continue
                found |= {n for n in names if value == n or f"--{n.replace('_', '-')}" in value}
                found |= {n for n in names if re.search(rf"[{{\"']{n}[\"'}}=]", value)}
    return found


def test_the_trainers_own_hyperparameters_are_known_to_this_test() -> None:
    names = _hyperparameter_names()
    assert {"window", "hidden_size", "max_epochs", "learning_rate", "seed", "threads", "alpha"} <= names
    # The detector finds them where they are: in the trainers themselves.
    assert {"max_epochs", "hidden_size"} <= _code_mentions(REPO / "trainer" / "train.py", names)
    assert "alpha" in _code_mentions(REPO / "trainers" / "ridge" / "train.py", names)


@pytest.mark.parametrize("path", AGNOSTIC, ids=lambda p: str(p.relative_to(REPO)))
def test_no_adapter_or_orchestrator_code_names_a_model_specific_flag(path: Path) -> None:
    found = sorted(_code_mentions(path, _hyperparameter_names()))
    assert not found, f"{path.relative_to(REPO)} names trainer hyperparameters {found}; pass them generically"


def test_registry_names_only_folders_of_this_repository() -> None:
    assert {"lstm", "ridge", "gbr"} <= set(trainers.names()) and trainers.DEFAULT_TRAINER == "lstm"
    for trainer in trainers.TRAINERS.values():
        folder = trainer.folder_path().resolve()
        assert folder.is_relative_to(REPO) and trainer.script_path().is_file()
        assert (folder / "environment.yml").is_file()  # its own Azure ML environment
        # Self-contained: the folder is the Azure ML job's whole code.
        for module in folder.glob("*.py"):
            assert not re.search(r"^\s*(from|import) retrain\b", module.read_text(), re.M), module
    for bad in ("../trainer", "/work/x", "trainer", "LSTM", "", None, 1):
        with pytest.raises(
            TrainerError, match="use one of the trainers in this repository: gbr, lstm, ridge"
        ):
            get_trainer(bad)


def test_hyperparameters_become_param_pairs_as_strings() -> None:
    assert param_args({"seed": 7, "alpha": 0.5, "fit": True, "mode": "auto", "lr": 1e-3}) == [
        "--param", "alpha=0.5", "--param", "fit=true", "--param", "lr=0.001",
        "--param", "mode=auto", "--param", "seed=7",
    ]  # fmt: skip
    assert param_args({}) == [] and param_args(None) == []
    for bad, message in [
        ({"a b": 1}, "name 'a b' is invalid"),
        ({"_x": 1}, "is invalid"),
        ({"x": "$(id)"}, "no spaces or quotes"),
        ({"x": ""}, "no spaces or quotes"),
        ({"x": float("inf")}, "finite"),
        ({"x": None}, "string, number or boolean"),
    ]:
        with pytest.raises(TrainerError, match=re.escape(message)):
            param_args(bad)


def test_each_setting_param_is_a_real_flag_of_its_trainer() -> None:
    """The registry's setting -> param mapping (RETRAIN_MAX_EPOCHS -> max_epochs) names a real flag."""
    for trainer in trainers.TRAINERS.values():
        for param in trainer.setting_params:
            done = subprocess.run(
                [sys.executable, str(trainer.script_path()), "--help"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert f"--{param.replace('_', '-')}" in done.stdout or param in done.stdout, (
                trainer.name,
                param,
            )


def test_check_trainer_is_a_cli_command() -> None:
    from retrain.cli import build_parser

    args = build_parser().parse_args(["check-trainer", "trainers/ridge", "--param", "alpha=1"])
    assert (args.folder, args.param, args.entry_script) == ("trainers/ridge", ["alpha=1"], "train.py")
    assert isinstance(args, argparse.Namespace)


@pytest.mark.parametrize(
    "params",
    [{"alpha\n": 1}, {"alpha": "0.5\n"}, {"x" * 1_000_000: 1}, {"alpha": "y" * 1_000_000}],
)
def test_a_trailing_newline_or_a_huge_value_is_refused_without_an_echo(params: dict) -> None:
    from retrain.trainers import TrainerError, param_pairs

    with pytest.raises(TrainerError) as caught:
        param_pairs(params)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("name", trainers.names())
def test_each_trainer_declares_its_hyperparameters_and_enforces_the_bounds_itself(name: str) -> None:
    """The declaration (hyperparameters.json) names exactly what the trainer takes, and the trainer's own
    parsing refuses a value just outside each declared bound (in a fresh process: no retrain imports)."""
    trainer = get_trainer(name)
    declared = trainers.declared_hyperparameters(trainer)
    assert (
        set(declared)
        == {
            "lstm": {
                "window",
                "hidden_size",
                "num_layers",
                "max_epochs",
                "learning_rate",
                "batch_size",
                "seed",
                "patience",
                "threads",
                "refit",
            },
            "ridge": {"window", "alpha", "refit"},
            "gbr": {"window", "n_estimators", "max_depth", "learning_rate", "refit"},
        }[name]
    )
    outside = []
    for key, spec in declared.items():
        if spec["type"] == "bool":
            outside.append(f"{key}=maybe")
            continue
        step = 1 if spec["type"] == "int" else spec["max"] * 1e-3
        outside += [f"{key}={spec['max'] + step}", f"{key}={spec['min'] - (step if spec['min'] > 0 else 1)}"]
    parse = (
        "import train, sys\n"
        "for pair in sys.argv[1:]:\n"
        "    try:\n"
        + (
            "        train.parse_args(['--data', 'd', '--output', 'o', '--param', pair])\n"
            if name == "lstm"
            else "        train.config_from_params([pair])\n"
        )
        + "    except (SystemExit, train.TrainerError):\n        continue\n"
        "    print('ACCEPTED', pair)\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, '.'); exec({parse!r})", *outside],
        cwd=trainer.folder_path(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ACCEPTED" not in done.stdout, done.stdout
    for pair in outside:  # and the edge refuses the same values, naming the bounds
        key, _, value = pair.partition("=")
        with pytest.raises(TrainerError, match=f"hyperparameter {key}="):
            trainers.validate_hyperparameters(trainer, {key: value})
    for key, spec in declared.items():  # the defaults pass both
        trainers.validate_hyperparameters(trainer, {key: spec["default"]})


@pytest.mark.parametrize("name", trainers.names())
def test_each_trainer_exposes_the_batch_and_in_process_entries(name: str) -> None:
    """What the kit's batch runner calls per ticker (parse_args, run) and the in-process fit entry the
    backtest calls (config_from_params, fit_closes, in_process_setup): docs/trainer-contract.md."""
    source = get_trainer(name).script_path().read_text()
    for entry in ("parse_args", "run", "config_from_params", "fit_closes", "in_process_setup"):
        assert re.search(rf"^def {entry}\(", source, re.M), f"{name}'s train.py has no {entry}()"
