"""Durable execution for the local Functions host: SQLite history driving the real Durable SDK."""

from .engine import (
    DurableEngine,
    DurableError,
    FunctionNotFoundError,
    InstanceExistsError,
    InstanceNotFound,
)
from .store import DurableStoreError

__all__ = [
    "DurableEngine",
    "DurableError",
    "DurableStoreError",
    "FunctionNotFoundError",
    "InstanceExistsError",
    "InstanceNotFound",
]
