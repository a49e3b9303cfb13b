"""The Flask app in-process on a hand-built model written by the real artifact writer: /ping before and after the
model loads, a model that cannot load, HTTP-level errors, settings from the environment."""

import io
import json
import threading

import pytest

import recsys.models
from helpers.serving import random_model
from recsys.artifact import write_model
from recsys.serving.app import READY_DIR_ENV, WorkerReadiness, create_app
from recsys.serving.settings import Settings
from recsys.training.hyperparameters import parse


@pytest.fixture
def dot_registered(monkeypatch):
    monkeypatch.setitem(recsys.models._MODULES, "dot", ("helpers.serving", "DotRecommender"))


@pytest.fixture
def model_dir(tmp_path, dot_registered):
    m = random_model(n_users=30, n_items=60, dim=4)
    write_model(
        tmp_path / "model",
        m.recommender,
        m.users,
        m.items,
        (m.seen_indptr, m.seen_indices),
        m.popularity,
        parse({"algorithm": "ncf"}),
        {},
    )
    return tmp_path / "model"


@pytest.fixture
def client(model_dir):
    return create_app(model_dir, load=True).test_client()


def test_ping_is_503_until_the_model_is_loaded(model_dir, monkeypatch):
    gate = threading.Event()
    import recsys.artifact

    real_load = recsys.artifact.load_model

    def slow_load(*args, **kwargs):
        gate.wait(10)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(recsys.artifact, "load_model", slow_load)
    app = create_app(model_dir)
    client = app.test_client()
    state = app.extensions["recsys"]
    state.start()
    response = client.get("/ping")
    assert response.status_code == 503 and "loading" in response.json["error"]
    assert client.post("/invocations", json={"users": ["100"]}).status_code == 503
    gate.set()
    assert state.wait(10)
    assert client.get("/ping").status_code == 200
    assert client.post("/invocations", json={"users": ["100"]}).status_code == 200


def test_ping_is_200_only_once_every_worker_has_loaded(model_dir, tmp_path):
    """Under gunicorn each worker answers /ping for the whole server (nginx hands it to any worker)."""
    ready_dir = tmp_path / "ready"
    ready_dir.mkdir()
    readiness = WorkerReadiness(ready_dir, expected=3)
    app = create_app(model_dir, readiness=readiness)
    client, state = app.test_client(), app.extensions["recsys"]
    assert "0 of 3 workers ready" in client.get("/ping").json["error"]
    state.start()
    assert state.wait(10)
    assert readiness.count() == 1  # this worker recorded itself once loaded
    response = client.get("/ping")
    assert response.status_code == 503 and "1 of 3 workers ready" in response.json["error"]
    assert client.post("/invocations", json={"users": ["100"]}).status_code == 200  # this worker can answer
    readiness.mark_ready(pid=4_000_001)
    assert "2 of 3" in client.get("/ping").json["error"]
    readiness.mark_ready(pid=4_000_002)
    assert client.get("/ping").status_code == 200
    readiness.forget(4_000_002)  # gunicorn_conf.child_exit: that worker exited; its replacement is still loading
    assert client.get("/ping").status_code == 503


def test_worker_readiness_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(READY_DIR_ENV, raising=False)
    monkeypatch.setenv("MODEL_SERVER_WORKERS", "2")
    assert WorkerReadiness.of(Settings.from_env()) is None
    monkeypatch.setenv(READY_DIR_ENV, str(tmp_path))
    readiness = WorkerReadiness.of(Settings.from_env())
    assert readiness.directory == tmp_path and readiness.expected == 2 and readiness.count() == 0
    assert WorkerReadiness(tmp_path / "gone", 1).count() == 0  # serve removed it while stopping: not ready


def test_a_model_that_cannot_load_keeps_ping_503_with_the_reason(tmp_path):
    errors = []
    app = create_app(tmp_path / "empty")
    app.extensions["recsys"].start(on_error=errors.append)
    assert not app.extensions["recsys"].wait(10)
    response = app.test_client().get("/ping")
    assert response.status_code == 503 and "no model in" in response.json["error"]
    assert errors and "no model in" in errors[0]


