"""The monitor's forecast log (SQLite under the state dir): each day's forecast of the next close, joined
later with the close that became known; the daily metrics and checks; the retrains the monitor started.

Tables: `forecasts` (ticker, date, target_date, last_close, forecast, model_name, model_version, slot,
actual), `days` (ticker, date, metrics and checks as JSON), `triggers` (ticker, date, trigger, reason,
instance_id, status). Writes are idempotent per (ticker, date): replaying a day replaces its rows.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from retrain import settings


def default_path() -> Path:
    return settings.state_dir() / "monitoring" / "monitor.sqlite"


class ForecastLog:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
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

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.row_factory = sqlite3.Row
        return db

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
