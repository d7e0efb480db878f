"""A recording azure-core transport that answers like Azure Table Storage (create table, upsert entity,
get entity, query with $filter), for the served ledger's Table adapter tested through the real `azure-data-tables`
client. Shapes follow the Table service REST API (JSON, `odata.error` on failure)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from azure.core.pipeline.transport import HttpTransport

from tests.unit.azure_recording_transport import ArmTransport, Call

_KEYS = re.compile(r"^/(?P<table>[A-Za-z0-9]+)\(PartitionKey='(?P<pk>.*)',RowKey='(?P<rk>.*)'\)$")
_CLAUSE = re.compile(r"^(\w+) (eq|le|lt|ge|gt) '((?:[^']|'')*)'$")


@dataclass
class TableTransport(HttpTransport):
    tables: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def __enter__(self) -> TableTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, request: Any, **kwargs: Any) -> Any:
        url = urlparse(request.url)
        raw = getattr(request, "content", None) or getattr(request, "body", None)
        body = json.loads(raw) if isinstance(raw, bytes | str) and raw else None
        path = unquote(url.path)
        call = Call(request.method, url.netloc, path, parse_qs(url.query), dict(request.headers), body)
        self.calls.append(call)
        respond = ArmTransport._respond
        if request.method == "POST" and path == "/Tables":
            name = body["TableName"]
            if name in self.tables:
                return respond(
                    request, 409, _error("TableAlreadyExists", "The table specified already exists.")
                )
            self.tables[name] = {}
            return respond(request, 201, {"TableName": name})
        keys = _KEYS.match(path)
        if request.method == "PUT" and keys:
            table = self.tables.get(keys["table"])
            if table is None:
                return respond(request, 404, _error("TableNotFound", "The table specified does not exist."))
            pk, rk = keys["pk"].replace("''", "'"), keys["rk"].replace("''", "'")
            table[(pk, rk)] = {k: v for k, v in body.items() if not k.endswith("@odata.type")}
            return respond(request, 204, None, {"ETag": "W/\"datetime'2026-11-27T17%3A00%3A00Z'\""})
        if request.method == "GET" and keys:  # get_entity: a point read
            table = self.tables.get(keys["table"])
            if table is None:
                return respond(request, 404, _error("TableNotFound", "The table specified does not exist."))
            found = table.get((keys["pk"].replace("''", "'"), keys["rk"].replace("''", "'")))
            if found is None:
                return respond(
                    request, 404, _error("ResourceNotFound", "The specified resource does not exist.")
                )
            return respond(request, 200, found)
        if request.method in ("PATCH", "MERGE") and keys:  # upsert in merge mode
            table = self.tables.get(keys["table"])
            if table is None:
                return respond(request, 404, _error("TableNotFound", "The table specified does not exist."))
            pk, rk = keys["pk"].replace("''", "'"), keys["rk"].replace("''", "'")
            merged = {
                **table.get((pk, rk), {}),
                **{k: v for k, v in body.items() if not k.endswith("@odata.type")},
            }
            table[(pk, rk)] = merged
            return respond(request, 204, None, {"ETag": "W/\"datetime'2026-11-27T17%3A00%3A01Z'\""})
        query = re.match(r"^/([A-Za-z0-9]+)\(\)$", path)
        if request.method == "GET" and query:
            table = self.tables.get(query[1])
            if table is None:
                return respond(request, 404, _error("TableNotFound", "The table specified does not exist."))
            text = (call.query.get("$filter") or [""])[0]
            rows = [e for e in table.values() if _matches(e, text)]
            return respond(request, 200, {"value": rows})
        return respond(request, 400, _error("InvalidInput", f"unexpected {request.method} {path}"))


def _error(code: str, message: str) -> dict[str, Any]:
    return {"odata.error": {"code": code, "message": {"lang": "en-US", "value": message}}}


def _matches(entity: dict[str, Any], text: str) -> bool:
    for clause in filter(None, (c.strip() for c in text.split(" and "))):
        parsed = _CLAUSE.match(clause)
        assert parsed, f"filter clause not understood by the test transport: {clause!r}"
        name, op, value = parsed[1], parsed[2], parsed[3].replace("''", "'")
        have = str(entity.get(name))
        ok = {
            "eq": have == value,
            "le": have <= value,
            "lt": have < value,
            "ge": have >= value,
            "gt": have > value,
        }
        if not ok[op]:
            return False
    return True
