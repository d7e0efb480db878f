"""Requests and responses of the local Functions host: the parsed request, the response helpers, and
the guards every route applies (echoed values cut short, JSON nested too deeply refused)."""

from __future__ import annotations

import itertools
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from functions_host.functions import HttpResult

MAX_JSON_DEPTH = 64  # System.Text.Json's default MaxDepth, which the .NET host and extensions apply
MAX_ECHO_CHARS = 120  # a value quoted back in an error message is cut to this


@dataclass
class Request:
    method: str
    path: str  # percent-encoded path, without the query
    query: dict[str, str]  # first value of each parameter
    headers: Mapping[str, str]  # case-insensitive lookups via `header()`
    body: bytes
    origin: str  # scheme://host:port the client addressed

    def header(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lname), default)

    @property
    def url(self) -> str:
        qs = urllib.parse.urlencode(self.query)
        return f"{self.origin}{self.path}" + (f"?{qs}" if qs else "")


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> HttpResult:
    body = json.dumps(payload).encode()
    return HttpResult(status, [("Content-Type", "application/json; charset=utf-8"), *(headers or [])], body)


def text_response(status: int, message: str) -> HttpResult:
    return HttpResult(status, [("Content-Type", "text/plain; charset=utf-8")], message.encode())


def error_response(status: int, message: str, exception_message: str | None = None) -> HttpResult:
    # the shape of ASP.NET's CreateErrorResponse, which the Durable SDK reads (`ExceptionMessage`)
    return json_response(status, {"Message": message, "ExceptionMessage": exception_message or message})


def shown(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """`repr(value)` cut to `limit` characters: error messages never echo a huge value back."""
    text = repr(value) if not isinstance(value, str) else repr(value[: limit + 1])
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_BRACKET_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_nesting_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests arrays/objects deeper than `limit` (brackets inside strings don't count).
    Checked before parsing: Python's parser would raise RecursionError (a 500) on deep input. Runs at C
    speed (count, regex, translate, accumulate), so a large body costs little."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0) > limit


def too_deep(request: Request) -> HttpResult | None:
    """A 400 for a body nested too deeply, checked only once the caller's key was accepted (the check
    reads the whole body)."""
    if json_nesting_exceeds(request.body):
        return text_response(
            400,
            f"Bad Request: the JSON body nests deeper than {MAX_JSON_DEPTH} levels; send a flatter document",
        )
    return None


def provided_key(request: Request) -> str | None:
    """The key a caller sent: the x-functions-key header or the code query parameter."""
    return request.header("x-functions-key") or request.query.get("code")
