"""The pure ``invocations`` handler, without Flask, on a hand-built dot-product model."""

import json
from dataclasses import replace

import numpy as np
import pytest

from helpers.serving import random_model
from recsys.serving.handler import INTERNAL_ERROR, invocations
from recsys.serving.predict import Predictor
from recsys.serving.settings import DEFAULT_LIMITS


@pytest.fixture(scope="module")
def predictor():
    return Predictor(random_model(n_users=50, n_items=200, dim=8, seed=1))


def call(predictor, body, content_type="application/json", accept=None, limits=DEFAULT_LIMITS):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return invocations(predictor, payload, content_type, accept, limits)


def ok(predictor, body, **kw):
    response = call(predictor, body, **kw)
    assert response.status == 200, response.body
    return json.loads(response.body)["predictions"]


def test_top_k_numbers_and_strings_are_the_same_id(predictor):
    a, b, c = ok(predictor, {"users": ["100", 100, 100.0], "k": 5})
    assert a["items"] == b["items"] == c["items"] and len(a["items"]) == 5
    assert [a["user"], b["user"], c["user"]] == ["100", 100, 100.0]  # echoed as sent
    assert all(isinstance(i, str) for i in a["items"]) and "cold_start" not in a


def test_top_k_default_k_and_user_alias(predictor):
    (pred,) = ok(predictor, {"user": "101"})
    assert len(pred["items"]) == DEFAULT_LIMITS.default_k


def test_exclude_seen_default_and_off(predictor):
    model = predictor.model
    user = int(np.argmax(np.diff(model.seen_indptr)))
    seen = set(model.items.raw(model.seen_items(user)))
    raw = model.users.ids[user]
    (pred,) = ok(predictor, {"users": [raw], "k": 200})
    assert not seen & set(pred["items"]) and len(pred["items"]) == 200 - len(seen)
    (pred,) = ok(predictor, {"users": [raw], "k": 200, "exclude_seen": False})
    assert seen <= set(pred["items"])


def test_cold_start_user(predictor):
    (pred,) = ok(predictor, {"users": ["nobody"], "k": 3})
    assert pred["cold_start"] is True and pred["user"] == "nobody"
    assert pred["items"] == predictor.model.items.raw(predictor.ranker.by_popularity[:3])


def test_candidates_with_unknown_items_rank_last(predictor):
    (pred,) = ok(predictor, {"users": ["100"], "k": 10, "candidates": ["1001", 1002, "zzz"], "exclude_seen": False})
    assert sorted(pred["items"][:2]) == ["1001", "1002"] and pred["items"][2] == "zzz"
    assert pred["scores"][2] is None and pred["unknown_items"] == ["zzz"]


def test_rank_pairs_lotteon_form(predictor):
    preds = ok(predictor, {"user": [100, 100, 101, 100, "ghost"], "item": [1001, 1002, 1003, "nope", 1004]})
    assert [p["user"] for p in preds] == [100, 101, "ghost"]  # one per distinct user, first-appearance order
    first = preds[0]
    assert set(first["items"]) == {"1001", "1002", "nope"} and first["items"][-1] == "nope"
    assert first["scores"][-1] is None and first["unknown_items"] == ["nope"]
    assert first["scores"][0] >= first["scores"][1]
    assert preds[2]["cold_start"] is True


def test_rank_pairs_one_user_many_items_and_k(predictor):
    (pred,) = ok(predictor, {"user": "100", "item": [1001, 1002, 1003], "k": 2})
    assert len(pred["items"]) == 2


def test_similar_items(predictor):
    a, b = ok(predictor, {"similar_to": ["1000", "unknown-item"], "k": 4})
    assert a["item"] == "1000" and "1000" not in a["items"] and len(a["items"]) == 4
    assert b["cold_start"] is True


