"""Serving settings from the environment, read in one place (``serve``, the gunicorn config and the app share them).

| variable | default | meaning |
|---|---|---|
| `SAGEMAKER_BIND_TO_PORT` | 8080 | port nginx listens on (inference pipelines / multi-container endpoints set it) |
| `MODEL_SERVER_WORKERS` / `SAGEMAKER_MODEL_SERVER_WORKERS` | one per CPU | gunicorn workers (one model copy each) |
| `MODEL_SERVER_TIMEOUT` / `SAGEMAKER_MODEL_SERVER_TIMEOUT` | 60 | gunicorn worker timeout, s (nginx waits ≥ 600) |
| `SAGEMAKER_MAX_PAYLOAD_IN_MB` | 6 (body limit 100 when `SAGEMAKER_BATCH`) | largest request body; larger → 413 |
| `SAGEMAKER_BATCH` | false | batch transform (`true`/`True`/`1`): larger default body limit |
| `RECSYS_WORKER_CLASS` | gthread | gunicorn worker class (`gthread` or `sync`) |
| `RECSYS_THREADS` | 2 | threads per gthread worker (a spare one keeps `/ping` answering while requests run) |
| `RECSYS_NGINX_WORKERS` | 1 | nginx worker processes (`auto` = one per CPU) |
| `RECSYS_SCORE_CACHE` | auto | all scores computed at start-up: `auto` (if scoring is costly and fits), `on`, `off` |
| `RECSYS_SCORE_CACHE_MB` | 512 | largest score cache per worker (n_users × n_items × 4 bytes) |
| `RECSYS_DEVICE` | auto | device for NCF models (`cpu`, `cuda`; auto = CUDA when present) |
| `RECSYS_ACCESS_LOG` | false | nginx access log to stdout |
| `RECSYS_MODEL_DIR` | `$SAGEMAKER_BASE_DIR/model` | the model directory (or one holding model.tar.gz) |

``serve`` sets two more for gunicorn, never the user: ``RECSYS_GUNICORN_SOCKET`` (the unix socket nginx proxies to)
and ``RECSYS_READY_DIR`` (where each worker records that it has loaded the model; ``/ping`` answers 200 only when
all of them have: ``recsys.serving.app.WorkerReadiness``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recsys.platform.errors import UserError
from recsys.platform.paths import SageMakerPaths
from recsys.platform.resources import usable_cpus

TRUE = frozenset({"1", "true", "yes", "on"})
MIN_PROXY_TIMEOUT = 600  # batch transform's default InvocationsTimeoutInSeconds


def flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    return default if raw is None or not raw.strip() else raw.strip().lower() in TRUE


def _int(names: tuple[str, ...], default: int, low: int, high: int | None = None) -> int:
    for name in names:
        raw = os.environ.get(name, "").strip()
        if raw:
            try:
                value = int(float(raw))
            except ValueError:
                raise UserError(f"environment variable {name} must be an integer, got {raw!r}") from None
            if value < low or (high is not None and value > high):
                bounds = f"≥ {low}" if high is None else f"between {low} and {high}"
                raise UserError(f"environment variable {name} must be {bounds}, got {value}")
            return value
    return default


@dataclass(frozen=True)
class Settings:
    port: int
    workers: int
    timeout: int
    batch: bool
    max_payload_mb: int | None  # as set by SAGEMAKER_MAX_PAYLOAD_IN_MB (None when unset)
    worker_class: str
    threads: int
    nginx_workers: str
    access_log: bool
    model_dir: Path
    score_cache: str = "auto"
    score_cache_mb: int = 512

    @classmethod
    def from_env(cls) -> Settings:
        batch = flag("SAGEMAKER_BATCH")
        worker_class = os.environ.get("RECSYS_WORKER_CLASS", "gthread").strip() or "gthread"
        if worker_class not in ("gthread", "sync"):
            raise UserError(f"RECSYS_WORKER_CLASS must be gthread or sync, got {worker_class!r}")
        nginx_workers = os.environ.get("RECSYS_NGINX_WORKERS", "1").strip() or "1"
        if nginx_workers != "auto" and not (nginx_workers.isdigit() and int(nginx_workers) >= 1):
            raise UserError(f"RECSYS_NGINX_WORKERS must be a positive integer or auto, got {nginx_workers!r}")
        model_dir = os.environ.get("RECSYS_MODEL_DIR") or str(SageMakerPaths.from_env().model_dir)
        payload = _int(("SAGEMAKER_MAX_PAYLOAD_IN_MB",), -1, 0, 100_000)
        score_cache = os.environ.get("RECSYS_SCORE_CACHE", "auto").strip().lower() or "auto"
        if score_cache not in ("auto", "on", "off"):
            raise UserError(f"RECSYS_SCORE_CACHE must be auto, on or off, got {score_cache!r}")
        return cls(
            port=_int(("SAGEMAKER_BIND_TO_PORT",), 8080, 1, 65535),
            workers=_int(("MODEL_SERVER_WORKERS", "SAGEMAKER_MODEL_SERVER_WORKERS"), usable_cpus(), 1, 1024),
            timeout=_int(
                ("MODEL_SERVER_TIMEOUT", "SAGEMAKER_MODEL_SERVER_TIMEOUT", "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"),
                60,
                1,
            ),
            batch=batch,
            max_payload_mb=payload if payload >= 0 else None,
            worker_class=worker_class,
            threads=_int(("RECSYS_THREADS",), 2, 1, 1024),
            nginx_workers=nginx_workers,
            access_log=flag("RECSYS_ACCESS_LOG"),
            model_dir=Path(model_dir),
            score_cache=score_cache,
            score_cache_mb=_int(("RECSYS_SCORE_CACHE_MB",), 512, 0),
        )

    @property
    def body_limit_mb(self) -> int:
        """The request body limit: SAGEMAKER_MAX_PAYLOAD_IN_MB, else 6 MB (100 MB for batch transform).
        0 means no limit (``MaxPayloadInMB=0`` is chunked streaming for custom algorithms)."""
        if self.max_payload_mb is not None:
            return self.max_payload_mb
        return 100 if self.batch else 6

    @property
    def max_body_bytes(self) -> int | None:
        return self.body_limit_mb * 1024 * 1024 if self.body_limit_mb else None

    @property
    def proxy_timeout(self) -> int:
        return max(MIN_PROXY_TIMEOUT, self.timeout)

    def execution_parameters(self) -> dict:
        """``GET /execution-parameters`` for batch transform (MaxConcurrentTransforms × MaxPayloadInMB ≤ 100)."""
        payload = min(max(self.max_payload_mb or 6, 1), 100)
        concurrent = max(1, min(self.workers, 100 // payload))
        return {"MaxConcurrentTransforms": concurrent, "BatchStrategy": "MultiRecord", "MaxPayloadInMB": payload}
