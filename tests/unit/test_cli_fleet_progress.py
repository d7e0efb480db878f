"""`retrain run --tickers`' progress on stderr: one line rewritten in place on a terminal, plain lines
(only when something changed) otherwise."""

from __future__ import annotations

import io
import time

from retrain.cli.cycle import FleetProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def status(done: int, step: str = "batches", deployed: int = 0) -> dict:
    return {"fleet": True, "step": step, "batches": 4, "batches_done": done, "counts": {"deployed": deployed}}


def test_a_terminal_gets_one_rewritten_line_and_a_log_a_line_per_change():
    tty, log = Terminal(), io.StringIO()
    for stream in (tty, log):
        progress = FleetProgress(time.monotonic(), stream)
        for update in (status(0), status(0), status(2), status(4, "await_rollout"), status(4, "done", 9)):
            progress(update)
        progress.close()
    assert (
        tty.getvalue().count("\r") == 5 and tty.getvalue().endswith("\n") and tty.getvalue().count("\n") == 1
    )
    lines = log.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in log.getvalue()  # the repeated status printed once
    assert "batches 2/4 [############............]" in lines[1] and "deployed 9" in lines[3]
