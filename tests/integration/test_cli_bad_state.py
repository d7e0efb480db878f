"""The CLI on a corrupt state dir or bad input: one line that names the file or the value and says what
to do, exit 2, never a traceback (real `retrain` processes; nothing long-running is started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, offline_env

GARBAGE = b"this is not a database" * 100


def corrupt_state(state: Path) -> Path:
    (state / "monitoring").mkdir(parents=True)
    for name in ("ledger.sqlite", "monitor.sqlite"):
        (state / "monitoring" / name).write_bytes(GARBAGE)
    (state / "endpoints" / "msft-forecast").mkdir(parents=True)
    (state / "endpoints" / "msft-forecast" / "state.json").write_text("{not json")
    (state / "host").mkdir()
    (state / "host" / "keys.json").write_text("{not json")
    return state


@pytest.mark.parametrize(
    "args, says",
    [
        (["served", "--ticker", "MSFT"], "monitoring/ledger.sqlite is corrupt"),
        (["served", "--ticker", "MSFT", "--at", "0999-06-01"], "before 1970"),
        (["served", "--ticker", "MSFT", "--at", "9999-12-31T23:59:59-01:00"], "past year 9999"),
        (
            ["report", "--ticker", "MSFT", "--out", "r.png", "--no-mlflow"],
            "monitoring/monitor.sqlite is corrupt",
        ),
        (["predict", "--ticker", "MSFT"], "msft-forecast/state.json is unreadable"),
        (["monitor", "--from", "2012-01-03"], "keys.json: unreadable host keys"),
    ],
)
def test_bad_state_or_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], says: str) -> None:
    state = corrupt_state(tmp_path / "state")
    done = subprocess.run(
        [sys.executable, "-m", "retrain", *args, "--state-dir", str(state)],
        env=offline_env(PYTHONPATH=str(REPO)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"retrain {args[0]}: ") and says in last, done.stderr[-2000:]
