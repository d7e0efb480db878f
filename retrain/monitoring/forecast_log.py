"""The monitor's forecast log: each day's forecast of the next close, joined later with the close that
became known; the daily metrics and checks; the retrains the monitor started.

One port (`ForecastLog`), two adapters, chosen by the composition root (`retrain.adapters.get_forecast_log`):
- `SqliteForecastLog`: `<state dir>/monitoring/monitor.sqlite` (the local platform);
- `TableForecastLog`: one Azure Table in the Function App's storage account (azureml).

Tables: `forecasts` (ticker, date, target_date, last_close, forecast, model_name, model_version, slot,
actual), `days` (ticker, date, metrics and checks as JSON), `triggers` (ticker, date, trigger, reason,
instance_id, status). Writes are idempotent per (ticker, date): replaying a day replaces its rows.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from retrain import settings
from retrain.state_files import mark_created, refuse_lost_records

_TABLES = ("forecasts", "days", "triggers")


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    return settings.state_dir(environ) / "monitoring" / "monitor.sqlite"


@runtime_checkable
class ForecastLog(Protocol):
    """What the monitor, its report and its retrains write and read; rows per (ticker, date)."""

    def record_forecast(self, ticker: str, row: dict[str, Any]) -> None: ...

    def join_actuals(self, ticker: str, dates: list[str], closes: list[float]) -> int: ...

    def forecasts(self, ticker: str, until: str | None = None) -> list[dict[str, Any]]: ...

    def record_day(self, ticker: str, date: str, summary: dict[str, Any]) -> None: ...

    def days(self, ticker: str) -> list[dict[str, Any]]: ...

    def record_trigger(self, ticker: str, date: str, trigger: str, reason: str) -> None: ...

    def record_retrain(self, ticker: str, date: str, instance_id: str, status: str) -> None: ...

    def triggers(self, ticker: str) -> list[dict[str, Any]]: ...

    def last_trigger_date(self, ticker: str, before: str) -> str | None: ...


class SqliteForecastLog:
    """The log in one SQLite file (WAL); a bad file is a StateError naming it."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        from retrain.state_files import ensure_parent

        ensure_parent(self.path)
        refuse_lost_records(self.path, _TABLES, "the monitor's forecast log")
        with self._connect() as db:
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS forecasts (
                    ticker TEXT NOT NULL, date TEXT NOT NULL, target_date TEXT, last_close REAL NOT NULL,
                    forecast REAL NOT NULL, model_name TEXT, model_version TEXT, slot TEXT, actual REAL,
                    actual_date TEXT, PRIMARY KEY (ticker, date));
                CREATE TABLE IF NOT EXISTS days (
                    ticker TEXT NOT NULL, date TEXT NOT NULL, summary TEXT NOT NULL, PRIMARY KEY (ticker, date));
                CREATE TABLE IF NOT EXISTS triggers (
                    ticker TEXT NOT NULL, date TEXT NOT NULL, trigger TEXT NOT NULL, reason TEXT NOT NULL,
                    instance_id TEXT, status TEXT, PRIMARY KEY (ticker, date));
                """
            )
        mark_created(self.path)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        # One transaction per block, closed after it; a bad file is a StateError that names it.
        from retrain.state_files import sqlite_connection

        return sqlite_connection(self.path, row_factory=sqlite3.Row)

    # -- forecasts --------------------------------------------------------------------------------
    def record_forecast(self, ticker: str, row: dict[str, Any]) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO forecasts (ticker, date, target_date, last_close, forecast, model_name,"
                " model_version, slot, actual, actual_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                (
                    ticker,
                    row["date"],
                    row.get("target_date"),
                    float(row["last_close"]),
                    float(row["forecast"]),
                    row.get("model_name"),
                    row.get("model_version"),
                    row.get("slot"),
                ),
            )

    def join_actuals(self, ticker: str, dates: list[str], closes: list[float]) -> int:
        """Fill `actual` of every open forecast with the first close after its date; how many were filled."""
        with self._connect() as db:
            open_rows = db.execute(
                "SELECT date FROM forecasts WHERE ticker = ? AND actual IS NULL ORDER BY date", (ticker,)
            ).fetchall()
            filled = 0
            for row in open_rows:
                later = next((i for i, d in enumerate(dates) if d > row["date"]), None)
                if later is None:
                    continue
                db.execute(
                    "UPDATE forecasts SET actual = ?, actual_date = ? WHERE ticker = ? AND date = ?",
                    (float(closes[later]), dates[later], ticker, row["date"]),
                )
                filled += 1
        return filled

    def forecasts(self, ticker: str, until: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM forecasts WHERE ticker = ?"
        params: list[Any] = [ticker]
        if until is not None:
            query += " AND date <= ?"
            params.append(until)
        with self._connect() as db:
            return [dict(r) for r in db.execute(query + " ORDER BY date", params).fetchall()]

    # -- days and triggers ------------------------------------------------------------------------
    def record_day(self, ticker: str, date: str, summary: dict[str, Any]) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO days (ticker, date, summary) VALUES (?, ?, ?)",
                (ticker, date, json.dumps(summary)),
            )

    def days(self, ticker: str) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT summary FROM days WHERE ticker = ? ORDER BY date", (ticker,)).fetchall()
        return [json.loads(r["summary"]) for r in rows]

    def record_trigger(self, ticker: str, date: str, trigger: str, reason: str) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO triggers (ticker, date, trigger, reason, instance_id, status)"
                " VALUES (?, ?, ?, ?, NULL, 'starting')",
                (ticker, date, trigger, reason),
            )

    def record_retrain(self, ticker: str, date: str, instance_id: str, status: str) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE triggers SET instance_id = ?, status = ? WHERE ticker = ? AND date = ?",
                (instance_id, status, ticker, date),
            )

    def triggers(self, ticker: str) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM triggers WHERE ticker = ? ORDER BY date", (ticker,)).fetchall()
        return [dict(r) for r in rows]

    def last_trigger_date(self, ticker: str, before: str) -> str | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT MAX(date) AS d FROM triggers WHERE ticker = ? AND date < ?", (ticker, before)
            ).fetchone()
        return row["d"] if row else None


FORECAST_TABLE_NAME = "retrainmonitor"


class TableForecastLog:
    """The same log in one Azure Table (the Function App's storage account, identity-based):
    PartitionKey `<ticker>:forecast|day|trigger`, RowKey the date, so every query is one partition."""

    def __init__(self, table_client: Any) -> None:
        self.table = table_client
        self._created = False

    @classmethod
    def from_account(
        cls, account_name: str, credential: Any, table_name: str = FORECAST_TABLE_NAME, **options: Any
    ) -> TableForecastLog:
        from azure.data.tables import TableClient

        return cls(
            TableClient(
                f"https://{account_name}.table.core.windows.net", table_name, credential=credential, **options
            )
        )

    def _ensure(self) -> None:
        import contextlib

        from azure.core.exceptions import ResourceExistsError

        if not self._created:
            with contextlib.suppress(ResourceExistsError):
                self.table.create_table()
            self._created = True

    def _put(self, ticker: str, kind: str, date: str, fields: dict[str, Any], merge: bool = False) -> None:
        from azure.data.tables import UpdateMode

        self._ensure()
        entity = {"PartitionKey": f"{ticker}:{kind}", "RowKey": date}
        entity.update({k: v for k, v in fields.items() if v is not None})
        self.table.upsert_entity(entity, mode=UpdateMode.MERGE if merge else UpdateMode.REPLACE)

    def _rows(
        self, ticker: str, kind: str, until: str | None = None, before: str | None = None
    ) -> list[dict[str, Any]]:
        from azure.core.exceptions import ResourceNotFoundError

        query = "PartitionKey eq @pk"
        params: dict[str, Any] = {"pk": f"{ticker}:{kind}"}
        if until is not None:
            query += " and RowKey le @until"
            params["until"] = until
        if before is not None:
            query += " and RowKey lt @before"
            params["before"] = before
        try:
            found = list(self.table.query_entities(query, parameters=params))
        except ResourceNotFoundError:
            return []
        return sorted((dict(e) for e in found), key=lambda e: e["RowKey"])

    def record_forecast(self, ticker: str, row: dict[str, Any]) -> None:
        fields = {k: row.get(k) for k in ("target_date", "model_name", "model_version", "slot")}
        fields.update(
            {"date": row["date"], "last_close": float(row["last_close"]), "forecast": float(row["forecast"])}
        )
        self._put(ticker, "forecast", row["date"], fields)

    def join_actuals(self, ticker: str, dates: list[str], closes: list[float]) -> int:
        filled = 0
        for row in self._rows(ticker, "forecast"):
            if row.get("actual") is not None:
                continue
            later = next((i for i, d in enumerate(dates) if d > row["RowKey"]), None)
            if later is None:
                continue
            self._put(
                ticker,
                "forecast",
                row["RowKey"],
                {"actual": float(closes[later]), "actual_date": dates[later]},
                merge=True,
            )
            filled += 1
        return filled

    def forecasts(self, ticker: str, until: str | None = None) -> list[dict[str, Any]]:
        keys = (
            "date",
            "target_date",
            "last_close",
            "forecast",
            "model_name",
            "model_version",
            "slot",
            "actual",
            "actual_date",
        )
        return [
            {"ticker": ticker, **{k: r.get(k) for k in keys}}
            for r in self._rows(ticker, "forecast", until=until)
        ]

    def record_day(self, ticker: str, date: str, summary: dict[str, Any]) -> None:
        self._put(ticker, "day", date, {"summary": json.dumps(summary)})

    def days(self, ticker: str) -> list[dict[str, Any]]:
        return [json.loads(r["summary"]) for r in self._rows(ticker, "day")]

    def record_trigger(self, ticker: str, date: str, trigger: str, reason: str) -> None:
        self._put(
            ticker,
            "trigger",
            date,
            {"date": date, "trigger": trigger, "reason": reason, "status": "starting"},
        )

    def record_retrain(self, ticker: str, date: str, instance_id: str, status: str) -> None:
        self._put(ticker, "trigger", date, {"instance_id": instance_id, "status": status}, merge=True)

    def triggers(self, ticker: str) -> list[dict[str, Any]]:
        keys = ("date", "trigger", "reason", "instance_id", "status")
        return [{"ticker": ticker, **{k: r.get(k) for k in keys}} for r in self._rows(ticker, "trigger")]

    def last_trigger_date(self, ticker: str, before: str) -> str | None:
        rows = self._rows(ticker, "trigger", before=before)
        return rows[-1]["RowKey"] if rows else None
