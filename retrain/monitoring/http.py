"""HTTP routes of monitoring (a blueprint registered by function_app.py).

`GET /api/served/{ticker}?at=TIME`: which model versions served the ticker at TIME (ISO 8601; a date
alone is the end of that day, UTC; default now), with their endpoint, slot, weight and bundle (name,
version; null for a single-model deployment), and since when. 400 with what
to send for a bad ticker or time (not ISO 8601, before 1970, past year 9999 in UTC); 503 naming the file
when the served ledger cannot be read.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import azure.functions as func

bp = func.Blueprint()


def served_answer(ticker: str, at: str | None, environ: Any = None) -> dict[str, Any]:
    """The answer of the route and of `retrain served` (raises LedgerError / MarketDataError on bad input):
    per ticker, in any layout (`ledger.served_ticker`): the ledger's own index of the endpoints whose
    bundles held the ticker, then the ticker's own endpoint."""
    from retrain.adapters import get_ledger
    from retrain.market_data import validate_ticker
    from retrain.monitoring.ledger import parse_time, served_ticker

    symbol = validate_ticker(ticker)
    moment = parse_time(at) if at else dt.datetime.now(dt.UTC)
    return served_ticker(get_ledger(environ), symbol, moment, candidate_endpoints(symbol, environ))


def candidate_endpoints(ticker: str, environ: Any = None) -> list[str]:
    """Where to look for `ticker` besides the ledger's own index of the endpoints whose bundles held it:
    its own endpoint (today's layout, single models). The layout (RETRAIN_ENDPOINTS) is not read: the
    index answers for every group endpoint, including one the ticker has left."""
    from retrain import naming

    return [naming.endpoint_name(ticker)]


@bp.route(route="served/{ticker}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def served(req: func.HttpRequest) -> func.HttpResponse:
    from retrain.market_data import MarketDataError
    from retrain.monitoring.ledger import LedgerError
    from retrain.state_files import StateError

    unknown = sorted(set(req.params) - {"at", "code"})
    if unknown:
        return _json({"error": f"unknown parameter(s) {', '.join(unknown)}; send only ?at=TIME"}, 400)
    try:
        answer = served_answer(req.route_params.get("ticker", ""), req.params.get("at"))
    except (LedgerError, MarketDataError) as exc:
        return _json({"error": str(exc)}, 400)
    except StateError as exc:  # unreadable, corrupt, emptied or replaced: the operator must act
        return _json({"error": str(exc)}, 503)
    return _json(answer, 200)


def _json(body: Any, status_code: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status_code, mimetype="application/json")
