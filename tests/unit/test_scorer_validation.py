"""The scorer's request validation, in-process: every kind of bad body is refused with a message that
names the problem, and good bodies become rows of exactly `window` closes (the newest last)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCORE_PY = Path(__file__).resolve().parents[2] / "scorer" / "score.py"


def _load_score_module():
    # scorer/ is the deployment's code folder, not a package: load it the way azmlinfsrv does, by path.
    spec = importlib.util.spec_from_file_location("scorer_score_under_test", SCORE_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


score = _load_score_module()
WINDOW = 5


def rows_of(payload, window=WINDOW, **kwargs):
    return score.validate_payload(score.parse_body(json.dumps(payload).encode()), window, **kwargs)


def refusal(body: bytes, window: int = WINDOW, **kwargs) -> str:
    with pytest.raises(score.ScoringInputError) as info:
        score.validate_payload(score.parse_body(body), window, **kwargs)
    return str(info.value)


def test_close_uses_the_last_window_values_newest_last():
    assert rows_of({"close": [1, 2, 3, 4, 5, 6, 7.5]}) == [[3.0, 4.0, 5.0, 6.0, 7.5]]


def test_close_of_exactly_window_values_is_accepted():
    assert rows_of({"close": [10.0, 11.0, 12.0, 13.0, 14.0]}) == [[10.0, 11.0, 12.0, 13.0, 14.0]]


def test_instances_each_cut_to_their_last_window_values():
    rows = rows_of({"instances": [[1, 2, 3, 4, 5], [9, 8, 7, 6, 5, 4, 3]]})
    assert rows == [[1.0, 2.0, 3.0, 4.0, 5.0], [7.0, 6.0, 5.0, 4.0, 3.0]]
    assert all(isinstance(v, float) for row in rows for v in row)


def test_instances_up_to_the_cap_are_accepted():
    assert len(rows_of({"instances": [[1.0] * WINDOW] * 7}, max_instances=7)) == 7


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"close=1,2,3", "not valid JSON"),
        (b'{"close": [1, 2, 3, 4, 5]', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2, 3, 4, 5]", "must be an object, got a list"),
        (b'"close"', "must be an object, got a string"),
        (b"null", "must be an object, got null"),
        (b"{}", "empty"),
        (b'{"prices": [1, 2, 3, 4, 5]}', "unexpected key(s) 'prices'"),
        (b'{"close": [1, 2, 3, 4, 5], "extra": true}', "unexpected key(s) 'extra'"),
        (
            b'{"close": [1, 2, 3, 4, 5], "instances": [[1, 2, 3, 4, 5]]}',
            'either "close" or "instances", not both',
        ),
        (b'{"close": [1, 2, 3, 4, 5], "close": [1, 2, 3, 4, 5]}', "duplicate key 'close'"),
        (b'{"close": [1, 2, 3, 4]}', '"close" has 4 values; the model needs at least 5'),
        (b'{"close": []}', '"close" has 0 values'),
        (b'{"close": 5}', '"close" must be a list of numbers, got a number'),
        (b'{"close": {"a": 1}}', '"close" must be a list of numbers, got an object'),
        (b'{"close": [1, 2, NaN, 4, 5]}', "NaN is not allowed"),
        (b'{"close": [1, 2, 3, 4, Infinity]}', "Infinity is not allowed"),
        (b'{"close": [1, 2, 3, 4, -Infinity]}', "-Infinity is not allowed"),
        (b'{"close": [1, 2, 3, 4, 1e400]}', '"close"[4] is not finite'),
        (b'{"close": [1, 2, 3, 4, 1' + b"0" * 400 + b"]}", '"close"[4] is too large'),
        (b'{"close": [1, 2, "3", 4, 5]}', '"close"[2] is a string "3"'),
        (b'{"close": [1, 2, true, 4, 5]}', '"close"[2] is a boolean true'),
        (b'{"close": [1, 2, null, 4, 5]}', '"close"[2] is null'),
        (b'{"close": [1, 2, [3], 4, 5]}', '"close"[2] is a list'),
        (b'{"close": [1, 2, 0, 4, 5]}', "positive price"),
        (b'{"close": [1, 2, -3.5, 4, 5]}', "positive price"),
        (b'{"instances": [1, 2, 3, 4, 5]}', '"instances"[0] must be a list of numbers, got a number'),
        (b'{"instances": []}', '"instances" is empty'),
        (b'{"instances": {"a": [1, 2, 3, 4, 5]}}', '"instances" must be a list of lists'),
        (b'{"instances": [[1, 2, 3, 4, 5], [1, 2, 3]]}', '"instances"[1] has 3 values'),
        (b'{"instances": [[1, 2, 3, 4, 5], [1, 2, 3, 4, false]]}', '"instances"[1][4] is a boolean'),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_bad_bodies_are_refused_with_the_reason(body, names):
    assert names in refusal(body)


def test_too_many_instances_are_refused():
    body = json.dumps({"instances": [[1.0] * WINDOW] * 4}).encode()
    assert '"instances" has 4 entries; at most 3 per request' in refusal(body, max_instances=3)


def test_default_instance_cap_is_enforced():
    body = json.dumps({"instances": [[1.0] * WINDOW] * (score.MAX_INSTANCES + 1)}).encode()
    assert f"at most {score.MAX_INSTANCES} per request" in refusal(body)


def test_oversized_body_is_refused_before_parsing():
    with pytest.raises(score.ScoringInputError, match="larger than 100 bytes"):
        score.parse_body(b'{"close": [' + b"1, " * 50 + b"1]}", max_bytes=100)


def test_the_guidance_names_both_shapes_the_window_and_the_limits():
    guidance = score.expected_input(20)
    assert '{"close": [at least 20 positive numbers' in guidance
    assert '{"instances": [[at least 20 positive numbers], ...]}' in guidance
    assert f"at most {score.MAX_INSTANCES} instances" in guidance
    assert f"at most {score.MAX_BODY_BYTES} bytes" in guidance
