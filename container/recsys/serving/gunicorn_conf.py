"""Gunicorn settings for ``serve`` (loaded with ``-c python:recsys.serving.gunicorn_conf``), all from the environment
(``recsys.serving.settings``); ``serve`` adds the socket path as ``RECSYS_GUNICORN_SOCKET`` and the workers' readiness
directory as ``RECSYS_READY_DIR`` (``recsys.serving.app.WorkerReadiness``)."""

import os

from recsys.platform.logs import configure_logging
from recsys.serving.settings import Settings

configure_logging()
_settings = Settings.from_env()

bind = f"unix:{os.environ['RECSYS_GUNICORN_SOCKET']}"
backlog = 2048
workers = _settings.workers
worker_class = _settings.worker_class
threads = _settings.threads if _settings.worker_class == "gthread" else 1
timeout = _settings.timeout
graceful_timeout = 10  # SIGTERM: in-flight requests get this long (SageMaker sends SIGKILL 30 s after SIGTERM)
keepalive = 75  # > nginx's upstream keepalive_timeout (60 s), so gunicorn never closes a connection nginx reuses
preload_app = True  # imports (numpy, flask, torch for NCF) once in the master; each worker loads its own model
umask = 0o000  # the unix socket must be writable by nginx's worker user when running as root
accesslog = None
errorlog = "-"
loglevel = os.environ.get("RECSYS_LOG_LEVEL", "info").lower()
proc_name = "recsys-serve"
control_socket_disable = True  # gunicorn ≥ 24 would otherwise create ~/.gunicorn/gunicorn.ctl
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def post_worker_init(worker):
    """Start loading the model in the background: /ping answers 503 until it is ready in every worker."""
    from recsys.serving.app import EXTENSION, exit_worker_on_error

    worker.wsgi.extensions[EXTENSION].start(on_error=exit_worker_on_error)


def child_exit(server, worker):
    """In the master: a worker that exited is no longer ready; /ping answers 503 until its replacement has loaded."""
    from recsys.serving.app import WorkerReadiness

    readiness = WorkerReadiness.from_env(workers)
    if readiness is not None:
        readiness.forget(worker.pid)