def test_json_lines_n_in_n_out(predictor):
    lines = [{"users": ["100"]}, {"similar_to": 1000, "k": 2}, {"users": ["101"], "k": 3}, {"users": ["100"]}]
    body = "\n".join(json.dumps(x) for x in lines).encode() + b"\n"
    response = call(predictor, body, content_type="application/jsonlines")
    assert response.status == 200 and response.mimetype == "application/jsonlines"
    out = response.body.decode().split("\n")
    assert len(out) == 4 and not response.body.endswith(b"\n")
    parsed = [json.loads(x)["predictions"] for x in out]
    assert parsed[0][0]["user"] == "100" and parsed[1][0]["item"] == 1000 and len(parsed[2][0]["items"]) == 3
    assert parsed[0] == parsed[3]
    # batching the top-K lines together gives the same answers as one line at a time
    assert parsed[2] == ok(predictor, {"users": ["101"], "k": 3})


def test_csv_in_csv_out(predictor):
    response = call(predictor, b"100,1001\n100,1002\n", content_type="text/csv", accept="text/csv")
    assert response.status == 200 and response.mimetype == "text/csv"
    rows = [r.split(",") for r in response.body.decode().split("\n")]
    assert [r[0] for r in rows] == ["100", "100"] and [r[3] for r in rows] == ["1", "2"]
    response = call(predictor, b"100\n101\n", content_type="text/csv")
    preds = json.loads(response.body)["predictions"]
    assert [p["user"] for p in preds] == ["100", "101"] and len(preds[0]["items"]) == DEFAULT_LIMITS.default_k


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "not valid JSON"),
        ([1, 2], "must be a JSON object"),
        ({}, "needs `users`"),
        ({"users": ["100"], "k": 0}, "`k` must be between 1 and 200"),
        ({"users": ["100"], "k": 201}, "`k` must be between 1 and 200"),
        ({"users": ["100"], "k": "ten"}, "`k` must be an integer"),
        ({"users": [None]}, "ids must be strings or numbers"),
        ({"users": [{"id": 1}]}, "ids must be strings or numbers"),
        ({"users": [True]}, "ids must be strings or numbers"),
        ({"users": ["100"], "exclude_seen": "yes"}, "exclude_seen"),
        ({"users": ["100"], "exclude": "1001"}, "must be an array"),
        ({"users": ["100"], "exclude_popular": -1}, "exclude_popular"),
        ({"users": ["100"], "exlude": []}, "unknown field"),
        ({"users": ["100"], "user": "100"}, "either `users` or `user`"),
        ({"user": [1, 2], "item": [1, 2, 3]}, "same length"),
        ({"item": [1]}, "needs `user`"),
        ({"similar_to": ["1000"], "exclude_seen": True}, "unknown field"),
    ],
)
def test_bad_requests_are_400_with_a_message(predictor, body, message):
    response = call(predictor, body)
    assert response.status == 400 and response.mimetype == "application/json"
    assert message in json.loads(response.body)["error"]


def test_too_many_users(predictor):
    response = call(predictor, {"users": ["1", "2", "3", "4"]}, limits=replace(DEFAULT_LIMITS, max_users=3))
    assert response.status == 400 and "at most 3" in json.loads(response.body)["error"]


def test_status_codes_415_406(predictor):
    assert call(predictor, b"x", content_type="image/png").status == 415
    assert call(predictor, {"users": ["100"]}, accept="text/html").status == 406


def test_bad_line_in_json_lines_names_the_line(predictor):
    response = call(predictor, b'{"users": ["100"]}\n{"users": ["100"], "k": -1}', content_type="application/jsonlines")
    assert response.status == 400 and json.loads(response.body)["error"].startswith("line 2:")


class Broken(Predictor):
    def predict(self, queries):
        raise ValueError("secret internal detail")


def test_a_bug_is_a_generic_500_without_traceback(predictor, caplog):
    broken = Broken(predictor.model)
    response = call(broken, {"users": ["100"]})
    assert response.status == 500 and json.loads(response.body) == {"error": INTERNAL_ERROR}
    assert b"secret" not in response.body and b"Traceback" not in response.body
    assert "secret internal detail" in caplog.text  # the log has it
    assert call(predictor, {"users": ["100"]}).status == 200  # and the next request is fine
