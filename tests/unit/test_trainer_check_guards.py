"""`retrain check-trainer` guards: a trainer that exits leaving a grandchild behind does not hold the check
until its timeout (the grandchild is stopped with the trainer's process group), and `--entry-script` is
confined to the trainer folder (no ../, absolute paths or symlinks out)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from retrain.trainer_check import check_trainer

# Exits 3 at once, after starting a grandchild that keeps stdout and stderr open and sleeps for minutes.
_LEAVES_A_GRANDCHILD = """
import subprocess, sys
from pathlib import Path
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
Path({pid_file!r}).write_text(str(child.pid))
print("leaving a grandchild behind", file=sys.stderr)
sys.exit(3)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as stopped.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_a_trainer_that_leaves_a_grandchild_is_reported_with_its_exit_and_the_group_stopped(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "leaky"
    folder.mkdir()
    pid_file = tmp_path / "grandchild.pid"
    (folder / "train.py").write_text(_LEAVES_A_GRANDCHILD.format(pid_file=str(pid_file)))
    (folder / "hyperparameters.json").write_text('{"window": {"type": "int", "min": 2, "max": 9}}')
    report = check_trainer(folder, timeout=20, work_dir=tmp_path)
    failed = report.failed()
    assert failed and failed[0].name == "trains on the sample: exit 0"
    # The trainer's own exit code, not a timeout: the check did not wait for the grandchild's pipes.
    assert failed[0].detail.startswith("exit 3") and "timed out" not in failed[0].detail
    assert "leaving a grandchild behind" in failed[0].detail
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # SIGKILL is delivered asynchronously; reaping by init follows
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild), "the trainer's grandchild is still running after the check"


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_the_entry_script_must_be_inside_the_folder(tmp_path: Path, how: str) -> None:
    folder = tmp_path / "trainer"
    folder.mkdir()
    ran = tmp_path / "outside-ran"
    outside = tmp_path / "outside.py"
    outside.write_text(f"from pathlib import Path\nPath({str(ran)!r}).write_text('ran')\n")
    if how == "dotdot":
        entry = "../outside.py"
    elif how == "absolute":
        entry = str(outside)
    else:
        (folder / "link.py").symlink_to(outside)
        entry = "link.py"
    report = check_trainer(folder, entry_script=entry, timeout=20, work_dir=tmp_path)
    assert not report.ok
    (item,) = report.items
    assert item.name == f"entry script {entry} inside the folder"
    assert "name a script inside trainer/" in item.fix
    assert not ran.exists(), "a script outside the trainer folder was run"


def test_a_trainer_without_a_hyperparameter_declaration_fails_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "undeclared"
    folder.mkdir()
    (folder / "train.py").write_text("raise SystemExit('must not run')\n")
    report = check_trainer(folder, timeout=20, work_dir=tmp_path)
    assert [i.name for i in report.failed()] == ["declares its hyperparameters (hyperparameters.json)"]
    assert "hyperparameters.json" in report.failed()[0].fix and "min" in report.failed()[0].fix
