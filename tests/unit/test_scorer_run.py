"""`run()` in-process on real werkzeug requests (what `@rawhttp` hands it): the HTTP status and message
for each way a request can be wrong before the model is ever called."""

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
from flask import Request
from werkzeug.test import EnvironBuilder

SCORE_PY = Path(__file__).resolve().parents[2] / "scorer" / "score.py"


def _load_score_module():
    spec = importlib.util.spec_from_file_location("scorer_score_under_test_run", SCORE_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


score = _load_score_module()


@pytest.fixture
def loaded_window_5(monkeypatch):
    # Every request below is refused before prediction, so no model object is needed, only its window.
    model = score.LoadedModel(
        pyfunc=None, identity=score.ModelIdentity("msft-forecaster", "1"), window=5, path=Path(".")
    )
    monkeypatch.setattr(score, "_model", model)
    return model


def request(method: str = "POST", body: bytes = b"", content_length: int | None = None) -> Request:
    environ = EnvironBuilder(method=method, path="/score", input_stream=io.BytesIO(body)).get_environ()
    if content_length is None:
        # As gunicorn passes a chunked body: no length, the stream ends where the body ends.
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input_terminated"] = True
    else:
        environ["CONTENT_LENGTH"] = str(content_length)
    return Request(environ)


def answer(response) -> tuple[int, str]:
    return response.status_code, json.loads(response.get_data())["message"]


def test_get_is_told_to_post(loaded_window_5):
    response = score.run(request("GET"))
    status, message = answer(response)
    assert status == 405 and response.headers["Allow"] == "POST"
    assert "Use POST /score" in message and '{"close": [at least 5' in message


def test_bad_json_is_400_with_guidance(loaded_window_5):
    body = b"{close: [1, 2, 3]}"
    status, message = answer(score.run(request(body=body, content_length=len(body))))
    assert status == 400
    assert message.startswith("Bad request: request body is not valid JSON")
    assert "Send a JSON object" in message


def test_declared_oversized_body_is_400(loaded_window_5):
    body = b"1" * (score.MAX_BODY_BYTES + 10)
    status, message = answer(score.run(request(body=body, content_length=len(body))))
    assert status == 400
    assert f"request body is {len(body)} bytes; at most {score.MAX_BODY_BYTES} allowed" in message


def test_oversized_body_without_length_is_400(loaded_window_5):
    status, message = answer(score.run(request(body=b"1" * (score.MAX_BODY_BYTES + 1))))
    assert status == 400
    assert f"larger than {score.MAX_BODY_BYTES} bytes" in message


def test_body_shorter_than_its_content_length_is_400(loaded_window_5):
    status, message = answer(score.run(request(body=b'{"close": [1', content_length=100)))
    assert status == 400
    assert "ended before the length its Content-Length header announced" in message


def test_valid_looking_request_before_init_is_a_generic_500(monkeypatch):
    monkeypatch.setattr(score, "_model", None)
    body = json.dumps({"close": [1.0, 2.0, 3.0, 4.0, 5.0]}).encode()
    status, message = answer(score.run(request(body=body, content_length=len(body))))
    assert status == 500
    assert message == "Internal error while scoring; the server log has the details."
