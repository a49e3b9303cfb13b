"""The deploy Lambda handler (recsys.pipeline.deploy_handler), called in-process as the Lambda runtime would, against
moto's SageMaker API in server mode (create branch) and botocore's Stubber (update branch: moto 5.2.5 answers
update_endpoint with HTTP 500 NotImplementedError). No AWS account: fake credentials, AWS_ENDPOINT_URL → moto."""

from __future__ import annotations

import json

import pytest

from helpers.aws import apply_env, fake_aws_env, moto_server
from recsys.pipeline import deploy_handler
from recsys.pipeline.deploy_handler import DeployEventError, handler

boto3 = pytest.importorskip("boto3")
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/recsys:test"


@pytest.fixture(scope="module")
def moto_url():
    with moto_server() as url, pytest.MonkeyPatch.context() as mp:
        apply_env(mp, fake_aws_env(url))
        yield url


@pytest.fixture
def sagemaker(moto_url):
    return boto3.client("sagemaker", region_name="us-east-1")


def event(model_name: str, endpoint_name: str, **extra) -> dict:
    """What the pipeline's LambdaStep sends (its `inputs`)."""
    return {"model_name": model_name, "endpoint_name": endpoint_name, "instance_type": "ml.m5.large", **extra}


def test_creates_config_and_endpoint_when_the_endpoint_does_not_exist(sagemaker) -> None:
    sagemaker.create_model(ModelName="recsys-m1", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    package = "arn:aws:sagemaker:us-east-1:123456789012:model-package/recsys/1"
    # No client passed: the handler builds its own, as in Lambda (AWS_ENDPOINT_URL sends it to moto).
    result = handler(event("recsys-m1", "recsys-create", instance_count="2", model_package_arn=package), None)

    assert result["action"] == "created" and result["statusCode"] == 200
    assert result["endpoint_name"] == "recsys-create" and result["model_name"] == "recsys-m1"
    config = sagemaker.describe_endpoint_config(EndpointConfigName=result["endpoint_config_name"])
    (variant,) = config["ProductionVariants"]
    assert variant["ModelName"] == "recsys-m1"
    assert variant["InstanceType"] == "ml.m5.large"
    assert variant["InitialInstanceCount"] == 2
    assert variant["VariantName"] == deploy_handler.VARIANT_NAME
    endpoint = sagemaker.describe_endpoint(EndpointName="recsys-create")
    assert endpoint["EndpointConfigName"] == result["endpoint_config_name"]
    tags = sagemaker.list_tags(ResourceArn=config["EndpointConfigArn"])["Tags"]
    assert {"Key": "recsys:model-package", "Value": package} in tags


def test_each_run_gets_a_new_valid_config_name() -> None:
    long_name = "e" * 60
    names = {deploy_handler.endpoint_config_name(long_name) for _ in range(20)}
    assert len(names) == 20, "configs are immutable: a run must never reuse a name"
    assert all(len(n) <= 63 and deploy_handler._NAME.match(n) for n in names), names
    assert deploy_handler.endpoint_config_name("recsys").startswith("recsys-")


CANARY = {
    "BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {
            "Type": "CANARY",
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
            "WaitIntervalInSeconds": 300,
        },
        "TerminationWaitInSeconds": 120,
    },
    "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "recsys-5xx"}]},
}


@pytest.mark.parametrize("deployment", [None, CANARY], ids=["all-at-once", "canary"])
def test_updates_an_existing_endpoint_to_the_new_config(moto_url, deployment) -> None:
    """The update branch, call by call: new config → describe (exists) → update_endpoint to that config, with the
    pipeline's DeploymentConfig when it sets one (as JSON text, the way LambdaStep inputs carry it)."""
    from botocore.stub import ANY, Stubber

    client = boto3.client("sagemaker", region_name="us-east-1")
    calls: list[tuple[str, dict]] = []
    client.meta.events.register(
        "provide-client-params.sagemaker.*", lambda params, model, **_: calls.append((model.name, dict(params)))
    )
    arn = "arn:aws:sagemaker:us-east-1:123456789012:endpoint"
    with Stubber(client) as stub:
        stub.add_response(
            "create_endpoint_config",
            {"EndpointConfigArn": f"{arn}-config/new"},
            {"EndpointConfigName": ANY, "ProductionVariants": ANY},
        )
        stub.add_response(
            "describe_endpoint",
            {
                "EndpointName": "recsys-live",
                "EndpointArn": f"{arn}/recsys-live",
                "EndpointConfigName": "recsys-live-old",
                "EndpointStatus": "InService",
                "CreationTime": "2026-01-01T00:00:00Z",
                "LastModifiedTime": "2026-01-01T00:00:00Z",
            },
            {"EndpointName": "recsys-live"},
        )
        stub.add_response(
            "update_endpoint",
            {"EndpointArn": f"{arn}/recsys-live"},
            {
                "EndpointName": "recsys-live",
                "EndpointConfigName": ANY,
                **({"DeploymentConfig": ANY} if deployment else {}),
            },
        )
        extra = {"deployment_config": json.dumps(deployment)} if deployment else {}
        result = handler(event("recsys-m2", "recsys-live", **extra), None, client=client)
        stub.assert_no_pending_responses()

    assert result["action"] == "updated"
    assert [name for name, _ in calls] == ["CreateEndpointConfig", "DescribeEndpoint", "UpdateEndpoint"]
    created, updated = calls[0][1], calls[2][1]
    expected = {"EndpointName": "recsys-live", "EndpointConfigName": created["EndpointConfigName"]}
    assert updated == ({**expected, "DeploymentConfig": deployment} if deployment else expected)
    assert result["endpoint_config_name"] == created["EndpointConfigName"] != "recsys-live-old"
    assert created["ProductionVariants"][0]["ModelName"] == "recsys-m2"


def test_an_error_other_than_not_found_is_not_taken_for_a_missing_endpoint(moto_url) -> None:
    from botocore.exceptions import ClientError
    from botocore.stub import ANY, Stubber

    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_response(
            "create_endpoint_config",
            {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/x"},
            {"EndpointConfigName": ANY, "ProductionVariants": ANY},
        )
        stub.add_client_error("describe_endpoint", "AccessDeniedException", "not allowed")
        with pytest.raises(ClientError, match="not allowed"):
            handler(event("m", "recsys-x"), None, client=client)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (None, "must be a JSON object"),
        ({}, "lacks model_name, endpoint_name, instance_type"),
        ({"model_name": "m", "endpoint_name": "e"}, "lacks instance_type"),
        (event("m", "bad_name!"), "not a valid SageMaker endpoint name"),
        (event("m", "e", instance_count="two"), "instance_count must be an integer"),
        (event("m", "e", instance_count=0), "at least 1"),
        (event("m", "e", deployment_config="{not json"), "deployment_config is not valid JSON"),
        (event("m", "e", deployment_config={"Type": "CANARY"}), "BlueGreenUpdatePolicy or RollingUpdatePolicy"),
    ],
)
def test_a_bad_event_fails_clearly_before_any_aws_call(moto_url, bad, message: str) -> None:
    from botocore.stub import Stubber

    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client), pytest.raises(DeployEventError, match=message):  # no responses: any AWS call would fail
        handler(bad, None, client=client)
