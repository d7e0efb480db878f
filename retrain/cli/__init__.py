"""`retrain`: one full cycle (`run`), the local host (`serve`), `status`, `predict` and the MLflow `ui`.

The command line, one module per command group; each registers its commands (`add_commands`) and imports
the library, never the other way round. What they share (the CLI's error, the settings, the host, the
endpoints' slots) is in `common`:

- `cycle`: `run`, `status`;
- `serve`: `serve`, `ui`;
- `endpoints`: `predict`, `traffic`, `rollback`;
- `check_trainer`: `check-trainer`;
- `monitor`: `monitor`, `report`, `served`;
- `backtest`: `backtest`.

Exit status: 0 on success, 1 when the work failed, 2 for bad usage (with what to send instead), 3 when a
ticker is busy (see docs/cli.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from retrain import settings
from retrain.cli.common import CliError, say


def build_parser() -> argparse.ArgumentParser:
    from retrain.cli import backtest, check_trainer, cycle, endpoints, monitor, serve

    parser = argparse.ArgumentParser(prog="retrain", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (cycle, serve, endpoints, check_trainer, monitor, backtest):
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from functions_host.keys import KeysError
    from functions_host.settings import LocalSettingsError
    from retrain.ports import PlatformError
    from retrain.state_files import StateError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        say(f"retrain {args.command}: {exc}")
        return exc.code
    except (settings.SettingsError, LocalSettingsError, KeysError, StateError, PlatformError) as exc:
        # Bad settings, a bad state file (keys, ledger, an endpoint's state) or a platform's refusal:
        # each message says what to do; a traceback would only hide it.
        say(f"retrain {args.command}: {exc}")
        return 2
    except Exception as exc:
        from functions_host.durable import DurableStoreError

        if not isinstance(exc, DurableStoreError):
            raise
        say(f"retrain {args.command}: {exc}")  # a corrupt durable.sqlite: what to do, not a traceback
        return 1
