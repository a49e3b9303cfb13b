"""AWS offline: moto in server mode, the environment that sends boto3 and the SageMaker SDK to it (fake
credentials, no profile, no instance metadata), SDK telemetry off, and a faster SDK config check."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.net import free_port

REGION = "us-east-1"
TELEMETRY_OFF = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port for the duration; yields its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def fake_aws_env(url: str, region: str = REGION) -> dict[str, str]:
    """What sends every AWS client to ``url``: AWS_ENDPOINT_URL plus fake credentials and a region."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def sdk_env(config_dir: Path) -> dict[str, str]:
    """The SageMaker SDK's telemetry off (through a defaults config file written to ``config_dir``), no v2 banner."""
    config = config_dir / "sagemaker-config.yaml"
    config.write_text(TELEMETRY_OFF)
    return {"SAGEMAKER_USER_CONFIG_OVERRIDE": str(config), "SAGEMAKER_SUPPRESS_V2_WARNING": "1"}


def apply_env(mp: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Set ``env`` and drop what would send clients elsewhere (a profile, a session token)."""
    for key, value in env.items():
        mp.setenv(key, value)
    mp.delenv("AWS_PROFILE", raising=False)
    mp.delenv("AWS_SESSION_TOKEN", raising=False)


def validate_once():
    """A stand-in for ``sagemaker.utils.validate_sagemaker_config`` that validates each distinct config once, for
    real: the SDK re-validates its unchanged defaults config, schema included, on every config lookup (~0.4 s
    each on a busy machine, ~50 lookups per pipeline build)."""
    import sagemaker.utils

    real, seen = sagemaker.utils.validate_sagemaker_config, set()

    def validate(config=None):
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in seen:
            real(config)
            seen.add(key)

    return validate
