"""build_and_push.sh for real: the AWS CLI talks to moto (server mode: STS, ECR), `docker login` / `docker push` go
to a real registry (Debian's docker-registry, TLS on loopback), and the pushed image is pulled back by digest.

moto's ECR answers with a registry host (<account>.dkr.ecr.<region>.amazonaws.com) that cannot receive pushes, so
the script's ECR_REGISTRY_OVERRIDE points the login/tag/push at the local registry; everything else is unchanged.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers.aws import moto_server

from .container_helpers import ROOT, docker, free_port, require_engine, run_container, torch_index_build_args

pytestmark = pytest.mark.container

REPOSITORY = "recsys-test-push"
CERTS_DIRS = (Path("/etc/docker/certs.d"),)  # read per request by Docker and by podman (containers/image)


def _missing(reason: str):
    if require_engine():
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def aws_cli() -> Path:
    """The AWS CLI: .venv-awscli/bin/aws (PyPI awscli v1 in its own venv, so its botocore pin does not fight the
    project venv's boto3), created here when missing; else an `aws` on PATH that works."""
    venv = ROOT / ".venv-awscli"
    aws = venv / "bin" / "aws"
    if not aws.exists():
        on_path = shutil.which("aws")
        if on_path and subprocess.run([on_path, "--version"], capture_output=True).returncode == 0:
            return Path(on_path)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        proc = subprocess.run([str(venv / "bin/pip"), "install", "-q", "awscli"], capture_output=True, text=True)
        if proc.returncode != 0:
            _missing(f"could not install the AWS CLI into {venv}: {proc.stderr[-1000:]}")
    return aws


@pytest.fixture(scope="module")
def moto_endpoint():
    with moto_server() as url:
        yield url


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "registry.crt", directory / "registry.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    """A real registry (Debian's docker-registry) with TLS on 127.0.0.1:<free port>; the engine trusts its
    certificate through certs.d/<host:port>/ca.crt (removed afterwards). Yields (host:port, CA file)."""
    binary = shutil.which("docker-registry") or shutil.which("docker-registry", path="/usr/bin:/usr/sbin")
    if binary is None:
        _missing("Debian's docker-registry is not installed (apt-get install docker-registry; .ci/run does it)")
    work = tmp_path_factory.mktemp("registry")
    cert, key = _self_signed(work)
    port = free_port()
    host = f"127.0.0.1:{port}"
    config = work / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {work / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {host}\n  secret: recsys-test\n  tls:\n    certificate: {cert}\n    key: {key}\n"
    )
    installed: list[Path] = []
    try:
        for certs in CERTS_DIRS:
            target = certs / host
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(cert, target / "ca.crt")
            installed.append(target)
    except PermissionError as err:
        for target in installed:
            shutil.rmtree(target, ignore_errors=True)
        _missing(f"cannot trust the test registry's certificate ({err}); run as root")
    log = (work / "registry.log").open("w")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    context = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"https://{host}/v2/", context=context, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"registry did not start: {(work / 'registry.log').read_text()}") from None
                time.sleep(0.1)
        yield host, context
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        for target in installed:
            shutil.rmtree(target, ignore_errors=True)


def _registry_get(host: str, context: ssl.SSLContext, path: str, method: str = "GET"):
    accept = ", ".join(
        [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ]
    )
    request = urllib.request.Request(f"https://{host}{path}", method=method, headers={"Accept": accept})
    with urllib.request.urlopen(request, context=context, timeout=10) as resp:
        return resp.status, resp.read(), dict(resp.headers)


def test_build_and_push_to_ecr(image: str, aws_cli: Path, moto_endpoint: str, registry, tmp_path: Path) -> None:
    host, context = registry
    # A sealed AWS environment: dummy credentials, no config files of the user's, every call to moto.
    (tmp_path / "aws").mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "PATH": f"{aws_cli.parent}:{os.environ['PATH']}",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "aws/config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws/credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "ECR_REGISTRY_OVERRIDE": host,
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),  # `docker login` writes here, not to ~/.docker
    }
    cmd = [str(ROOT / "build_and_push.sh"), "--cpu", *torch_index_build_args(), REPOSITORY, "ci"]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=40 * 60)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr[-5000:]}"
    print(f"\nbuild_and_push.sh --cpu: {seconds:.1f} s")

    # stdout is exactly the image URI.
    uri = proc.stdout.strip()
    assert uri == f"{host}/{REPOSITORY}:ci", proc.stdout

    # The ECR repository was created (in moto) and the registry login went through `aws ecr get-login-password`.
    import boto3

    ecr = boto3.client(
        "ecr",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    names = [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
    assert REPOSITORY in names
    assert "Login Succeeded" in proc.stderr

    # Tags: TAG, <commit>[-dirty]-cpu, latest-cpu.
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    _, body, _ = _registry_get(host, context, f"/v2/{REPOSITORY}/tags/list")
    tags = set(json.loads(body)["tags"])
    assert {"ci", "latest-cpu"} <= tags, tags
    assert any(t.startswith(commit.stdout.strip() or "nogit") and t.endswith("-cpu") for t in tags), tags

    # Pull it back by digest: the same image (config digest = image id), every layer blob present in the registry.
    _, manifest_body, headers = _registry_get(host, context, f"/v2/{REPOSITORY}/manifests/ci")
    digest = headers["Docker-Content-Digest"]
    manifest = json.loads(manifest_body)
    for layer in [manifest["config"], *manifest["layers"]]:
        status, _, _ = _registry_get(host, context, f"/v2/{REPOSITORY}/blobs/{layer['digest']}", method="HEAD")
        assert status == 200, layer
    built_id = docker("image", "inspect", "-f", "{{.Id}}", uri).stdout.strip()
    local_refs = [f"{host}/{REPOSITORY}:{t}" for t in tags]
    docker("rmi", *local_refs, check=False)
    by_digest = f"{host}/{REPOSITORY}@{digest}"
    try:
        docker("pull", by_digest, timeout=600)
        assert docker("image", "inspect", "-f", "{{.Id}}", by_digest).stdout.strip() == built_id
        run = run_container(by_digest, "python", "-c", "import recsys.training.main, recsys.serving.serve; print('ok')")
        assert run.code == 0 and "ok" in run.logs, run.logs
    finally:
        docker("rmi", by_digest, check=False)
