"""Start the pipeline when new training data lands: an EventBridge rule on S3 "Object Created" events under the data
prefix, targeting the SageMaker pipeline (the rule's role needs ``sagemaker:StartPipelineExecution``).

S3 sends events to EventBridge only when the bucket's notification configuration has ``EventBridgeConfiguration``;
``enable_bucket_events`` adds it without dropping the bucket's other notifications (the put replaces them all).
The definitions are plain dicts (the keyword arguments of boto3's ``put_rule`` / ``put_targets``), so they can be
reviewed, tested, or fed to infrastructure code; ``put_trigger`` applies them with boto3.
"""

from __future__ import annotations

import json

DEFAULT_RULE_NAME = "recsys-new-training-data"
TARGET_ID = "recsys-pipeline"


def _prefix(prefix: str) -> str:
    # Keys never start with "/"; a trailing "/" keeps "data/train" from also matching "data/training-old/..."
    prefix = prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def event_pattern(bucket: str, prefix: str) -> dict:
    return {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"prefix": _prefix(prefix)}]}},
    }


def rule_definition(bucket: str, prefix: str, name: str = DEFAULT_RULE_NAME) -> dict:
    """``put_rule`` arguments."""
    return {
        "Name": name,
        "EventPattern": json.dumps(event_pattern(bucket, prefix)),
        "State": "ENABLED",
        "Description": f"New objects under s3://{bucket}/{_prefix(prefix)} start the recsys training pipeline",
    }


def target_definition(
    rule_name: str, pipeline_arn: str, role_arn: str, parameters: dict[str, str] | None = None
) -> dict:
    """``put_targets`` arguments: the pipeline ARN with the role EventBridge assumes to start it, and the pipeline
    parameters each execution gets (EventBridge passes them as given: they cannot depend on the event)."""
    target: dict = {"Id": TARGET_ID, "Arn": pipeline_arn, "RoleArn": role_arn}
    if parameters:
        target["SageMakerPipelineParameters"] = {
            "PipelineParameterList": [{"Name": k, "Value": str(v)} for k, v in parameters.items()]
        }
    return {"Rule": rule_name, "Targets": [target]}


def enable_bucket_events(s3_client, bucket: str) -> None:
    """Turn on S3 → EventBridge delivery for the bucket, keeping its existing notifications."""
    current = s3_client.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    if "EventBridgeConfiguration" in current:
        return
    current["EventBridgeConfiguration"] = {}
    s3_client.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=current)


def put_trigger(
    events_client,
    s3_client,
    *,
    bucket: str,
    prefix: str,
    pipeline_arn: str,
    role_arn: str,
    parameters: dict[str, str] | None = None,
    rule_name: str = DEFAULT_RULE_NAME,
) -> str:
    """Enable the bucket's EventBridge notifications, put the rule and its pipeline target; returns the rule ARN."""
    enable_bucket_events(s3_client, bucket)
    rule_arn = events_client.put_rule(**rule_definition(bucket, prefix, rule_name))["RuleArn"]
    response = events_client.put_targets(**target_definition(rule_name, pipeline_arn, role_arn, parameters))
    if response.get("FailedEntryCount"):
        raise RuntimeError(f"put_targets failed for rule {rule_name}: {response.get('FailedEntries')}")
    return rule_arn
