"""The pipeline (recsys.pipeline.definition, ``local=True``) run for real with the SDK's ``LocalPipelineSession``:
Train (this image) → QualityGate (this image, processing) → CheckHR → CreateModel, or → HRTooLow (FailStep).

Data and outputs live in moto S3 (server mode, ``AWS_ENDPOINT_URL``): ``JsonGet`` reads property files only through
S3, and ``default_bucket=`` keeps the SDK away from STS. RegisterModel and the Lambda step are not in the local
variant (local pipelines refuse them); tests/unit/test_pipeline_definition.py and
tests/unit/test_pipeline_deploy_handler.py cover them. Each execution trains once (NCF, 2 epochs on the fixture)."""

from __future__ import annotations

import io
import json
import tarfile
import time

import pytest

from helpers.aws import REGION, apply_env, fake_aws_env, moto_server, validate_once

from .container_helpers import FAST, remove_containers_of, split_fixture

pytestmark = pytest.mark.container

BUCKET = "recsys-local-pipeline"
PREFIX = "recsys"
ROLE = "arn:aws:iam::111111111111:role/SageMakerRole"


@pytest.fixture(scope="module")
def s3(sdk_env, tmp_path_factory: pytest.TempPathFactory):
    """moto S3 holding the fixture split into train/ and test/ under s3://BUCKET/recsys/data/."""
    import boto3

    with moto_server() as url, pytest.MonkeyPatch.context() as mp:
        apply_env(mp, fake_aws_env(url, REGION))
        mp.setattr("sagemaker.utils.validate_sagemaker_config", validate_once())
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        for directory in split_fixture(tmp_path_factory.mktemp("pipeline-data")):
            for path in directory.glob("*.csv"):
                client.upload_file(str(path), BUCKET, f"{PREFIX}/data/{directory.name}/{path.name}")
        yield client


@pytest.fixture(scope="module")
def pipeline(image: str, s3, tmp_path_factory: pytest.TempPathFactory):
    import boto3
    from sagemaker.workflow.pipeline_context import LocalPipelineSession

    from recsys.pipeline.definition import PipelineConfig, build_pipeline

    root = tmp_path_factory.mktemp("pipeline-containers")  # local mode needs an existing container_root
    session = LocalPipelineSession(boto_session=boto3.Session(region_name=REGION), default_bucket=BUCKET)
    session.config = {"local": {"local_code": True, "container_root": str(root)}}
    config = PipelineConfig(
        image_uri=image,
        role_arn=ROLE,
        bucket=BUCKET,
        prefix=PREFIX,
        name="recsys-local",
        hyperparameters=FAST["ncf"],
        test_channel=True,
    )
    built = build_pipeline(config, session, local=True)
    built.create(role_arn=ROLE)
    yield built
    remove_containers_of(image)


def run(pipeline, image: str, **parameters):
    """Start one execution (local mode runs it to the end), remove its exited containers; (status, reason, steps)."""
    started = time.monotonic()
    try:
        execution = pipeline.start(parameters=parameters)
    finally:
        remove_containers_of(image)
    described = execution.describe()
    steps = {s["StepName"]: s for s in execution.list_steps()["PipelineExecutionSteps"]}
    print(
        f"\nlocal pipeline {parameters}: {described['PipelineExecutionStatus']} in {time.monotonic() - started:.1f} s"
    )
    return described["PipelineExecutionStatus"], described.get("FailureReason", ""), steps


def read_json(s3, uri: str, member: str | None = None) -> dict:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if member is None:
        return json.loads(body)
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return json.loads(tar.extractfile(member).read())


def test_hr_above_the_threshold_creates_the_model(pipeline, image: str, s3) -> None:
    status, reason, steps = run(pipeline, image, HRThreshold=0.0, GateMetric="test")
    assert status == "Succeeded", (reason, steps)
    assert {name: s["StepStatus"] for name, s in steps.items()} == {
        "Train": "Succeeded",
        "QualityGate": "Succeeded",
        "CheckHR": "Succeeded",
        "CreateModel-CreateModel": "Succeeded",
    }
    # str(): local mode reports the outcome as a bool, SageMaker as the string "True"/"False".
    assert str(steps["CheckHR"]["Metadata"]["Condition"]["Outcome"]) == "True"
    assert steps["CreateModel-CreateModel"]["Metadata"]["Model"]["Arn"]

    # The gate's HR is the one `train` reported for the test channel (output.tar.gz's data/evaluation.json).
    job = steps["Train"]["Metadata"]["TrainingJob"]["Arn"]
    trained = read_json(s3, f"s3://{BUCKET}/{PREFIX}/training/{job}/output/output.tar.gz", "data/evaluation.json")
    keys = s3.list_objects_v2(Bucket=BUCKET, Prefix="recsys-local/")["Contents"]
    (gate_key,) = [o["Key"] for o in keys if o["Key"].endswith("/QualityGate/output/evaluation/evaluation.json")]
    gate = read_json(s3, f"s3://{BUCKET}/{gate_key}")
    assert gate["metrics"]["role"] == "test" and gate["metrics"]["HR"] == trained["metrics"]["test"]["HR"]
    assert gate["source"] == "output.tar.gz:data/evaluation.json"
    assert gate["held_out"] == trained["held_out"]


def test_hr_below_the_threshold_fails_with_the_hr_and_the_threshold(pipeline, image: str) -> None:
    status, reason, steps = run(pipeline, image, HRThreshold=1.01, GateMetric="validation")
    assert status == "Failed", (reason, steps)
    assert "CreateModel-CreateModel" not in steps
    assert str(steps["CheckHR"]["Metadata"]["Condition"]["Outcome"]) == "False"
    message = steps["HRTooLow"]["Metadata"]["Fail"]["ErrorMessage"]
    assert "HRTooLow" in reason and message in reason
    assert "validation HR " in message and "below the threshold 1.01" in message, message
