"""The nginx configuration `serve` renders: every placeholder filled, limits from the environment, and accepted by the
real nginx (`nginx -t`)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from recsys.serving.serve import find_nginx, render_nginx_conf
from recsys.serving.settings import Settings


def render(tmp_path, monkeypatch, **env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    conf = render_nginx_conf(settings, tmp_path, tmp_path / "gunicorn.sock")
    (tmp_path / "nginx.conf").write_text(conf)
    return conf


def test_placeholders_and_defaults(tmp_path, monkeypatch):
    conf = render(tmp_path, monkeypatch)
    assert "{{" not in conf and "}}" not in conf
    assert "listen 8080 " in conf and "client_max_body_size 6m;" in conf
    assert "proxy_read_timeout 600s;" in conf and "daemon off;" in conf
    assert f"pid {tmp_path}/nginx.pid;" in conf and f"unix:{tmp_path}/gunicorn.sock" in conf
    assert "access_log off;" in conf
    for path in ("/ping", "/invocations", "/execution-parameters"):
        assert f"location = {path} " in conf
    user_lines = [line for line in conf.splitlines() if line.startswith("user ")]
    assert bool(user_lines) == (os.geteuid() == 0)  # as root, nginx workers drop to an unprivileged user


def test_environment_sizes_the_limits(tmp_path, monkeypatch):
    conf = render(
        tmp_path,
        monkeypatch,
        SAGEMAKER_BIND_TO_PORT="9123",
        SAGEMAKER_BATCH="True",
        MODEL_SERVER_TIMEOUT="900",
        RECSYS_ACCESS_LOG="true",
    )
    assert "listen 9123 " in conf and "client_max_body_size 100m;" in conf
    assert "proxy_read_timeout 900s;" in conf and "access_log /dev/stdout;" in conf
    conf = render(tmp_path, monkeypatch, SAGEMAKER_MAX_PAYLOAD_IN_MB="20")
    assert "client_max_body_size 20m;" in conf and "larger than 20 MB" in conf


@pytest.mark.skipif(not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()), reason="nginx is not installed")
def test_nginx_accepts_the_configuration(tmp_path, monkeypatch):
    render(tmp_path, monkeypatch)
    result = subprocess.run(
        [find_nginx(), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_nginx_error_answers_are_the_app_constants(tmp_path, monkeypatch):
    from recsys.serving import errors

    conf = render(tmp_path, monkeypatch, SAGEMAKER_MAX_PAYLOAD_IN_MB="20")
    for reply in (errors.NOT_FOUND, errors.too_large(20), errors.UPSTREAM_DOWN, errors.UPSTREAM_TIMEOUT):
        assert f"return {reply.status.value} '{reply.body.decode()}';" in conf
    assert f"error_page 502 ={errors.UPSTREAM_DOWN.status.value} @unavailable;" in conf


@pytest.mark.skipif(not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()), reason="nginx is not installed")
def test_real_nginx_answers_its_errors_with_the_constants(tmp_path, monkeypatch):
    """nginx alone (no gunicorn behind it): its 404, 413 and 502→503 answers are the constants, as JSON."""
    import socket
    import time

    import requests

    from recsys.serving import errors

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.chmod(tmp_path, 0o755)  # as root, nginx workers (www-data) reach the runtime directory
    render(tmp_path, monkeypatch, SAGEMAKER_BIND_TO_PORT=str(port), SAGEMAKER_MAX_PAYLOAD_IN_MB="1")
    nginx = subprocess.Popen([find_nginx(), "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                requests.get(f"{url}/nope", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        answers = [
            (requests.get(f"{url}/nope", timeout=5), errors.NOT_FOUND),
            (requests.post(f"{url}/invocations", data=b"x" * (2 * 1024 * 1024), timeout=10), errors.too_large(1)),
            (requests.get(f"{url}/ping", timeout=5), errors.UPSTREAM_DOWN),
        ]
        for response, reply in answers:
            assert response.status_code == reply.status and response.content == reply.body
            assert response.headers["Content-Type"] == "application/json"
    finally:
        nginx.terminate()
        nginx.wait(10)
