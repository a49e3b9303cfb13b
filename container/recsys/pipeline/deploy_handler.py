"""The pipeline's deploy step: a Lambda handler that points an endpoint at a freshly created model.

Self-contained (standard library + boto3, which the Lambda runtime provides): deploy this file alone with handler
``deploy_handler.handler``. The LambdaStep sends ``{"model_name", "endpoint_name", "instance_type",
"instance_count", "model_package_arn"?, "deployment_config"?}``. The handler creates a new endpoint config (a unique
name: configs are immutable and a pipeline run must not collide with the previous one), then creates the endpoint if
it does not exist, else updates it to the new config: SageMaker's blue/green swap, no downtime. ``deployment_config``
is UpdateEndpoint's ``DeploymentConfig`` (canary or linear traffic shifting, rollback alarms); without it the shift is
all at once (docs/model-updates.md). It returns what it did; the keys are the LambdaStep's outputs.
"""

from __future__ import annotations

import json
import re
import time
import uuid

VARIANT_NAME = "AllTraffic"
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's EndpointName / EndpointConfigName pattern
_REQUIRED = ("model_name", "endpoint_name", "instance_type")
_DEPLOYMENT_POLICIES = ("BlueGreenUpdatePolicy", "RollingUpdatePolicy")


class DeployEventError(ValueError):
    """The event cannot describe a deployment."""


def parse_event(event: object) -> dict:
    """The deployment request, validated: a bad event fails before any AWS call, with a message that says why."""
    if not isinstance(event, dict):
        raise DeployEventError(f"deploy event must be a JSON object, got {type(event).__name__}")
    missing = [key for key in _REQUIRED if not isinstance(event.get(key), str) or not event[key].strip()]
    if missing:
        raise DeployEventError(f"deploy event lacks {', '.join(missing)} (got keys: {sorted(event)})")
    if not _NAME.match(event["endpoint_name"]):
        raise DeployEventError(f"endpoint_name {event['endpoint_name']!r} is not a valid SageMaker endpoint name")
    try:
        count = int(event.get("instance_count", 1))
    except (TypeError, ValueError):
        raise DeployEventError(f"instance_count must be an integer, got {event.get('instance_count')!r}") from None
    if count < 1:
        raise DeployEventError(f"instance_count must be at least 1, got {count}")
    return {
        "deployment_config": _deployment_config(event.get("deployment_config")),
        "model_name": event["model_name"],
        "endpoint_name": event["endpoint_name"],
        "instance_type": event["instance_type"],
        "instance_count": count,
        "model_package_arn": event.get("model_package_arn"),
    }


def _deployment_config(raw: object) -> dict | None:
    """UpdateEndpoint's DeploymentConfig from the event (an object, or its JSON text as pipeline inputs carry it)."""
    if raw in (None, ""):
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise DeployEventError(f"deployment_config is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not any(policy in raw for policy in _DEPLOYMENT_POLICIES):
        raise DeployEventError(
            "deployment_config must be an UpdateEndpoint DeploymentConfig object with "
            f"{' or '.join(_DEPLOYMENT_POLICIES)}, got {raw!r:.200}"
        )
    return raw


def endpoint_config_name(endpoint_name: str) -> str:
    """``<endpoint>-<UTC time>-<random>``, at most 63 characters (the endpoint part is cut, never the unique tail)."""
    suffix = f"-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    return endpoint_name[: 63 - len(suffix)].rstrip("-") + suffix


def endpoint_exists(client, endpoint_name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as err:
        # SageMaker answers a missing endpoint with ValidationException "Could not find endpoint ..."
        error = err.response.get("Error", {})
        if error.get("Code") == "ValidationException" and "could not find" in error.get("Message", "").lower():
            return False
        raise
    return True


def deploy(request: dict, client) -> dict:
    config_name = endpoint_config_name(request["endpoint_name"])
    tags = (
        [{"Key": "recsys:model-package", "Value": request["model_package_arn"]}] if request["model_package_arn"] else []
    )
    client.create_endpoint_config(
        EndpointConfigName=config_name,
        ProductionVariants=[
            {
                "VariantName": VARIANT_NAME,
                "ModelName": request["model_name"],
                "InitialInstanceCount": request["instance_count"],
                "InstanceType": request["instance_type"],
                "InitialVariantWeight": 1.0,
            }
        ],
        **({"Tags": tags} if tags else {}),
    )
    if endpoint_exists(client, request["endpoint_name"]):
        extra = {"DeploymentConfig": request["deployment_config"]} if request["deployment_config"] else {}
        client.update_endpoint(EndpointName=request["endpoint_name"], EndpointConfigName=config_name, **extra)
        action = "updated"
    else:
        client.create_endpoint(EndpointName=request["endpoint_name"], EndpointConfigName=config_name)
        action = "created"
    return {
        "statusCode": 200,
        "action": action,
        "endpoint_name": request["endpoint_name"],
        "endpoint_config_name": config_name,
        "model_name": request["model_name"],
    }


def handler(event, context=None, client=None) -> dict:
    """Lambda entry point. ``client``: a SageMaker client to use instead of a new one (tests)."""
    request = parse_event(event)
    if client is None:
        import boto3  # only here: the rest of the module (parse_event) runs without boto3

        client = boto3.client("sagemaker")
    return deploy(request, client)
