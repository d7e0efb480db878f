"""The detached router process: one endpoint's router and slot supervisor as a process of its own
(`python -m retrain.local.endpoint`, started by `retrain serve`), so the scoring URL outlives the host."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

from retrain.local.endpoint.endpoints import LocalEndpoints
from retrain.ports import ModelRef, PlatformError


def _cannot_fetch(model: ModelRef, dest: Path) -> None:
    raise PlatformError(
        f"the endpoint's router process does not download models ({model.name}:{model.version})"
    )


def main(argv: list[str] | None = None) -> int:
    """One endpoint's router and slot supervisor as a process of its own (`retrain serve` starts it)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m retrain.local.endpoint", description=main.__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--scorer", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    endpoints = LocalEndpoints(args.state_dir, _cannot_fetch, args.scorer)
    endpoints._ensure_router(args.endpoint, endpoints._require(args.endpoint))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1.0):
        if not endpoints._state_file(args.endpoint).is_file():
            break  # the endpoint is gone
    endpoints.release()  # the slots stay: whoever stops the router decides about them
    return 0


if __name__ == "__main__":
    sys.exit(main())
