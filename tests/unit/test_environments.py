"""The Azure ML environments (each registered trainer's environment.yml, scorer/environment.yml) and the
Function App's requirements.txt are the single source of their pins, and those pins resolve together.

`make setup` installs exactly these pins (tools/environment_pins.py extracts the pip sections of the
environment files, listed from the trainer registry) with constraints.txt, so a set that pip cannot
resolve fails the set-up. The tests
below check the same offline: each pin agrees with constraints.txt, and every requirement of every
pinned distribution (read from the installed metadata) admits the pinned version of its dependency,
which is what pip's resolver needs. That is how azureml-mlflow 1.62.0.post6's `mlflow-skinny<=3.15.0`
against mlflow 3.17.2 (and mlflow 3.15.0's `pandas<3`) would have been caught.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
from environment_pins import environment_files, pip_requirements  # noqa: E402

from retrain.backtest.fitting import load_trainer_module  # noqa: E402
from retrain.trainers import TRAINERS, get_trainer  # noqa: E402

# Every registered trainer's environment (by trainer name) and the scorer's: a family registered in
# retrain/trainers.py is held to every test below with no change here.
TRAINER_ENVIRONMENTS = {
    name: trainer.folder_path(REPO) / "environment.yml" for name, trainer in TRAINERS.items()
}
ENVIRONMENTS = {**TRAINER_ENVIRONMENTS, "scorer": REPO / "scorer" / "environment.yml"}


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _constraints() -> dict[str, str]:
    return _pins((REPO / "constraints.txt").read_text().splitlines())


def _function_app() -> dict[str, str]:
    return _pins((REPO / "requirements.txt").read_text().splitlines())


def _environment(name: str) -> dict[str, str]:
    return _pins(pip_requirements(ENVIRONMENTS[name]))


def test_each_environment_file_is_the_single_source_of_its_pins():
    # No second list of the same pins that could drift (the local set-up reads the yml files).
    assert not (REPO / "trainer" / "requirements.txt").exists()
    assert not (REPO / "scorer" / "requirements.txt").exists()
    makefile = (REPO / "Makefile").read_text()
    # The Makefile lists the registry's environments, through the same function these tests use.
    assert "ENVIRONMENTS := $(shell $(PYTHON) tools/environment_pins.py --files)" in makefile
    listed = subprocess.run(
        [sys.executable, str(REPO / "tools" / "environment_pins.py"), "--files"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.split()
    assert (
        [REPO / f for f in listed]
        == list(dict.fromkeys(ENVIRONMENTS.values()))
        == [REPO / f for f in environment_files()]
    )
    assert "tools/environment_pins.py $(ENVIRONMENTS) > $(VENV)/environment-pins.txt" in makefile
    assert "-r requirements-dev.txt -r $(VENV)/environment-pins.txt -c constraints.txt" in makefile
    dev = (REPO / "requirements-dev.txt").read_text()
    assert "-r requirements.txt" in dev


@pytest.mark.parametrize("name", [*ENVIRONMENTS, "function app"])
def test_every_pin_agrees_with_constraints(name):
    pins = _function_app() if name == "function app" else _environment(name)
    constraints = _constraints()
    disagree = {pkg: (v, constraints.get(pkg)) for pkg, v in pins.items() if constraints.get(pkg) != v}
    assert not disagree, f"{name}: pin vs constraints.txt: {disagree}"


@pytest.mark.parametrize("name", list(TRAINER_ENVIRONMENTS))
def test_each_trainer_has_azureml_mlflow_and_the_scorer_loads_what_it_logs(name):
    """Each training job logs to Azure ML's MLflow, and a model it logs loads where the scorer serves it (the
    same mlflow, torch, pandas and numpy): torch also lets it load an LSTM champion."""
    trainer, scorer = _environment(name), _environment("scorer")
    assert "azureml-mlflow" in trainer
    assert "azureml-inference-server-http" in scorer
    shared = set(trainer) & set(scorer)
    assert {"mlflow", "torch", "pandas", "numpy"} <= shared
    assert {p: trainer[p] for p in shared} == {p: scorer[p] for p in shared}


@pytest.mark.parametrize("name", list(TRAINER_ENVIRONMENTS))
def test_the_scorer_loads_every_family_a_bundle_may_hold(name):
    """A bundle mixes families in one deployment, so the scorer's environment must carry what every
    family's served model requires (the requirements.txt the kit saves with it: `Family.pip_requirements`),
    at the pins its trainer's environment has."""
    family = load_trainer_module(get_trainer(name)).FAMILY
    required = _pins(family.pip_requirements())
    scorer, trainer = _environment("scorer"), _environment(name)
    assert required and set(required) <= set(scorer), (
        f"the scorer lacks {sorted(set(required) - set(scorer))}"
    )
    assert {p: trainer[p] for p in required} == {p: scorer[p] for p in required}