def test_model_tarball_layout_is_served(model_dir, tmp_path):
    import tarfile

    mounted = tmp_path / "mounted"
    mounted.mkdir()
    with tarfile.open(mounted / "model.tar.gz", "w:gz") as tar:
        for f in model_dir.iterdir():
            tar.add(f, arcname=f.name)
    (mounted / "output.tar.gz").write_bytes(b"ignored")
    client = create_app(mounted, load=True).test_client()
    assert client.get("/ping").status_code == 200
    assert client.post("/invocations", json={"users": ["100"]}).status_code == 200


def test_http_errors_are_json_and_the_server_keeps_serving(client):
    for response, status in [
        (client.get("/nope"), 404),
        (client.get("/invocations"), 405),
        (client.post("/invocations", data=b"{", content_type="application/json"), 400),
        (client.post("/invocations", data=b"x", content_type="image/png"), 415),
        (client.post("/invocations", json={"users": ["100"]}, headers={"Accept": "image/png"}), 406),
        (client.post("/invocations", data=b"x" * (7 * 1024 * 1024), content_type="application/json"), 413),
    ]:
        assert response.status_code == status and response.mimetype == "application/json"
        assert "error" in response.json and "Traceback" not in response.get_data(as_text=True)
    assert client.post("/invocations", json={"users": ["100"]}).status_code == 200


def test_deeply_nested_json_is_400_saying_so_and_the_server_keeps_serving(client):
    body = b"[" * 100_000 + b"]" * 100_000
    for response in (
        client.post("/invocations", data=body, content_type="application/json"),  # the WSGI fast path
        client.post(  # chunked: through Flask's route
            "/invocations",
            input_stream=io.BytesIO(body),
            content_type="application/json",
            headers={"Transfer-Encoding": "chunked"},
        ),
    ):
        assert response.status_code == 400 and response.mimetype == "application/json"
        assert "nests JSON arrays/objects deeper than 100 levels" in response.json["error"]
    assert client.post("/invocations", json={"users": ["100"]}).status_code == 200
    assert client.get("/ping").status_code == 200


def test_chunked_body_goes_through_flask(client):
    response = client.post(
        "/invocations",
        input_stream=io.BytesIO(b'{"users": ["100"]}'),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
    )
    assert response.status_code == 200 and response.json["predictions"][0]["user"] == "100"


def test_execution_parameters(client):
    response = client.get("/execution-parameters")
    assert response.status_code == 200
    body = response.json
    assert body["BatchStrategy"] == "MultiRecord" and body["MaxPayloadInMB"] == 6
    assert body["MaxConcurrentTransforms"] >= 1


@pytest.mark.parametrize("value", ["true", "True", "1"])
def test_batch_settings(monkeypatch, value):
    monkeypatch.setenv("SAGEMAKER_BATCH", value)
    monkeypatch.setenv("MODEL_SERVER_WORKERS", "3")
    settings = Settings.from_env()
    assert settings.batch and settings.body_limit_mb == 100 and settings.workers == 3
    assert settings.execution_parameters() == {
        "MaxConcurrentTransforms": 3,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 6,
    }
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "50")
    assert Settings.from_env().execution_parameters()["MaxConcurrentTransforms"] == 2  # 2 × 50 ≤ 100


def test_settings_env_names_and_validation(monkeypatch):
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "5")
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_TIMEOUT", "120")
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "9090")
    s = Settings.from_env()
    assert (s.workers, s.timeout, s.port, s.batch, s.body_limit_mb, s.proxy_timeout) == (5, 120, 9090, False, 6, 600)
    monkeypatch.setenv("MODEL_SERVER_WORKERS", "abc")
    with pytest.raises(Exception, match="MODEL_SERVER_WORKERS must be an integer"):
        Settings.from_env()


def test_a_bug_in_a_route_is_a_generic_500(client, monkeypatch):
    import recsys.serving.app as app_module

    def boom(*args):
        raise RuntimeError("internal detail")

    monkeypatch.setattr(app_module, "invocations", boom)
    response = client.post("/invocations", json={"users": ["100"]})
    assert response.status_code == 500 and "internal detail" not in json.dumps(response.json)


