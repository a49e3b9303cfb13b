"""Batch transform over every user: the JSON Lines input, the output read back, and what the transform sent.

- ``write_requests(path, users, per_line, k)``: one top-K request object per line, ``per_line`` users each. Few
  users per line make many tiny records (and, in SDK local mode, a padding loop that copies its buffer per record);
  one object may name at most ``RECSYS_MAX_USERS_PER_REQUEST`` users (10,000 by default).
- ``iter_answers(path, requests)`` / ``read_predictions(path, requests)``: the ``.out`` file (``AssembleWith=Line``),
  checked record for record against the requests it answers (N records in → N records out, same order); the
  second flattens it to one row per (user, rank).
- ``record_local_transform(session)``: while active, records each request SDK local mode sends to the container
  (bytes, records, seconds) and the container's ``GET /execution-parameters`` answer — how the transform chose its
  payload. Imports the SageMaker SDK when entered.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_USERS_PER_LINE = 10_000  # the serving default of RECSYS_MAX_USERS_PER_REQUEST


def request_objects(users: Sequence[str], per_line: int, k: int) -> Iterator[dict[str, Any]]:
    if per_line < 1 or per_line > MAX_USERS_PER_LINE:
        raise ValueError(f"users per line must be between 1 and {MAX_USERS_PER_LINE}, got {per_line}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    for start in range(0, len(users), per_line):
        yield {"users": [str(u) for u in users[start : start + per_line]], "k": k}


def write_requests(path: Path, users: Sequence[str], per_line: int, k: int) -> int:
    """Write the JSON Lines input; returns the number of lines."""
    if not len(users):
        raise ValueError("no users to write requests for")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = 0
    with path.open("w") as out:
        for obj in request_objects(users, per_line, k):
            out.write(json.dumps(obj, separators=(",", ":")) + "\n")
            lines += 1
    return lines


def read_requests(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def iter_answers(path: Path, requests: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Each output record's predictions, after checking that line i answers request i user for user (and that there
    are as many records as requests). Blank lines are skipped: local mode adds a newline after every response."""
    count = 0
    with path.open() as lines:
        for line in lines:
            if not line.strip():
                continue
            count += 1
            if count > len(requests):
                raise ValueError(f"{path.name}: more output records than the {len(requests)} input lines")
            answer = json.loads(line)
            predictions = answer.get("predictions") if isinstance(answer, dict) else None
            if not isinstance(predictions, list):
                raise ValueError(f"{path.name} record {count}: no predictions: {line[:200]}")
            got = [str(p.get("user")) for p in predictions]
            asked = [str(u) for u in requests[count - 1]["users"]]
            if got != asked:
                raise ValueError(f"{path.name} record {count}: answers users {got[:3]}…, asked {asked[:3]}…")
            yield predictions
    if count != len(requests):
        raise ValueError(f"{path.name}: {count} output records for {len(requests)} input lines")


def read_predictions(path: Path, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows ``{"user", "rank", "item", "score"}`` from the transform's output (checked by ``iter_answers``)."""
    rows = []
    for predictions in iter_answers(path, requests):
        for prediction in predictions:
            for rank, (item, score) in enumerate(zip(prediction["items"], prediction["scores"]), start=1):
                rows.append({"user": str(prediction["user"]), "rank": rank, "item": str(item), "score": score})
    return rows


@dataclass(frozen=True)
class Request:
    request_bytes: int
    records: int  # JSON Lines records in the request body
    response_bytes: int
    seconds: float  # request sent → whole response read


@dataclass
class TransformRecord:
    """What one local transform sent: its requests, and the container's execution-parameters answer (if any)."""

    requests: list[Request] = field(default_factory=list)
    execution_parameters: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        records = [r.records for r in self.requests]
        return {
            "requests": len(self.requests),
            "records_per_request_max": max(records, default=0),
            "records_per_request_mean": round(sum(records) / len(records), 1) if records else 0,
            "request_bytes_max": max((r.request_bytes for r in self.requests), default=0),
            "response_bytes_max": max((r.response_bytes for r in self.requests), default=0),
            "request_seconds_total": round(sum(r.seconds for r in self.requests), 2),
            "execution_parameters": self.execution_parameters,
        }


def _records(body: bytes) -> int:
    return sum(1 for line in body.split(b"\n") if line.strip())


@contextlib.contextmanager
def record_local_transform(session) -> Iterator[TransformRecord]:
    """Record the requests ``session`` (a ``sagemaker.local.LocalSession``) sends during a local transform job."""
    import sagemaker.local.entities as entities

    record = TransformRecord()
    runtime = session.sagemaker_runtime_client
    real_invoke, real_request = runtime.invoke_endpoint, entities._perform_request
    shadowed = "invoke_endpoint" in vars(runtime)

    def invoke(Body, *args, **kwargs):  # noqa: N803 (boto3's parameter name)
        body = Body.encode() if isinstance(Body, str) else bytes(Body)
        started = time.perf_counter()
        response = real_invoke(body, *args, **kwargs)
        # Read the body here, so the time covers the whole answer; the job reads it from the copy.
        data = response["Body"].read()
        response["Body"].close()
        record.requests.append(Request(len(body), _records(body), len(data), time.perf_counter() - started))
        return {**response, "Body": io.BytesIO(data)}

    def perform_request(url, *args, **kwargs):
        response, code = real_request(url, *args, **kwargs)
        if str(url).endswith("/execution-parameters") and code == 200:
            record.execution_parameters = json.loads(response.data.decode())
        return response, code

    runtime.invoke_endpoint, entities._perform_request = invoke, perform_request
    try:
        yield record
    finally:
        if shadowed:
            runtime.invoke_endpoint = real_invoke
        else:
            del runtime.invoke_endpoint  # back to the class's method
        entities._perform_request = real_request
