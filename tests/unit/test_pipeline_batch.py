"""recsys.pipeline.batch: the JSON Lines requests for a batch transform, its output checked record for record, and
the recorder of what SDK local mode sends — driven through a real ``LocalSession`` against a small HTTP server
standing in for the container (no engine needed)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recsys.pipeline import batch

USERS = [f"u{i}" for i in range(7)]


def test_requests_batch_the_users_per_line(tmp_path: Path) -> None:
    path = tmp_path / "in" / "users.jsonl"
    assert batch.write_requests(path, USERS, per_line=3, k=5) == 3
    assert batch.read_requests(path) == [
        {"users": ["u0", "u1", "u2"], "k": 5},
        {"users": ["u3", "u4", "u5"], "k": 5},
        {"users": ["u6"], "k": 5},
    ]
    assert path.read_text().endswith("\n") and path.read_text().count("\n") == 3


@pytest.mark.parametrize(
    ("users", "per_line", "k", "message"),
    [
        (USERS, 0, 10, "users per line must be between 1 and 10000"),
        (USERS, 10_001, 10, "users per line must be between 1 and 10000"),
        (USERS, 2, 0, "k must be at least 1"),
        ([], 2, 10, "no users"),
    ],
)
def test_requests_refuse_bad_sizes(tmp_path: Path, users, per_line, k, message) -> None:
    with pytest.raises(ValueError, match=message):
        batch.write_requests(tmp_path / "users.jsonl", users, per_line, k)


def answer(users: list[str], k: int = 2) -> str:
    return json.dumps(
        {"predictions": [{"user": u, "items": [f"i{j}" for j in range(k)], "scores": [0.9, 0.1]} for u in users]}
    )


def test_output_is_checked_and_flattened(tmp_path: Path) -> None:
    requests = [{"users": ["u0", "u1"], "k": 2}, {"users": ["u2"], "k": 2}]
    out = tmp_path / "users.jsonl.out"
    out.write_text(answer(["u0", "u1"]) + "\n\n" + answer(["u2"]) + "\n")  # local mode's blank line included
    rows = batch.read_predictions(out, requests)
    assert [(r["user"], r["rank"], r["item"]) for r in rows] == [
        ("u0", 1, "i0"),
        ("u0", 2, "i1"),
        ("u1", 1, "i0"),
        ("u1", 2, "i1"),
        ("u2", 1, "i0"),
        ("u2", 2, "i1"),
    ]
    assert rows[0]["score"] == 0.9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (answer(["u0", "u1"]), r"1 output records for 2 input lines"),
        (answer(["u0", "u1"]) + "\n" + answer(["u9"]), r"record 2: answers users \['u9'\]"),
        (answer(["u0", "u1"]) + "\n" + answer(["u2"]) + "\n" + answer(["u3"]), "more output records than the 2"),
        (answer(["u0", "u1"]) + '\n{"error": "bad"}', "record 2: no predictions"),
    ],
)
def test_output_that_does_not_answer_the_requests_is_refused(tmp_path: Path, text: str, message: str) -> None:
    out = tmp_path / "users.jsonl.out"
    out.write_text(text)
    with pytest.raises(ValueError, match=message):
        batch.read_predictions(out, [{"users": ["u0", "u1"], "k": 2}, {"users": ["u2"], "k": 2}])


class FakeContainer(BaseHTTPRequestHandler):
    """/execution-parameters and /invocations (one answer line per request line), as `serve` answers them."""

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"MaxConcurrentTransforms": 1, "BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6}).encode()
        self.send_response(200 if self.path == "/execution-parameters" else 404)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        lines = [json.loads(x) for x in self.rfile.read(int(self.headers["Content-Length"])).splitlines() if x.strip()]
        body = "\n".join(answer(obj["users"]) for obj in lines).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def container():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeContainer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_recorder_sees_the_execution_parameters_and_every_request(container: int, monkeypatch) -> None:
    pytest.importorskip("sagemaker")
    import sagemaker.local.entities as entities
    import sagemaker.local.local_session as local_session
    from sagemaker.local import LocalSession

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(local_session, "get_docker_host", lambda: "127.0.0.1")  # no engine to ask
    session = LocalSession()
    session.config = {"local": {"serving_port": container}}
    runtime = session.sagemaker_runtime_client
    bodies = ['{"users":["u0","u1"],"k":2}\n{"users":["u2"],"k":2}', '{"users":["u3"],"k":2}']
    with batch.record_local_transform(session) as record:
        response, code = entities._perform_request(f"http://127.0.0.1:{container}/execution-parameters")
        assert code == 200
        answers = [runtime.invoke_endpoint(b, "", "application/jsonlines", "application/jsonlines") for b in bodies]
        # The job reads each answer after invoke_endpoint returns: the recorder hands it a full copy.
        texts = [a["Body"].read().decode() for a in answers]
    assert [len(t.splitlines()) for t in texts] == [2, 1]
    assert record.execution_parameters["MaxPayloadInMB"] == 6
    assert [(r.request_bytes, r.records) for r in record.requests] == [(len(bodies[0]), 2), (len(bodies[1]), 1)]
    assert [r.response_bytes for r in record.requests] == [len(t.encode()) for t in texts]
    summary = record.summary()
    assert summary["requests"] == 2 and summary["records_per_request_max"] == 2
    assert summary["records_per_request_mean"] == 1.5
    assert summary["execution_parameters"]["BatchStrategy"] == "MultiRecord"
    # Outside the context the session talks to the container directly again.
    assert "invoke_endpoint" not in vars(runtime)
    assert entities._perform_request.__name__ == "_perform_request"
