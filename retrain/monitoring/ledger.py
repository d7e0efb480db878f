"""The served ledger: every traffic change of an endpoint, so "what served at time T?" has an answer.

One port (`ServedLedger`), two adapters, chosen by the composition root (`retrain.adapters.get_ledger`):
- `SqliteLedger`: `<state dir>/monitoring/ledger.sqlite` (the local platform);
- `TableLedger`: Azure Table Storage in the Function App's storage account (`azure-data-tables`,
  identity-based: `AzureWebJobsStorage__accountName` + the Function App's managed identity).

Each entry (`TrafficEvent`) is the endpoint's whole traffic table after one change (deploy at 0 %, canary,
promote, rollback, retire, restore on start), with the time, the orchestration id and the reason; one row
per slot. `served_at(events, at)` (pure) answers with the last event at or before `at`: the slots with
weight > 0, their model versions and weights. Appends never rewrite: the ledger only grows.

Bundles (docs/bundles.md): a slot that serves a bundle is recorded with the bundle's name and version
(`SlotRecord.bundle`), and the bundle's ticker -> model map is stored ONCE per (bundle name, version), the
first time a record names it (`record_bundle`). The map is stored, not looked up in the registry at query
time, so the ledger answers on its own: offline, from the CLI without a platform, and after a registry
clean-up; a bundle version is immutable, so the copy never goes stale. `served_ticker(ledger, T, at)`
answers per ticker in any layout: the endpoints that held T are found in the ledger's own index (every
endpoint whose recorded bundles held T) plus the caller's candidates (today's per-ticker endpoint); for
each, the slots live at `at` whose bundle holds T give T's model version (a single-model slot of T's
per-ticker endpoint answers as before).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from retrain.ports import BundleRef, is_bundle
from retrain.state_files import mark_created, refuse_lost_records
from retrain.vocabulary import TAG_INSTANCE_ID

REASONS = (
    "deploy",
    "canary",
    "promote",
    "rollback",
    "retire",
    "restore",
    "operator",
)  # operator: retrain traffic / rollback
TABLE_NAME = "retrainservedledger"
BUNDLE_MARKER = "~bundle"  # sorts after every ticker


class LedgerError(ValueError):
    """A ledger entry or query that cannot be accepted; the message says what to send."""


# No price, forecast or deployment exists before the Unix epoch: an earlier time is a typo (0999 for
# 1999), and years under 1000 would not even sort as text.
EARLIEST_TIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?")
_TIME_HELP = "send an ISO 8601 time from 1970 on, e.g. 2026-11-27T17:30:00Z, or a date YYYY-MM-DD"


def parse_time(value: str | dt.datetime | dt.date) -> dt.datetime:
    """An aware UTC datetime from ISO 8601 text (a date alone means the end of that day, UTC).

    Only `YYYY-MM-DD` and `YYYY-MM-DDTHH:MM[:SS[.ffffff]][Z|+HH:MM]` are read; a time before 1970 or one
    that has no UTC equivalent (9999-12-31T23:59:59-01:00) is a LedgerError that says what to send."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime.combine(value, dt.time.max)
    else:
        text = str(value).strip()
        shown = repr(text[:40]) + ("..." if len(text) > 40 else "")  # never echo a huge value
        try:
            if _DATE_RE.fullmatch(text):
                moment = dt.datetime.combine(dt.date.fromisoformat(text), dt.time.max)
            elif _DATETIME_RE.fullmatch(text):
                moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            else:
                raise ValueError(text)
        except ValueError:
            raise LedgerError(f"time {shown} is not ISO 8601; {_TIME_HELP}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        moment = moment.astimezone(dt.UTC)
    except OverflowError:
        raise LedgerError(f"time {moment.isoformat()} is past year 9999 in UTC; {_TIME_HELP}") from None
    if moment < EARLIEST_TIME:
        raise LedgerError(f"time {moment.isoformat()} is before 1970; {_TIME_HELP}")
    return moment


def format_time(moment: dt.datetime) -> str:
    """Fixed-width UTC text, so that text order is time order (Table Storage sorts RowKeys as text).
    The year is always four digits (`strftime("%Y")` writes 999, which sorts after 2026)."""
    utc = moment.astimezone(dt.UTC)
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S.%f}Z"


