"""The trainer registry, the generic `--param` pass-through, and the rule that no adapter or orchestrator
code names a model-specific flag (the trainers' own CLIs are read to know which names those are)."""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from retrain import trainers
from retrain.backtest.fitting import load_trainer_module
from retrain.job_code import assemble_job_code
from retrain.trainer_check import PROBE_PARAM as PROBE
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
    """Every hyperparameter the shipped trainers take: their declarations, which the kit's parsing reads."""
    names: set[str] = set()
    for trainer in trainers.TRAINERS.values():
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
    # The detector finds them where they are: in the families themselves.
    assert {"hidden_size", "num_layers"} <= _code_mentions(REPO / "trainer" / "train.py", names)
    assert "alpha" in _code_mentions(REPO / "trainers" / "ridge" / "train.py", names)


@pytest.mark.parametrize("path", AGNOSTIC, ids=lambda p: str(p.relative_to(REPO)))
def test_no_adapter_or_orchestrator_code_names_a_model_specific_flag(path: Path) -> None:
    found = sorted(_code_mentions(path, _hyperparameter_names()))
    assert not found, f"{path.relative_to(REPO)} names trainer hyperparameters {found}; pass them generically"


def test_registry_names_only_folders_of_this_repository() -> None:
    assert trainers.DEFAULT_TRAINER in trainers.names()
    for trainer in trainers.TRAINERS.values():
        folder = trainer.folder_path().resolve()
        assert folder.is_relative_to(REPO) and trainer.script_path().is_file()
        assert (folder / "environment.yml").is_file()  # its own Azure ML environment
        # Self-contained with the kit: the folder plus trainer_kit/ is the Azure ML job's whole code.
        for module in folder.glob("*.py"):
            text = module.read_text()
            assert not re.search(r"^\s*(from|import) retrain\b", text, re.M), module
            other = re.findall(r"^\s*(?:from|import) (trainers?)\b", text, re.M)  # another family's folder
            assert not other, (module, other)
    for bad in ("../trainer", "/work/x", "trainer", "LSTM", "", None, 1):
        with pytest.raises(
            TrainerError, match=f"use one of the trainers in this repository: {', '.join(trainers.names())}$"
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


def test_each_setting_param_is_a_real_flag_of_its_trainer(tmp_path: Path) -> None:
    """The registry's setting -> param mapping (RETRAIN_MAX_EPOCHS -> max_epochs) names a real flag."""
    for trainer in trainers.TRAINERS.values():
        for param in trainer.setting_params:
            code = assemble_job_code(trainer.folder_path(), tmp_path / trainer.name)
            done = subprocess.run(  # as a job runs it: its code folder, no PYTHONPATH
                [sys.executable, str(code / trainer.entry_script), "--help"],
                capture_output=True,
                text=True,
                timeout=120,
                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            )
            assert f"--{param.replace('_', '-')}" in done.stdout or param in done.stdout, (
                trainer.name,
                param,
                done.stderr[-2000:],
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
def test_each_trainer_declares_its_hyperparameters_and_enforces_the_bounds_itself(
    name: str, tmp_path: Path
) -> None:
    """The trainer takes exactly what its declaration (hyperparameters.json) names, and its own parsing
    refuses a value just outside each declared bound: run from the job's code (the folder plus the kit) in
    a fresh process (`python -I`: no retrain imports, no repository on the path)."""
    trainer = get_trainer(name)
    declared = trainers.declared_hyperparameters(trainer)
    outside = [f"{PROBE}=1"]  # not declared: refused
    for key, spec in declared.items():
        if spec["type"] == "bool":
            outside.append(f"{key}=maybe")
            continue
        step = 1 if spec["type"] == "int" else spec["max"] * 1e-3
        outside += [f"{key}={spec['max'] + step}", f"{key}={spec['min'] - (step if spec['min'] > 0 else 1)}"]
    defaults = [f"{key}={trainers.param_value(key, spec['default'])}" for key, spec in declared.items()]
    parse = (
        "import sys; sys.path.insert(0, '.')\n"
        "import train\n"
        "for pair in sys.argv[1:]:\n"
        "    try:\n"
        "        train.config_from_params([pair])\n"
        "    except train.TrainerError:\n"
        "        print('REFUSED', pair)\n"
        "        continue\n"
        "    print('ACCEPTED', pair)\n"
    )
    code = assemble_job_code(trainer.folder_path(), tmp_path)
    done = subprocess.run(
        [sys.executable, "-I", "-c", parse, *outside, *defaults],
        cwd=code,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(done.stdout.split("\n")) == sorted(
        [f"REFUSED {p}" for p in outside] + [f"ACCEPTED {p}" for p in defaults] + [""]
    )
    for pair in outside[1:]:  # and the edge refuses the same values, naming the bounds
        key, _, value = pair.partition("=")
        with pytest.raises(TrainerError, match=f"hyperparameter {key}="):
            trainers.validate_hyperparameters(trainer, {key: value})
    for key, spec in declared.items():  # the defaults pass both
        trainers.validate_hyperparameters(trainer, {key: spec["default"]})


@pytest.mark.parametrize("name", trainers.names())
def test_each_trainer_exposes_the_batch_and_in_process_entries(name: str) -> None:
    """What the kit's batch runner calls per ticker (parse_args, run) and the in-process fit entry the
    backtest calls (config_from_params, fit_closes, in_process_setup): docs/trainer-contract.md."""
    module = load_trainer_module(get_trainer(name))
    for entry in ("parse_args", "run", "main", "config_from_params", "fit_closes", "in_process_setup"):
        assert callable(getattr(module, entry, None)), f"{name}'s train.py has no {entry}()"
    for error in ("TrainerError", "TrainingDataError"):  # what the batch runner reports in one line
        assert isinstance(getattr(module, error, None), type), f"{name}'s train.py has no {error}"