def test_request_limits_come_from_the_settings(model_dir, monkeypatch):
    monkeypatch.setenv("RECSYS_MAX_USERS_PER_REQUEST", "2")
    monkeypatch.setenv("RECSYS_DEFAULT_K", "3")
    client = create_app(model_dir, load=True).test_client()
    response = client.post("/invocations", json={"users": ["100", "101", "102"]})
    assert response.status_code == 400 and "at most 2" in response.json["error"]
    assert len(client.post("/invocations", json={"users": ["100"]}).json["predictions"][0]["items"]) == 3


def _answers(client, requests_):
    out = []
    for method, path, kwargs in requests_:
        response = client.open(path, method=method, **kwargs)
        headers = {k: v for k, v in response.headers.items() if k in ("Content-Type", "Content-Length")}
        out.append((response.status, headers, response.get_data()))
    return out


REQUESTS = [
    ("GET", "/ping", {}),
    ("POST", "/invocations", {"json": {"users": ["100"], "k": 3}}),
    ("POST", "/invocations", {"json": {"users": ["100"]}, "headers": {"Accept": "text/csv"}}),
    ("POST", "/invocations", {"data": b'{"users": ["100"]}\n{"users": ["101"]}', "content_type": "application/jsonl"}),
    ("POST", "/invocations", {"data": b"100,1000\n", "content_type": "text/csv; charset=utf-8"}),
    ("POST", "/invocations", {"data": b"{", "content_type": "application/json"}),
    ("POST", "/invocations", {"json": {"users": ["100"], "k": 0}}),
    ("POST", "/invocations", {"data": b"x", "content_type": "image/png"}),
    ("POST", "/invocations", {"json": {"users": ["100"]}, "headers": {"Accept": "image/png"}}),
    ("POST", "/invocations", {"data": b"x" * (7 * 1024 * 1024), "content_type": "application/json"}),
]


def test_fast_path_and_flask_answer_alike(model_dir, monkeypatch):
    """The same requests through FastPath and through Flask alone: same status line, headers and body, errors too."""
    import recsys.serving.app as app_module

    fast = create_app(model_dir, load=True)
    flask_only = create_app(model_dir, load=True)
    flask_only.wsgi_app = flask_only.wsgi_app.wsgi_app  # unwrap FastPath
    assert isinstance(fast.wsgi_app, app_module.FastPath)
    fast_answers = _answers(fast.test_client(), REQUESTS)
    assert fast_answers == _answers(flask_only.test_client(), REQUESTS)
    statuses = [int(status.split()[0]) for status, _, _ in fast_answers]
    assert statuses == [200, 200, 200, 200, 200, 400, 400, 415, 406, 413]
    assert fast_answers[0][0] == "200 OK" and fast_answers[-1][0] == "413 Request Entity Too Large"
    assert fast_answers[2][1]["Content-Type"] == "text/csv; charset=utf-8"

    def boom(*args):
        raise RuntimeError("internal detail")

    monkeypatch.setattr(app_module, "invocations", boom)  # a bug: a generic 500 on both paths
    bug = [("POST", "/invocations", {"json": {"users": ["100"]}})]
    assert _answers(fast.test_client(), bug) == _answers(flask_only.test_client(), bug)
    assert _answers(fast.test_client(), bug)[0][0] == "500 Internal Server Error"


def test_fast_path_and_flask_answer_alike_while_loading(tmp_path):
    fast = create_app(tmp_path / "empty")
    flask_only = create_app(tmp_path / "empty")
    flask_only.wsgi_app = flask_only.wsgi_app.wsgi_app
    requests_ = [("GET", "/ping", {}), ("POST", "/invocations", {"json": {"users": ["100"]}})]
    answers = _answers(fast.test_client(), requests_)
    assert answers == _answers(flask_only.test_client(), requests_)
    assert [status for status, _, _ in answers] == ["503 Service Unavailable"] * 2
