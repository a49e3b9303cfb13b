"""``serve``'s environment, read once into ``Settings`` and passed down: ``serve`` (nginx configuration), the gunicorn
config and the app (``create_app(settings=...)`` → handler → request validation) use its values, never
``os.environ``. Every variable is declared once below (``recsys.platform.settings.EnvVar``); the tables in README.md
and docs/image.md are generated from these declarations (``scripts/render_readme.py``).

``serve`` sets three more for gunicorn, never the user (``internal``): ``RECSYS_MODEL_DIR`` (the unpacked model),
``RECSYS_GUNICORN_SOCKET`` (the unix socket nginx proxies to) and ``RECSYS_READY_DIR`` (where each worker records that
it has loaded the model; ``/ping`` answers 200 only when all of them have: ``recsys.serving.state.WorkerReadiness``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from recsys.platform.errors import UserError
from recsys.platform.resources import usable_cpus
from recsys.platform.settings import COMMON, EnvVar, log_level_number, read_all
from recsys.serving.retrieval import MODES, RetrievalConfig

MIN_PROXY_TIMEOUT = 600  # batch transform's default InvocationsTimeoutInSeconds
READY_DIR_ENV = "RECSYS_READY_DIR"
SOCKET_ENV = "RECSYS_GUNICORN_SOCKET"
MODEL_DIR_ENV = "RECSYS_MODEL_DIR"

# Request limits (``RequestLimits``): what one POST /invocations may ask for.
LIMITS = (
    EnvVar("default_k", "RECSYS_DEFAULT_K", int, 10, "K when a request gives none (≤ `RECSYS_MAX_K`)", low=1),
    EnvVar(
        "max_k",
        "RECSYS_MAX_K",
        int,
        1000,
        "largest `k` a request may ask for (never above the model's item count)",
        low=1,
    ),
    EnvVar(
        "max_users",
        "RECSYS_MAX_USERS_PER_REQUEST",
        int,
        10_000,
        "users (top-K, rank) or items (similar) in one request object",
        low=1,
    ),
    EnvVar("max_pairs", "RECSYS_MAX_PAIRS_PER_REQUEST", int, 100_000, "(user, item) pairs in one rank request", low=1),
    EnvVar(
        "max_filter_items",
        "RECSYS_MAX_FILTER_ITEMS",
        int,
        100_000,
        "ids in `exclude` / `include` / `candidates`",
        low=1,
    ),
)

SERVING = (
    EnvVar(
        "port",
        "SAGEMAKER_BIND_TO_PORT",
        int,
        8080,
        "port nginx listens on (inference pipelines / multi-container endpoints set it)",
        low=1,
        high=65535,
    ),
    EnvVar(
        "workers",
        "MODEL_SERVER_WORKERS",
        int,
        usable_cpus,
        "gunicorn workers (each loads its own model copy — size for GPU memory)",
        aliases=("SAGEMAKER_MODEL_SERVER_WORKERS",),
        low=1,
        high=1024,
        default_text="one per CPU",
    ),
    EnvVar(
        "timeout",
        "MODEL_SERVER_TIMEOUT",
        int,
        60,
        f"gunicorn worker timeout, seconds (nginx waits ≥ {MIN_PROXY_TIMEOUT} s)",
        aliases=("SAGEMAKER_MODEL_SERVER_TIMEOUT", "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"),
        low=1,
    ),
    EnvVar(
        "max_payload_mb",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB",
        int,
        None,
        "request body limit, MB; larger → 413; 0 = no limit",
        low=0,
        high=100_000,
        default_text="6 (100 with `SAGEMAKER_BATCH`)",
    ),
    EnvVar(
        "batch", "SAGEMAKER_BATCH", bool, False, "set by batch transform (`true`/`True`): larger default body limit"
    ),
    EnvVar(
        "worker_class",
        "RECSYS_WORKER_CLASS",
        str,
        "gthread",
        "gunicorn worker class",
        choices=("gthread", "sync"),
        lower=True,
    ),
    EnvVar(
        "threads",
        "RECSYS_THREADS",
        int,
        2,
        "threads per gthread worker (a spare one keeps `/ping` answering while requests run)",
        low=1,
        high=1024,
    ),
    EnvVar(
        "nginx_workers",
        "RECSYS_NGINX_WORKERS",
        str,
        "1",
        "nginx worker processes (`auto` = one per CPU)",
        pattern=r"auto|[1-9][0-9]*",
        must="a positive integer or auto",
        lower=True,
    ),
    EnvVar(
        "score_cache",
        "RECSYS_SCORE_CACHE",
        str,
        "auto",
        "precompute every user's scores at start-up: `auto` when scoring is costly and it fits",
        choices=("auto", "on", "off"),
        lower=True,
    ),
    EnvVar(
        "score_cache_mb",
        "RECSYS_SCORE_CACHE_MB",
        int,
        512,
        "largest score cache per worker, MB (users × items × 4 B)",
        low=0,
    ),
    EnvVar(
        "retrieval_mode",
        "RECSYS_RETRIEVAL",
        str,
        "auto",
        "top-K over large catalogs: `two-stage` = retrieve candidates by inner product, rescore them with the model; "
        "`auto` = two-stage from `RECSYS_RETRIEVAL_MIN_ITEMS` items (models whose scores are inner products, e.g. "
        "ALS, are exact in one stage)",
        choices=MODES,
        lower=True,
    ),
    EnvVar(
        "retrieval_candidates",
        "RECSYS_RETRIEVAL_CANDIDATES",
        int,
        5000,
        "candidates per user that two-stage top-K rescores with the model",
        low=1,
        high=1_000_000,
    ),
    EnvVar(
        "retrieval_min_items",
        "RECSYS_RETRIEVAL_MIN_ITEMS",
        int,
        100_000,
        "catalog size from which `RECSYS_RETRIEVAL=auto` uses two stages",
        low=1,
    ),
    EnvVar(
        "retrieval_dims",
        "RECSYS_RETRIEVAL_DIMS",
        int,
        16,
        "dimensions of two-stage retrieval's first stage (principal directions of the item vectors)",
        low=1,
        high=4096,
    ),
    EnvVar(
        "device",
        "RECSYS_DEVICE",
        str,
        "auto",
        "NCF inference device (`auto` = CUDA when present)",
        pattern=r"auto|cpu|cuda(:[0-9]+)?",
        must="auto, cpu, cuda or cuda:N",
        lower=True,
    ),
    EnvVar("access_log", "RECSYS_ACCESS_LOG", bool, False, "nginx access log to stdout"),
    EnvVar(
        "model_dir",
        MODEL_DIR_ENV,
        Path,
        None,
        "the model directory (or one holding model.tar.gz)",
        default_text="`$SAGEMAKER_BASE_DIR/model`",
    ),
    *LIMITS,
    EnvVar("ready_dir", READY_DIR_ENV, Path, None, "workers' readiness directory (set by serve)", internal=True),
    EnvVar("gunicorn_socket", SOCKET_ENV, Path, None, "gunicorn's unix socket (set by serve)", internal=True),
)


@dataclass(frozen=True)
class RequestLimits:
    default_k: int
    max_k: int
    max_users: int
    max_pairs: int
    max_filter_items: int


DEFAULT_LIMITS = RequestLimits(**{var.attr: var.default for var in LIMITS})


@dataclass(frozen=True)
class Settings:
    base_dir: Path
    log_level: str
    port: int
    workers: int
    timeout: int
    max_payload_mb: int | None  # as set by SAGEMAKER_MAX_PAYLOAD_IN_MB (None when unset)
    batch: bool
    worker_class: str
    threads: int
    nginx_workers: str
    score_cache: str
    score_cache_mb: int
    retrieval_mode: str
    retrieval_candidates: int
    retrieval_min_items: int
    retrieval_dims: int
    device: str
    access_log: bool
    model_dir: Path
    default_k: int
    max_k: int
    max_users: int
    max_pairs: int
    max_filter_items: int
    ready_dir: Path | None
    gunicorn_socket: Path | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every variable of ``COMMON`` + ``SERVING``; the first bad value raises a UserError naming it."""
        values = read_all(COMMON + SERVING, environ)
        if values["default_k"] > values["max_k"]:
            raise UserError(
                f"environment variable RECSYS_DEFAULT_K must be ≤ RECSYS_MAX_K ({values['max_k']}), "
                f"got {values['default_k']}"
            )
        values["model_dir"] = values["model_dir"] or values["base_dir"] / "model"
        return cls(**values)

    @property
    def limits(self) -> RequestLimits:
        return RequestLimits(self.default_k, self.max_k, self.max_users, self.max_pairs, self.max_filter_items)

    @property
    def retrieval(self) -> RetrievalConfig:
        return RetrievalConfig(
            self.retrieval_mode, self.retrieval_candidates, self.retrieval_min_items, self.retrieval_dims
        )

    @property
    def device_or_none(self) -> str | None:
        """The ``device`` for ``load_model``: None lets it choose (CUDA when present)."""
        return None if self.device == "auto" else self.device

    @property
    def gunicorn_log_level(self) -> str:
        return logging.getLevelName(log_level_number(self.log_level)).lower()

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
