"""Gunicorn settings for ``serve`` (loaded with ``-c python:recsys.serving.gunicorn_conf``), all from
``recsys.serving.settings``; ``serve`` adds the socket path (``RECSYS_GUNICORN_SOCKET``) and the workers' readiness
directory (``RECSYS_READY_DIR``, ``recsys.serving.state.WorkerReadiness``)."""

import os

from recsys.platform.errors import UserError
from recsys.platform.logs import configure_logging
from recsys.serving.settings import SOCKET_ENV, Settings

configure_logging()
_settings = Settings.from_env()
if _settings.gunicorn_socket is None:
    raise UserError(f"{SOCKET_ENV} is not set: start the server with `serve`, which sets it")

bind = f"unix:{_settings.gunicorn_socket}"
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
loglevel = _settings.gunicorn_log_level
proc_name = "recsys-serve"
control_socket_disable = True  # gunicorn ≥ 24 would otherwise create ~/.gunicorn/gunicorn.ctl
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def post_worker_init(worker):
    """Start loading the model in the background: /ping answers 503 until it is ready in every worker."""
    from recsys.serving.app import EXTENSION, exit_worker_on_error

    worker.wsgi.extensions[EXTENSION].start(on_error=exit_worker_on_error)


def child_exit(server, worker):
    """In the master: a worker that exited is no longer ready; /ping answers 503 until its replacement has loaded."""
    from recsys.serving.state import WorkerReadiness

    readiness = WorkerReadiness.of(_settings)
    if readiness is not None:
        readiness.forget(worker.pid)


def worker_exit(server, worker):
    """In a worker that has finished its last request: exit now, with the exit code gunicorn chose. Tearing down an
    interpreter that imported torch takes seconds, which SIGTERM → exit (a model swap, a scale-in) would wait for."""
    import sys

    from recsys.platform.lifecycle import exit_now

    pending = sys.exc_info()[1]  # gunicorn calls this hook while the worker's SystemExit propagates
    code = pending.code if isinstance(pending, SystemExit) else 1 if pending is not None else 0
    exit_now(code if isinstance(code, int) else 1)