@dataclass(frozen=True)
class SlotRecord:
    slot: str
    weight: int
    model_name: str | None = None  # a bundle's name when `bundle`
    model_version: str | None = None
    bundle: bool = False  # the slot serves a bundle: its per-ticker models are in `bundle_entry`


@dataclass(frozen=True)
class TrafficEvent:
    time: str  # format_time(...)
    endpoint: str
    reason: str
    slots: tuple[SlotRecord, ...] = field(default_factory=tuple)
    instance_id: str | None = None
    event_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "slots": [asdict(s) for s in self.slots]}


def traffic_event(
    endpoint: str,
    reason: str,
    traffic: Mapping[str, int],
    deployments: Mapping[str, Mapping[str, Any] | None] | None = None,
    *,
    instance_id: str | None = None,
    at: dt.datetime | None = None,
) -> TrafficEvent:
    """A validated event from a traffic table (slot -> percent) and the slots' models (slot -> ModelRef dict)."""
    if reason not in REASONS:
        raise LedgerError(f"reason {reason!r}: send one of {', '.join(REASONS)}")
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise LedgerError("endpoint must be a non-empty name")
    slots = []
    for slot in sorted(set(traffic) | set(deployments or {})):
        weight = int((traffic or {}).get(slot, 0))
        if not 0 <= weight <= 100:
            raise LedgerError(f"weight of slot {slot} is {weight}; send a percentage from 0 to 100")
        model = (deployments or {}).get(slot) or {}
        slots.append(
            SlotRecord(
                str(slot), weight, model.get("name"), _text(model.get("version")), is_bundle(dict(model))
            )
        )
    total = sum(s.weight for s in slots)
    if total not in (0, 100):
        raise LedgerError(
            f"weights add up to {total}; a traffic table adds up to 100 (or 0 when nothing serves)"
        )
    return TrafficEvent(
        time=format_time(at or dt.datetime.now(dt.UTC)),
        endpoint=endpoint,
        reason=reason,
        slots=tuple(slots),
        instance_id=instance_id,
        event_id=uuid.uuid4().hex[:12],
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def served_at(events: Sequence[TrafficEvent], at: str | dt.datetime) -> dict[str, Any]:
    """What served at `at`: the slots with weight > 0 in the last event at or before it (pure)."""
    moment = format_time(parse_time(at))
    earlier = [e for e in events if e.time <= moment]
    if not earlier:
        return {"at": moment, "serving": [], "since": None, "reason": None, "instance_id": None}
    last = max(earlier, key=lambda e: (e.time, e.event_id))
    serving = [
        {"slot": s.slot, "model_name": s.model_name, "model_version": s.model_version, "weight": s.weight}
        for s in last.slots
        if s.weight > 0
    ]
    return {
        "at": moment,
        "endpoint": last.endpoint,
        "serving": serving,
        "since": last.time,
        "reason": last.reason,
        "instance_id": last.instance_id,
    }


def served_ticker(
    ledger: ServedLedger,
    ticker: str,
    at: str | dt.datetime,
    candidates: Sequence[str] = (),
) -> dict[str, Any]:
    """What served `ticker` at `at`, in any layout: for each endpoint that held it (the ledger's index,
    then `candidates`: today's per-ticker endpoint), the slots live in that
    endpoint's last event at or before `at` that serve the ticker, i.e. a single model on the ticker's own
    endpoint (`single_model_endpoint`, the first candidate) or a bundle that holds it. Each serving entry:
    endpoint, slot, weight, model_name, model_version, bundle ({name, version} or None). A bundle whose map
    the ledger lacks (its record was lost) is answered with model None and a `missing` note, never guessed.
    `since`/`reason`/`instance_id` are those of the newest event that answered."""
    moment = format_time(parse_time(at))
    known = ledger.endpoints_of(ticker) if isinstance(ledger, BundleLedger) else []
    endpoints = list(dict.fromkeys([*known, *candidates]))
    own = candidates[0] if candidates else None
    serving: list[dict[str, Any]] = []
    newest: TrafficEvent | None = None
    count = 0
    for endpoint in endpoints:
        events = ledger.events(endpoint, until=moment)
        count += len(events)
        if not events:
            continue
        last = max(events, key=lambda e: (e.time, e.event_id))
        found = []
        for s in last.slots:
            if s.weight <= 0:
                continue
            entry: dict[str, Any] = {"endpoint": endpoint, "slot": s.slot, "weight": s.weight}
            if not s.bundle:
                if endpoint != own:
                    continue  # a single model on another endpoint serves another ticker
                found.append(
                    {**entry, "model_name": s.model_name, "model_version": s.model_version, "bundle": None}
                )
                continue
            bundle = {"name": s.model_name, "version": s.model_version}
            held = (
                ledger.bundle_entry(str(s.model_name), str(s.model_version), ticker)
                if isinstance(ledger, BundleLedger)
                else None
            )
            if held is not None:
                found.append(
                    {
                        **entry,
                        "model_name": held["model_name"],
                        "model_version": held["model_version"],
                        "bundle": bundle,
                    }
                )
            elif isinstance(ledger, BundleLedger) and not ledger.has_bundle(
                str(s.model_name), str(s.model_version)
            ):
                found.append(
                    {
                        **entry,
                        "model_name": None,
                        "model_version": None,
                        "bundle": bundle,
                        "missing": "the ledger has no ticker map of this bundle (its record was lost)",
                    }
                )
        if found:
            serving.extend(found)
            if newest is None or (last.time, last.event_id) > (newest.time, newest.event_id):
                newest = last
    return {
        "ticker": ticker,
        "at": moment,
        "endpoint": newest.endpoint if newest else own,
        "serving": serving,
        "since": newest.time if newest else None,
        "reason": newest.reason if newest else None,
        "instance_id": newest.instance_id if newest else None,
        "events": count,
    }


@runtime_checkable
class ServedLedger(Protocol):
    def append(self, event: TrafficEvent) -> None: ...

    def events(self, endpoint: str, until: str | dt.datetime | None = None) -> list[TrafficEvent]: ...


@runtime_checkable
class BundleLedger(ServedLedger, Protocol):
    """A ledger that also keeps each bundle's ticker -> model map (both adapters are one)."""

    def has_bundle(self, name: str, version: str) -> bool: ...

    def record_bundle(self, bundle: BundleRef) -> None: ...

    def bundle_entry(self, name: str, version: str, ticker: str) -> dict[str, Any] | None: ...

    def endpoints_of(self, ticker: str) -> list[str]: ...


ENTRY_FIELDS = ("model_name", "model_version", "family", "fitted_data_end")


def _entry(bundle: BundleRef, ticker: str) -> dict[str, Any]:
    raw = bundle.tickers[ticker]
    return {k: _text(raw.get(k)) for k in ENTRY_FIELDS}


# ------------------------------------------------------------------------------------------ SQLite


class SqliteLedger:
    """The ledger in one SQLite file (WAL, one row per slot of each event)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        from retrain.state_files import ensure_parent

        ensure_parent(self.path)
        refuse_lost_records(self.path, ["served"], "the served ledger (every traffic change)")
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS served ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, time TEXT NOT NULL,"
                " endpoint TEXT NOT NULL, reason TEXT NOT NULL, instance_id TEXT, slot TEXT NOT NULL,"
                " weight INTEGER NOT NULL, model_name TEXT, model_version TEXT)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS served_by_time ON served (endpoint, time)")
            columns = {row[1] for row in db.execute("PRAGMA table_info(served)")}
            if "bundle" not in columns:  # a ledger written before bundles: its slots served single models
                db.execute("ALTER TABLE served ADD COLUMN bundle INTEGER NOT NULL DEFAULT 0")
            # One row per bundle version (written with its tickers, in one transaction) and one per
            # (bundle version, ticker): a bundle's map is stored once, however many records name it.
            db.execute(
                "CREATE TABLE IF NOT EXISTS served_bundles (bundle_name TEXT NOT NULL,"
                " bundle_version TEXT NOT NULL, endpoint TEXT NOT NULL, parent_version TEXT,"
                " PRIMARY KEY (bundle_name, bundle_version))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS served_bundle_tickers (bundle_name TEXT NOT NULL,"
                " bundle_version TEXT NOT NULL, endpoint TEXT NOT NULL, ticker TEXT NOT NULL,"
                " model_name TEXT, model_version TEXT, family TEXT, fitted_data_end TEXT,"
                " PRIMARY KEY (bundle_name, bundle_version, ticker))"
            )
            db.execute(
                "CREATE INDEX IF NOT EXISTS bundle_tickers_by_ticker ON served_bundle_tickers (ticker)"
            )
        mark_created(self.path)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        # One transaction per block, closed after it; a bad file is a StateError that names it.
        from retrain.state_files import sqlite_connection

        return sqlite_connection(self.path)

    def append(self, event: TrafficEvent) -> None:
        rows = [
            (
                event.event_id,
                event.time,
                event.endpoint,
                event.reason,
                event.instance_id,
                s.slot,
                s.weight,
                s.model_name,
                s.model_version,
                int(s.bundle),
            )
            for s in event.slots
        ] or [
            (
                event.event_id,
                event.time,
                event.endpoint,
                event.reason,
                event.instance_id,
                "",
                0,
                None,
                None,
                0,
            )
        ]
        with self._connect() as db:  # one transaction: an event is all its rows or none
            db.executemany(
                "INSERT INTO served (event_id, time, endpoint, reason, instance_id, slot, weight, model_name,"
                " model_version, bundle) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def has_bundle(self, name: str, version: str) -> bool:
        with self._connect() as db:
            found = db.execute(
                "SELECT 1 FROM served_bundles WHERE bundle_name = ? AND bundle_version = ?", (name, version)
            ).fetchone()
        return found is not None

    def record_bundle(self, bundle: BundleRef) -> None:
        rows = [
            (bundle.name, bundle.version, bundle.endpoint, t, *_entry(bundle, t).values())
            for t in bundle.tickers
        ]
        with self._connect() as db:  # the bundle and all its tickers, or none; a repeat is a no-op
            db.execute(
                "INSERT OR IGNORE INTO served_bundles (bundle_name, bundle_version, endpoint, parent_version)"
                " VALUES (?, ?, ?, ?)",
                (bundle.name, bundle.version, bundle.endpoint, bundle.parent_version),
            )
            db.executemany(
                "INSERT OR IGNORE INTO served_bundle_tickers (bundle_name, bundle_version, endpoint, ticker,"
                " model_name, model_version, family, fitted_data_end) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def bundle_entry(self, name: str, version: str, ticker: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT model_name, model_version, family, fitted_data_end FROM served_bundle_tickers"
                " WHERE bundle_name = ? AND bundle_version = ? AND ticker = ?",
                (name, version, ticker),
            ).fetchone()
        return None if row is None else dict(zip(ENTRY_FIELDS, row, strict=True))

    def endpoints_of(self, ticker: str) -> list[str]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT DISTINCT endpoint FROM served_bundle_tickers WHERE ticker = ? ORDER BY endpoint",
                (ticker,),
            ).fetchall()
        return [r[0] for r in rows]

    def events(self, endpoint: str, until: str | dt.datetime | None = None) -> list[TrafficEvent]:
        query = (
            "SELECT event_id, time, endpoint, reason, instance_id, slot, weight, model_name, model_version,"
            " bundle"
        )
        query += " FROM served WHERE endpoint = ?"
        params: list[Any] = [endpoint]
        if until is not None:
            query += " AND time <= ?"
            params.append(format_time(parse_time(until)))
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY seq", params).fetchall()
        return _group(rows)


def _group(rows: Sequence[Sequence[Any]]) -> list[TrafficEvent]:
    grouped: dict[str, dict[str, Any]] = {}
    for event_id, time, endpoint, reason, instance_id, slot, weight, name, version, bundle in rows:
        event = grouped.setdefault(
            event_id,
            {"time": time, "endpoint": endpoint, "reason": reason, "instance_id": instance_id, "slots": []},
        )
        if slot:
            event["slots"].append(SlotRecord(slot, int(weight), name, version, bool(bundle)))
    return [
        TrafficEvent(
            time=e["time"],
            endpoint=e["endpoint"],
            reason=e["reason"],
            slots=tuple(sorted(e["slots"], key=lambda s: s.slot)),
            instance_id=e["instance_id"],
            event_id=event_id,
        )
        for event_id, e in grouped.items()
    ]


# ------------------------------------------------------------------------------------ Table Storage


class TableLedger:
    """The ledger in an Azure Table: one entity per event (its slots as JSON, so an append is a single
    atomic write), PartitionKey = endpoint, RowKey = `<time>|<event id>` (text order is time order), so
    "events up to T" is one range query on one partition.

    Bundles, in the same table (endpoint names are `[a-z0-9-]`, so these partitions never meet theirs):
    - `bundle|<name>|<version>` / `<ticker>`: one small entity per (bundle, ticker), so no entity nears the
      1 MB entity or 64 KB property limits whatever the bundle's size; `bundle_entry` is a point read;
    - `bundle|<name>|<version>` / `~bundle`: the marker, written after every ticker's entity, so a marker
      means the map is complete (`has_bundle`); an interrupted write is completed by the next record;
    - `index|<endpoint>` / `<ticker>`: the endpoints that held a ticker (`endpoints_of`: one query over
      the index partitions, whose size is the fleet's, not the history's)."""

    def __init__(self, table_client: Any) -> None:
        self.table = table_client
        self._created = False

    @classmethod
    def from_account(
        cls, account_name: str, credential: Any, table_name: str = TABLE_NAME, **client_options: Any
    ) -> TableLedger:
        from azure.data.tables import TableClient

        endpoint = f"https://{account_name}.table.core.windows.net"
        client = TableClient(endpoint, table_name, credential=credential, **client_options)
        return cls(client)

    def _ensure_table(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        if not self._created:
            with contextlib.suppress(ResourceExistsError):
                self.table.create_table()
            self._created = True

    def append(self, event: TrafficEvent) -> None:
        from azure.data.tables import UpdateMode

        self._ensure_table()
        entity = {
            "PartitionKey": event.endpoint,
            "RowKey": f"{event.time}|{event.event_id}",
            "time": event.time,
            "event_id": event.event_id,
            "reason": event.reason,
            "instance_id": event.instance_id or "",
            "slots": json.dumps([asdict(s) for s in event.slots]),
        }
        self.table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def events(self, endpoint: str, until: str | dt.datetime | None = None) -> list[TrafficEvent]:
        from azure.core.exceptions import ResourceNotFoundError

        query = "PartitionKey eq @endpoint"
        params: dict[str, Any] = {"endpoint": endpoint}
        if until is not None:
            query += " and RowKey le @until"
            params["until"] = format_time(parse_time(until)) + "|~"
        try:
            found = sorted(self.table.query_entities(query, parameters=params), key=lambda e: e["RowKey"])
        except ResourceNotFoundError:
            return []
        return [
            TrafficEvent(
                time=e["time"],
                endpoint=e["PartitionKey"],
                reason=e["reason"],
                slots=tuple(SlotRecord(**slot) for slot in json.loads(e.get("slots") or "[]")),
                instance_id=e.get("instance_id") or None,
                event_id=e["event_id"],
            )
            for e in found
        ]

    def _get(self, partition: str, row: str) -> dict[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return dict(self.table.get_entity(partition, row))
        except ResourceNotFoundError:  # no such entity, or no table yet
            return None

    def has_bundle(self, name: str, version: str) -> bool:
        return self._get(f"bundle|{name}|{version}", BUNDLE_MARKER) is not None

    def record_bundle(self, bundle: BundleRef) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import UpdateMode

        self._ensure_table()
        partition = f"bundle|{bundle.name}|{bundle.version}"
        for ticker in bundle.tickers:  # upserts: a repeated or resumed write is harmless
            entity = {"PartitionKey": partition, "RowKey": ticker, "endpoint": bundle.endpoint}
            entity.update({k: v or "" for k, v in _entry(bundle, ticker).items()})
            self.table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        index = f"index|{bundle.endpoint}"
        try:
            indexed = {
                e["RowKey"] for e in self.table.query_entities("PartitionKey eq @p", parameters={"p": index})
            }
        except ResourceNotFoundError:
            indexed = set()
        for ticker in sorted(set(bundle.tickers) - indexed):
            self.table.upsert_entity({"PartitionKey": index, "RowKey": ticker}, mode=UpdateMode.REPLACE)
        marker = {
            "PartitionKey": partition,
            "RowKey": BUNDLE_MARKER,
            "endpoint": bundle.endpoint,
            "parent_version": bundle.parent_version or "",
            "tickers": len(bundle.tickers),
        }
        self.table.upsert_entity(marker, mode=UpdateMode.REPLACE)

    def bundle_entry(self, name: str, version: str, ticker: str) -> dict[str, Any] | None:
        found = self._get(f"bundle|{name}|{version}", ticker)
        return None if found is None else {k: found.get(k) or None for k in ENTRY_FIELDS}

    def endpoints_of(self, ticker: str) -> list[str]:
        from azure.core.exceptions import ResourceNotFoundError

        query = "PartitionKey ge @low and PartitionKey lt @high and RowKey eq @ticker"
        params = {"low": "index|", "high": "index}", "ticker": ticker}
        try:
            found = self.table.query_entities(query, parameters=params)
            return sorted({e["PartitionKey"].removeprefix("index|") for e in found})
        except ResourceNotFoundError:
            return []


def events_as_json(events: Sequence[TrafficEvent]) -> str:
    return json.dumps([e.to_dict() for e in events])


def infer_reason(traffic: Mapping[str, int], deployments: Mapping[str, Mapping[str, Any] | None]) -> str:
    """The kind of a traffic change from its table alone: two live slots is a canary; everything on the
    slot with the newest model is a promote; everything back on an older model (or nothing live) is a
    rollback. (The workflow's traffic changes carry no reason of their own.)"""
    live = [slot for slot, weight in traffic.items() if int(weight) > 0]
    if len(live) > 1:
        return "canary"
    if not live:
        return "rollback"
    versions = {slot: _version_key((model or {}).get("version")) for slot, model in deployments.items()}
    newest = max(versions.values(), default=(0, 0))
    return "promote" if versions.get(live[0], newest) >= newest else "rollback"


def _version_key(version: Any) -> tuple[int, int]:
    text = str(version or "")
    return (1, int(text)) if text.isdigit() else (0, 0)


def _record_bundles(
    platform: Any,
    endpoint: str,
    ledger: ServedLedger,
    deployments: Mapping[str, Mapping[str, Any] | None],
    given: Sequence[BundleRef | Mapping[str, Any]],
) -> list[str]:
    """Store the ticker map of each bundle the slots serve that the ledger does not have yet; returns the
    bundles ("name version N") whose map could not be had."""
    served = {(str(m["name"]), str(m["version"])) for m in deployments.values() if m and is_bundle(dict(m))}
    if not served:
        return []
    if not isinstance(ledger, BundleLedger):
        return [f"{name} version {version}" for name, version in sorted(served)]
    refs: dict[tuple[str, str], BundleRef] = {}
    for item in given:
        one = item if isinstance(item, BundleRef) else BundleRef.from_dict(dict(item))
        refs[(one.name, str(one.version))] = one
    missing = []
    for name, version in sorted(served):
        if ledger.has_bundle(name, version):
            continue
        ref: BundleRef | None = refs.get((name, version))
        try:
            if ref is None:
                ref = platform.get_bundle(endpoint, version)
            if ref is None or ref.name != name:
                missing.append(f"{name} version {version}")
                continue
            ledger.record_bundle(ref)
        except Exception as exc:  # noqa: BLE001 - the event is still recorded; the warning says what is missing
            missing.append(f"{name} version {version} ({type(exc).__name__}: {str(exc)[:200]})")
    return missing


APPEND_ATTEMPTS = 3
APPEND_BACKOFF_S = (0.2, 1.0)  # between attempts: a locked or briefly unavailable store recovers


def append_with_retry(ledger: ServedLedger | None, event: TrafficEvent) -> None:
    """Append `event`, retrying (bounded) a store that fails; raises the last failure."""
    import time

    from retrain.adapters import get_ledger

    for attempt in range(APPEND_ATTEMPTS):
        try:
            (ledger or get_ledger()).append(event)
            return
        except Exception:
            if attempt == APPEND_ATTEMPTS - 1:
                raise
            time.sleep(APPEND_BACKOFF_S[min(attempt, len(APPEND_BACKOFF_S) - 1)])


def record_traffic_change(
    platform: Any,
    endpoint: str,
    reason: str | None,
    *,
    traffic: Mapping[str, int] | None = None,
    new_model: tuple[str, Mapping[str, Any]] | None = None,
    removed_slot: str | None = None,
    ledger: ServedLedger | None = None,
    instance_id: str | None = None,
    bundles: Sequence[BundleRef | Mapping[str, Any]] = (),
    at: dt.datetime | None = None,
) -> TrafficEvent | str:
    """Append the endpoint's traffic after a change to the ledger (retried, `append_with_retry`). The
    rollout must not fail because the ledger did: a failure is logged and returned as a warning text
    (the cycle puts it in its status' `warnings`), never dropped silently. `instance_id`: the
    orchestration that made the change; without it, the newest deployed model's `instance_id` tag (which
    Azure's deployment listing does not carry).

    Bundles: a slot whose model is a bundle (`ports.is_bundle`: `BundleRef.as_model()`, tags bundle=true)
    is recorded with the bundle's name and version; its ticker -> model map is stored once, before the
    event, the first time a record names that bundle version. The map comes from `bundles` (the rollout
    passes the BundleRefs it has, or their `to_dict()`: the new bundle and the one serving), else from
    `platform.get_bundle(endpoint, version)`. A bundle whose map cannot be had still gets its event
    recorded, and the warning text is returned (`served` then says the map is missing)."""
    import logging

    from retrain.adapters import get_ledger

    try:
        state = platform.get_endpoint(endpoint)
        table = {str(k): int(v) for k, v in (traffic if traffic is not None else state.traffic).items()}
        deployments: dict[str, Mapping[str, Any] | None] = dict(state.deployments or {})
        if new_model is not None:
            deployments[new_model[0]] = dict(new_model[1])
            table.setdefault(new_model[0], 0)
        if removed_slot is not None:
            deployments.pop(removed_slot, None)
            table.pop(removed_slot, None)
        kind = reason or infer_reason(table, deployments)
        newest = max(deployments.values(), key=lambda m: _version_key((m or {}).get("version")), default=None)
        instance_id = instance_id or ((newest or {}).get("tags") or {}).get(TAG_INSTANCE_ID)
        event = traffic_event(endpoint, kind, table, deployments, instance_id=instance_id, at=at)
        store = ledger or get_ledger()
        missing = _record_bundles(platform, endpoint, store, deployments, bundles)
        append_with_retry(store, event)
        if missing:
            warning = (
                f"served ledger: the {kind} change on {endpoint} was recorded without the ticker map of "
                f"{', '.join(missing)}; GET /api/served cannot say which model served each ticker through it"
            )
            logging.getLogger(__name__).error("%s", warning)
            return warning
        return event
    except Exception as exc:  # noqa: BLE001 - the ledger is a record, never a reason to roll back
        warning = (
            f"served ledger: the {reason or 'traffic'} change on {endpoint} was NOT recorded "
            f"({type(exc).__name__}: {str(exc)[:300]}); GET /api/served and the monitor miss it"
        )
        logging.getLogger(__name__).error("%s", warning)
        return warning