def test_a_saved_ridge_model_requires_what_its_family_says(tmp_path):
    """The requirements above are what a real saved model carries; the served ridge model is numbers and
    numpy (no scikit-learn)."""
    from tests.bundle_models import ridge_model

    model = ridge_model(tmp_path / "model", "MSFT", 5)
    required = _pins((model / "requirements.txt").read_text().splitlines())
    assert required == _pins(load_trainer_module(get_trainer("ridge")).FAMILY.pip_requirements())
    assert "scikit-learn" not in required


def test_function_app_stays_lean():
    assert not {"torch", "lightning", "mlflow", "mlflow-skinny", "azureml-mlflow"} & set(_function_app())


def _closure_conflicts(roots: dict[str, str], constraints: dict[str, str]) -> list[str]:
    """Requirements (transitively from `roots`, read from installed metadata) that the pinned version
    of their dependency does not satisfy."""
    env = default_environment()
    seen: set[str] = set()
    todo = list(roots)
    conflicts = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            conflicts.append(f"{name} is pinned but not installed: run make setup")
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            pinned = constraints.get(dep)
            if pinned is None:
                if dep not in ("setuptools", "pip", "wheel"):
                    conflicts.append(f"{name} needs {req} but constraints.txt does not pin {dep}")
                continue
            if not req.specifier.contains(pinned.split("+")[0], prereleases=True):
                conflicts.append(f"{name} needs {req}, pinned {dep}=={pinned}")
            todo.append(dep)
    return conflicts


@pytest.mark.parametrize("name", [*ENVIRONMENTS, "function app"])
def test_the_pins_resolve_together(name):
    roots = _function_app() if name == "function app" else _environment(name)
    assert not _closure_conflicts(roots, _constraints())


def test_the_resolver_check_catches_the_known_conflict():
    # azureml-mlflow caps mlflow-skinny at 3.15.0: a constraints set with 3.17.2 must be reported.
    constraints = {**_constraints(), "mlflow-skinny": "3.17.2"}
    conflicts = _closure_conflicts({"azureml-mlflow": constraints["azureml-mlflow"]}, constraints)
    assert any("mlflow-skinny" in c and "3.17.2" in c for c in conflicts), conflicts


def test_environment_pins_prints_both_sections_and_rejects_loose_pins(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "environment_pins.py"), *map(str, ENVIRONMENTS.values())],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    printed = [line for line in out.splitlines() if not line.startswith("#")]
    assert printed == [line for path in ENVIRONMENTS.values() for line in pip_requirements(path)]
    assert not any(line.startswith("-") for line in printed)  # the CPU index line stays in the yml

    loose = tmp_path / "environment.yml"
    loose.write_text("dependencies:\n  - pip\n  - pip:\n      - mlflow>=3\n")
    with pytest.raises(ValueError, match=r"'mlflow>=3' is not an exact pin; write it as name==version"):
        pip_requirements(loose)
    none = tmp_path / "none.yml"
    none.write_text("dependencies:\n  - python=3.11\n")
    with pytest.raises(ValueError, match="no '- pip:' section"):
        pip_requirements(none)
    failed = subprocess.run(
        [sys.executable, str(REPO / "tools" / "environment_pins.py"), str(loose)],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 1 and "not an exact pin" in failed.stderr


def test_environment_files_keep_the_cpu_torch_index():
    for path in ENVIRONMENTS.values():
        text = path.read_text()
        assert re.search(r"--extra-index-url https://download\.pytorch\.org/whl/cpu", text), path
