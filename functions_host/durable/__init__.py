"""Durable execution for the local Functions host: SQLite history driving the real Durable SDK.

Modules: `engine` (lifecycle and client API), `episodes` (the replay driver), `actions` (SDK actions ->
history events and work), `scheduler` (timers and the activity pool), `instances` (instance rows and
queues), `history` (the extension's JSON shapes), `store` (SQLite), `model` (states, errors, shapes).
"""

from .engine import DurableEngine
from .model import (
    DurableError,
    FunctionNotFoundError,
    InstanceExistsError,
    InstanceGone,
    InstanceNotFound,
    InstanceStillRunning,
)
from .store import DurableStoreError, DurableStoreUnavailable

__all__ = [
    "DurableEngine",
    "DurableError",
    "DurableStoreError",
    "DurableStoreUnavailable",
    "FunctionNotFoundError",
    "InstanceExistsError",
    "InstanceGone",
    "InstanceNotFound",
    "InstanceStillRunning",
]
