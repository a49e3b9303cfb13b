"""The serving contract, the same expectations for every algorithm: the Flask app in-process on models trained by the
real `train` on the Online Retail fixture (``trained_model_dir``), every request form, filter, cold start and error."""

import json

import numpy as np
import pytest

from helpers.algorithms import ALGORITHMS
from recsys.artifact import load_model
from recsys.serving.app import create_app
from recsys.serving.settings import DEFAULT_LIMITS


@pytest.fixture(scope="module", params=ALGORITHMS)
def served(request, trained_model_dir):
    """(test client, LoadedModel) per algorithm, the app loaded once per module."""
    model_dir = trained_model_dir(request.param)
    app = create_app(model_dir, load=True)
    assert app.extensions["recsys"].predictor is not None, app.extensions["recsys"].error
    return app.test_client(), load_model(model_dir)


@pytest.fixture
def client(served):
    return served[0]


@pytest.fixture
def model(served):
    return served[1]


def post(client, body, content_type="application/json", accept=None, status=200):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Accept": accept} if accept else {}
    response = client.post("/invocations", data=data, content_type=content_type, headers=headers)
    assert response.status_code == status, response.get_data(as_text=True)
    return response


def predictions(client, body, **kw):
    return post(client, body, **kw).json["predictions"]


def users_with_history(model, n=3):
    counts = np.diff(model.seen_indptr)
    return [model.users.ids[i] for i in np.argsort(-counts, kind="stable")[:n]]


def test_ping_and_execution_parameters(client):
    assert client.get("/ping").status_code == 200
    assert client.get("/execution-parameters").json["BatchStrategy"] == "MultiRecord"


def test_top_k_shape_order_and_types(client, model):
    users = users_with_history(model, 3)
    preds = predictions(client, {"users": users, "k": 7})
    assert [p["user"] for p in preds] == users
    for p in preds:
        assert len(p["items"]) == 7 == len(p["scores"]) and len(set(p["items"])) == 7
        assert all(isinstance(i, str) for i in p["items"]) and all(isinstance(s, float) for s in p["scores"])
        assert p["scores"] == sorted(p["scores"], reverse=True)
        assert set(p["items"]) <= set(model.items.ids.tolist())
        assert "cold_start" not in p


def test_top_k_matches_the_models_own_scores(client, model):
    user = users_with_history(model, 1)[0]
    (pred,) = predictions(client, {"users": [user], "k": 5})
    index = model.users.get(user)
    scores = model.recommender.score_all(np.array([index]))[0]
    scores[model.seen_items(index)] = -np.inf
    best = scores[np.argsort(-scores)[:5]]
    np.testing.assert_allclose(pred["scores"], best, rtol=1e-4, atol=1e-5)


def test_exclude_seen_default_and_off(client, model):
    user = users_with_history(model, 1)[0]
    seen = set(model.items.raw(model.seen_items(model.users.get(user))))
    k = min(len(model.items), DEFAULT_LIMITS.max_k)
    (pred,) = predictions(client, {"users": [user], "k": k})
    assert not seen & set(pred["items"])
    (pred,) = predictions(client, {"users": [user], "k": k, "exclude_seen": False})
    assert seen & set(pred["items"])


def test_numbers_and_strings_are_the_same_id(client, model):
    numeric = [u for u in model.users.ids.tolist() if u.isdigit()]
    if not numeric:
        pytest.skip("no numeric user ids in this model")
    a, b = predictions(client, {"users": [numeric[0], int(numeric[0])], "k": 5})
    assert a["items"] == b["items"] and b["user"] == int(numeric[0])


def test_exclude_include_exclude_popular_candidates(client, model):
    user = users_with_history(model, 1)[0]
    (base,) = predictions(client, {"users": [user], "k": 10})
    (pred,) = predictions(client, {"users": [user], "k": 10, "exclude": base["items"][:3]})
    assert not set(base["items"][:3]) & set(pred["items"])

    most_popular = model.items.raw(np.argsort(-model.popularity, kind="stable")[:5])
    (pred,) = predictions(client, {"users": [user], "k": 10, "exclude_popular": 5, "exclude_seen": False})
    assert not set(most_popular) & set(pred["items"])
    (pred,) = predictions(
        client,
        {"users": [user], "k": 10, "exclude_popular": 5, "include": most_popular[:1], "candidates": most_popular[:3]},
    )
    assert pred["items"] == most_popular[:1]  # candidates ∪ include, minus the popular ones not included

    candidates = model.items.ids[:20].tolist()
    (pred,) = predictions(client, {"users": [user], "k": 5, "candidates": candidates, "exclude_seen": False})
    assert set(pred["items"]) <= set(candidates) and len(pred["items"]) == 5


