"""``serve``: the SageMaker hosting entry point — nginx in front of gunicorn (unix socket) running the Flask app.

A small supervisor: it resolves the model directory (unpacking ``model.tar.gz`` once when SDK local mode mounts the
tarball), renders ``nginx.conf`` into a private runtime directory, starts gunicorn and nginx in the foreground,
and exits when either dies (non-zero) or on SIGTERM/SIGINT: nginx is stopped gracefully first (SIGQUIT: it stops
accepting and lets in-flight requests finish), then gunicorn (SIGTERM: workers finish their current request).
Exit code 0 after a requested stop.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from recsys.platform.errors import UserError
from recsys.platform.logs import configure_logging
from recsys.platform.resources import usable_cpus
from recsys.serving import errors
from recsys.serving.settings import MODEL_DIR_ENV, READY_DIR_ENV, SOCKET_ENV, Settings

log = logging.getLogger("recsys.serve")

NGINX_STOP_WAIT = 15.0  # seconds for in-flight requests after SIGTERM (SageMaker kills 30 s after SIGTERM)
GUNICORN_STOP_WAIT = 12.0  # gunicorn's graceful_timeout is 10 s
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def find_nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise UserError("nginx is not installed (looked on PATH and in /usr/sbin); install it (apt-get install nginx)")
    return found


def resolve_model_dir(model_dir: Path) -> tuple[Path, Path | None]:
    """(directory holding manifest.json, temp dir to remove at exit or None). Unpacks model.tar.gz once, here, so
    every worker reads the same files."""
    if (model_dir / "manifest.json").is_file():
        return model_dir, None
    from recsys.artifact import ArtifactError, find_model_dir

    try:
        found = find_model_dir(model_dir)
    except ArtifactError as exc:
        raise UserError(str(exc)) from None
    tmp = Path(tempfile.gettempdir())
    top = found
    while top.parent != tmp and top.parent != top:
        top = top.parent
    return found, (top if top.parent == tmp else None)


def _worker_user() -> str:
    """nginx's ``user`` directive: only meaningful as root (workers drop to this user)."""
    if os.geteuid() != 0:
        return ""
    for name in ("www-data", "nginx", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return f"user {name} {grp.getgrgid(entry.pw_gid).gr_name};"
    return "user root;"


def render_nginx_conf(settings: Settings, runtime: Path, socket: Path) -> str:
    template = resources.files("recsys.serving").joinpath("nginx.conf.template").read_text()
    values = {
        "USER": _worker_user(),
        "NGINX_WORKERS": settings.nginx_workers,
        "RUNTIME": str(runtime),
        "SOCKET": str(socket),
        "PORT": str(settings.port),
        "MAX_BODY": f"{settings.body_limit_mb}m",
        "PROXY_TIMEOUT": str(settings.proxy_timeout),
        "ACCESS_LOG": "/dev/stdout" if settings.access_log else "off",
        "UPSTREAM_KEEPALIVE": "keepalive 64;" if settings.worker_class == "gthread" else "",
        # nginx's own error answers, the same bodies and statuses as the app's (recsys.serving.errors)
        "RETURN_NOT_FOUND": errors.nginx_return(errors.NOT_FOUND),
        "RETURN_TOO_LARGE": errors.nginx_return(errors.too_large(settings.body_limit_mb)),
        "RETURN_UPSTREAM_DOWN": errors.nginx_return(errors.UPSTREAM_DOWN),
        "UPSTREAM_DOWN_STATUS": str(errors.UPSTREAM_DOWN.status.value),
        "RETURN_UPSTREAM_TIMEOUT": errors.nginx_return(errors.UPSTREAM_TIMEOUT),
    }
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    return template


class Supervisor:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.stop_requested = False
        self.children: dict[str, subprocess.Popen] = {}
        self.cleanup: list[Path] = []

    def _on_signal(self, signum, _frame) -> None:
        if not self.stop_requested:
            log.info("received %s: stopping", signal.Signals(signum).name)
        self.stop_requested = True

    def start(self) -> None:
        settings = self.settings
        nginx = find_nginx()
        model_dir, unpacked = resolve_model_dir(settings.model_dir)
        if unpacked is not None:
            self.cleanup.append(unpacked)
        runtime = Path(tempfile.mkdtemp(prefix="recsys-serve-"))
        self.cleanup.append(runtime)
        if os.geteuid() == 0:
            os.chmod(runtime, 0o755)  # nginx workers (www-data) reach the socket through it
        socket = runtime / "gunicorn.sock"
        conf = runtime / "nginx.conf"
        conf.write_text(render_nginx_conf(settings, runtime, socket))

        # one file per worker that has loaded the model (recsys.serving.state.WorkerReadiness)
        ready = runtime / "ready"
        ready.mkdir()
        env = {**os.environ, MODEL_DIR_ENV: str(model_dir), SOCKET_ENV: str(socket), READY_DIR_ENV: str(ready)}
        per_worker = max(1, usable_cpus() // settings.workers)
        for var in THREAD_VARS:  # N workers × M math threads ≤ cores; the user's own setting wins
            env.setdefault(var, str(per_worker))
        log.info(
            "serving %s on port %d: %d gunicorn %s worker(s)%s, timeout %d s, body limit %s MB",
            model_dir,
            settings.port,
            settings.workers,
            settings.worker_class,
            f" × {settings.threads} threads" if settings.worker_class == "gthread" else "",
            settings.timeout,
            settings.body_limit_mb or "no",
        )
        gunicorn = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "python:recsys.serving.gunicorn_conf",
                "recsys.serving.app:create_app()",
            ],
            env=env,
        )
        self.children["gunicorn"] = gunicorn
        # nginx starts once gunicorn listens (~1-2 s of imports), so its log holds no connect() errors; until every
        # worker has loaded the model the app itself answers /ping with 503.
        while not socket.exists() and gunicorn.poll() is None and not self.stop_requested:
            time.sleep(0.02)
        if gunicorn.poll() is None and not self.stop_requested:
            self.children["nginx"] = subprocess.Popen([nginx, "-p", str(runtime), "-c", str(conf), "-e", "stderr"])

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            self.start()
            while not self.stop_requested:
                for name, child in self.children.items():
                    code = child.poll()
                    if code is not None:
                        log.error("%s exited unexpectedly (code %s); stopping", name, code)
                        self.stop()
                        return code or 1
                time.sleep(0.1)
            self.stop()
            return 0
        finally:
            for path in self.cleanup:
                shutil.rmtree(path, ignore_errors=True)

    def stop(self) -> None:
        """nginx first (finishes in-flight requests, which need gunicorn), then gunicorn."""
        self._stop("nginx", signal.SIGQUIT, NGINX_STOP_WAIT)
        self._stop("gunicorn", signal.SIGTERM, GUNICORN_STOP_WAIT)

    def _stop(self, name: str, sig: int, wait: float) -> None:
        child = self.children.get(name)
        if child is None or child.poll() is not None:
            return
        child.send_signal(sig)
        try:
            child.wait(wait)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", name, wait)
            child.kill()
            child.wait()


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    try:
        settings = Settings.from_env()
        return Supervisor(settings).run()
    except UserError as err:
        log.error("cannot serve: %s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
