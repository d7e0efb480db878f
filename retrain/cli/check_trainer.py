"""`retrain check-trainer FOLDER`: run a trainer folder on the sample and check the contract
(`retrain.trainer_check`, docs/trainer-contract.md)."""

from __future__ import annotations

from typing import Any


def add_commands(sub: Any) -> None:
    from retrain import trainer_check

    check = sub.add_parser("check-trainer", help="run a trainer folder on the sample and check the contract")
    trainer_check.add_arguments(check)
    check.set_defaults(func=lambda args: trainer_check.run(args))
