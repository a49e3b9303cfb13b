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