def test_cold_start_user_gets_popular_items(client, model):
    (pred,) = predictions(client, {"users": ["no-such-user-42"], "k": 5})
    assert pred["cold_start"] is True
    assert pred["items"] == model.items.raw(np.argsort(-model.popularity, kind="stable")[:5])


def test_unknown_candidates_rank_last(client, model):
    user = users_with_history(model, 1)[0]
    candidates = [*model.items.ids[:3].tolist(), "no-such-item"]
    (pred,) = predictions(client, {"users": [user], "k": 10, "candidates": candidates, "exclude_seen": False})
    assert pred["items"][-1] == "no-such-item" and pred["scores"][-1] is None
    assert pred["unknown_items"] == ["no-such-item"]


def test_rank_given_candidates_lotteon_form(client, model):
    u1, u2 = users_with_history(model, 2)
    items = model.items.ids[:4].tolist()
    preds = predictions(client, {"user": [u1, u1, u1, u2, u1], "item": [*items[:3], items[0], "ghost"]})
    assert [p["user"] for p in preds] == [u1, u2]
    assert preds[0]["items"][-1] == "ghost" and set(preds[0]["items"][:3]) == set(items[:3])
    assert preds[0]["scores"][:3] == sorted(preds[0]["scores"][:3], reverse=True)
    assert preds[0]["unknown_items"] == ["ghost"] and preds[1]["items"] == [items[0]]


def test_similar_items(client, model):
    item = model.items.ids[int(np.argmax(model.popularity))]
    a, b = predictions(client, {"similar_to": [item, "no-such-item"], "k": 5})
    assert a["item"] == item and item not in a["items"] and len(a["items"]) == 5
    assert a["scores"] == sorted(a["scores"], reverse=True) and all(-1.0001 <= s <= 1.0001 for s in a["scores"])
    assert b["cold_start"] is True


def test_json_lines_n_in_n_out(client, model):
    users = users_with_history(model, 3)
    lines = [
        {"users": [users[0]]},
        {"similar_to": [model.items.ids[0]], "k": 2},
        {"users": [users[1]], "k": 3},
        {"user": [users[2]], "item": model.items.ids[:2].tolist()},
    ]
    body = ("\n".join(json.dumps(x) for x in lines) + "\n").encode()
    for content_type in ("application/jsonlines", "application/json-lines", "application/x-jsonlines"):
        response = post(client, body, content_type=content_type)
        out = response.get_data(as_text=True)
        assert response.mimetype == "application/jsonlines" and not out.endswith("\n")
        rows = [json.loads(x) for x in out.split("\n")]
        assert len(rows) == 4 and rows[2]["predictions"][0]["user"] == users[1]


def test_csv_requests_and_csv_answers(client, model):
    u = users_with_history(model, 1)[0]
    items = model.items.ids[:3].tolist()
    body = "".join(f"{u},{i}\n" for i in items).encode()
    text = post(client, body, content_type="text/csv", accept="text/csv").get_data(as_text=True)
    rows = [r.split(",") for r in text.split("\n")]
    assert len(rows) == 3 and {r[1] for r in rows} == set(items) and [r[3] for r in rows] == ["1", "2", "3"]
    preds = predictions(client, f"{u}\nno-such-user\n".encode(), content_type="text/csv")
    assert len(preds[0]["items"]) == DEFAULT_LIMITS.default_k and preds[1]["cold_start"] is True


@pytest.mark.parametrize(
    "body, status",
    [
        (b"{broken", 400),
        ({"users": []}, 200),
        ({"users": ["1"], "k": 0}, 400),
        ({"users": ["1"], "k": DEFAULT_LIMITS.max_k + 1}, 400),
        ({"users": [["nested"]]}, 400),
        ({"users": ["1"], "exclude_seen": "no"}, 400),
        ({"nothing": 1}, 400),
    ],
)
def test_errors_and_edge_cases(client, body, status):
    response = post(client, body, status=status)
    if status != 200:
        assert set(response.json) == {"error"} and "Traceback" not in response.json["error"]


def test_too_many_users_is_400(client):
    response = post(client, {"users": ["1"] * (DEFAULT_LIMITS.max_users + 1)}, status=400)
    assert str(DEFAULT_LIMITS.max_users) in response.json["error"]


def test_media_type_errors(client):
    post(client, b"x", content_type="application/octet-stream", status=415)
    post(client, {"users": ["1"]}, accept="application/xml", status=406)
    assert client.get("/ping").status_code == 200  # still serving


def test_a_thousand_users_in_one_request(client, model):
    users = [model.users.ids[i % len(model.users)] for i in range(1000)]
    preds = predictions(client, {"users": users, "k": 10})
    assert len(preds) == 1000 and all(len(p["items"]) == 10 for p in preds)
