"""Which endpoint serves a ticker now, as the operator's commands see it (`retrain predict`, `retrain run`'s
prediction, `retrain traffic` / `retrain rollback` and their HTTP routes).

The layout (RETRAIN_ENDPOINTS) names the ticker's endpoint; a state dir (or workspace) from before endpoint
groups has the ticker's own `<ticker>-forecast` endpoint serving a single model, so that one is asked too.
The answer is the platform's: an endpoint serves the ticker when one of its deployed slots holds a bundle
that lists it, or the ticker's own single model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from retrain import naming, settings
from retrain.ports import EndpointState, is_bundle


@dataclass(frozen=True)
class TickerEndpoint:
    """The endpoint serving `ticker`: `bundled` (its slots serve bundles, so a request names the ticker) and
    every ticker it serves (a change of its traffic acts on all of them)."""

    ticker: str
    endpoint: EndpointState
    bundled: bool
    tickers: tuple[str, ...]


def layout_endpoint(ticker: str, environ: Any = None) -> str:
    """The ticker's endpoint under RETRAIN_ENDPOINTS (raises naming.NamingError for a bad value or suffix)."""
    groups = naming.parse_endpoint_groups(settings.get("RETRAIN_ENDPOINTS", environ))
    return naming.serving_target(ticker, groups, naming.endpoint_suffix(environ))


def candidate_endpoints(ticker: str, environ: Any = None) -> list[str]:
    """The layout's endpoint first, then the ticker's own (older state dirs), without repeats."""
    names = [layout_endpoint(ticker, environ), naming.endpoint_name(ticker, naming.endpoint_suffix(environ))]
    return list(dict.fromkeys(names))


def served_tickers(platform: Any, endpoint: EndpointState) -> tuple[bool, set[str], set[str]]:
    """(whether the endpoint's slots serve bundles, the tickers their bundles hold, the single models'
    names) over every deployed slot."""
    bundled = False
    tickers: set[str] = set()
    single_models: set[str] = set()
    for model in (endpoint.deployments or {}).values():
        if not model:
            continue
        if is_bundle(model):
            bundled = True
            bundle = platform.get_bundle(endpoint.name, str(model.get("version")))
            tickers.update(bundle.tickers if bundle else ())
        else:
            single_models.add(str(model.get("name")))
    return bundled, tickers, single_models


def find_ticker_endpoint(platform: Any, ticker: str, environ: Any = None) -> TickerEndpoint | None:
    """The endpoint that serves `ticker` (layout's first, then its own), or None when none does yet."""
    for name in candidate_endpoints(ticker, environ):
        state = platform.get_endpoint(name)
        if state.state == "NotFound":
            continue
        bundled, tickers, single_models = served_tickers(platform, state)
        if ticker in tickers:
            return TickerEndpoint(ticker, state, True, tuple(sorted(tickers)))
        if naming.model_name(ticker) in single_models:
            return TickerEndpoint(ticker, state, bundled, (ticker,))
    return None


def scoring_request(ticker: str, closes: list[float], bundled: bool) -> dict[str, Any]:
    """A bundle's request names the ticker; a single model (an older state dir's slot) takes only closes."""
    return {"ticker": ticker, "close": closes} if bundled else {"close": closes}
