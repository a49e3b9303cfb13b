"""The pipeline as code (recsys.pipeline.definition), its quality-gate script, and the EventBridge trigger.

The pipeline is built with a real SageMaker SDK v2 ``PipelineSession`` whose AWS calls go to moto in server mode
(fake credentials, ``AWS_ENDPOINT_URL``, ``default_bucket=``, telemetry off); the assertions read
``pipeline.definition()``, the JSON SageMaker receives. The quality gate runs in-process and with ``python -S``
(no site-packages: the image has no boto3). EventBridge: rule + targets put to moto and read back; the pattern is
checked by moto's own matcher, delivering S3 events to an SQS probe target.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers.aws import REGION, apply_env, fake_aws_env, moto_server, sdk_env, validate_once
from helpers.opt_ml import ROOT
from recsys.pipeline import definition, events, quality_gate
from recsys.pipeline.definition import PipelineConfig, build_pipeline
from recsys.training.hyperparameters import METRIC_DEFINITIONS

boto3 = pytest.importorskip("boto3")
pytest.importorskip("sagemaker")

BUCKET = "recsys-pipeline-test"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/recsys:test"
FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:recsys-deploy"
HP = {"algorithm": "ncf", "preset": "online_retail", "epochs": "2"}


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory):
    """moto in server mode and an environment that sends boto3 (and the SDK) there, with telemetry off."""
    with moto_server() as url, pytest.MonkeyPatch.context() as mp:
        env = {**fake_aws_env(url, REGION), **sdk_env(tmp_path_factory.mktemp("sdk-config"))}
        apply_env(mp, env)
        mp.setattr("sagemaker.utils.validate_sagemaker_config", validate_once())
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield env


def pipeline_session():
    from sagemaker.workflow.pipeline_context import PipelineSession

    # default_bucket=: Session.default_bucket() would ask STS at a fixed public endpoint (ignores AWS_ENDPOINT_URL).
    return PipelineSession(boto_session=boto3.Session(region_name=REGION), default_bucket=BUCKET)


def config(**overrides) -> PipelineConfig:
    values = dict(image_uri=IMAGE, role_arn=ROLE, bucket=BUCKET, deploy_function_arn=FUNCTION, hyperparameters=HP)
    return PipelineConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def cloud(aws):
    pipeline = build_pipeline(config(), pipeline_session())
    return pipeline, json.loads(pipeline.definition())


@pytest.fixture(scope="module")
def local(aws) -> dict:
    return json.loads(build_pipeline(config(deploy_function_arn=None), pipeline_session(), local=True).definition())


def steps(doc: dict) -> dict[str, dict]:
    return {s["Name"]: s for s in doc["Steps"]}


def branches(doc: dict) -> tuple[list[dict], list[dict]]:
    condition = steps(doc)[definition.STEP_CHECK]["Arguments"]
    return condition["IfSteps"], condition["ElseSteps"]


def refs(node) -> set[str]:
    """Every ``{"Get": ...}`` reference inside a JSON node: how steps depend on each other's properties."""
    if isinstance(node, dict):
        found = {node["Get"]} if set(node) == {"Get"} else set()
        return found.union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


JSON_GET_HR = {
    "Std:JsonGet": {"PropertyFile": {"Get": "Steps.QualityGate.PropertyFiles.GateReport"}, "Path": "metrics.HR"}
}


def test_parameters(cloud) -> None:
    _, doc = cloud
    params = {p["Name"]: p for p in doc["Parameters"]}
    assert set(params) == {
        "InputDataUri",
        "TrainingInstanceType",
        "TrainingInstanceCount",
        "ProcessingInstanceType",
        "HRThreshold",
        "GateMetric",
        "ModelPackageGroupName",
        "ModelApprovalStatus",
        "EndpointName",
        "EndpointInstanceType",
    }
    assert params["HRThreshold"]["Type"] == "Float"
    assert params["TrainingInstanceCount"]["Type"] == "Integer"
    assert params["GateMetric"]["EnumValues"] == ["validation", "test"]
    assert params["ModelApprovalStatus"]["DefaultValue"] == "PendingManualApproval"
    assert params["InputDataUri"]["DefaultValue"] == f"s3://{BUCKET}/recsys/data/train/"


def test_step_order_and_branches(cloud) -> None:
    _, doc = cloud
    assert [s["Name"] for s in doc["Steps"]] == ["Train", "QualityGate", "CheckHR"]
    assert [s["Type"] for s in doc["Steps"]] == ["Training", "Processing", "Condition"]
    gate = steps(doc)["QualityGate"]
    assert {"Steps.Train.ModelArtifacts.S3ModelArtifacts", "Steps.Train.TrainingJobName"} <= refs(gate)
    if_steps, else_steps = branches(doc)
    assert [(s["Name"], s["Type"]) for s in if_steps] == [
        ("RegisterModel-RegisterModel", "RegisterModel"),
        ("CreateModel-CreateModel", "Model"),
        ("DeployEndpoint", "Lambda"),
    ]
    assert if_steps[1]["DependsOn"] == ["RegisterModel-RegisterModel"]
    assert "Steps.CreateModel-CreateModel.ModelName" in refs(if_steps[2])
    assert [(s["Name"], s["Type"]) for s in else_steps] == [("HRTooLow", "Fail")]


def test_training_step(cloud) -> None:
    _, doc = cloud
    args = steps(doc)["Train"]["Arguments"]
    assert args["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert args["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    assert args["HyperParameters"] == HP
    (channel,) = args["InputDataConfig"]
    assert channel["ChannelName"] == "train"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == {"Get": "Parameters.InputDataUri"}
    assert args["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    assert args["ResourceConfig"]["InstanceCount"] == {"Get": "Parameters.TrainingInstanceCount"}
    assert args["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/recsys/training"


def test_quality_gate_step_runs_this_image_and_registers_its_report(cloud) -> None:
    _, doc = cloud
    step = steps(doc)["QualityGate"]
    app = step["Arguments"]["AppSpecification"]
    assert app["ImageUri"] == IMAGE
    assert app["ContainerEntrypoint"] == ["python", "-m", "recsys.pipeline.quality_gate"]
    assert app["ContainerArguments"] == ["--metric", {"Get": "Parameters.GateMetric"}]
    inputs = {i["InputName"]: i["S3Input"] for i in step["Arguments"]["ProcessingInputs"]}
    assert inputs["model"]["S3Uri"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert inputs["model"]["LocalPath"] == str(quality_gate.DEFAULT_MODEL_DIR)
    assert inputs["training-output"]["LocalPath"] == str(quality_gate.DEFAULT_OUTPUT_DIR)
    assert inputs["training-output"]["S3Uri"]["Std:Join"]["Values"][-2:] == ["output", "output.tar.gz"]
    (output,) = step["Arguments"]["ProcessingOutputConfig"]["Outputs"]
    assert output["OutputName"] == "evaluation" and output["S3Output"]["LocalPath"] == str(
        quality_gate.DEFAULT_EVALUATION_DIR
    )
    assert step["PropertyFiles"] == [
        {"PropertyFileName": "GateReport", "OutputName": "evaluation", "FilePath": "evaluation.json"}
    ]


def test_condition_and_fail_message(cloud) -> None:
    _, doc = cloud
    (condition,) = steps(doc)["CheckHR"]["Arguments"]["Conditions"]
    assert condition == {
        "Type": "GreaterThanOrEqualTo",
        "LeftValue": JSON_GET_HR,
        "RightValue": {"Get": "Parameters.HRThreshold"},
    }
    _, (fail,) = branches(doc)
    values = fail["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
    assert JSON_GET_HR in values and {"Get": "Parameters.HRThreshold"} in values
    assert any("threshold" in v for v in values if isinstance(v, str))


def test_register_step(cloud) -> None:
    _, doc = cloud
    register = branches(doc)[0][0]["Arguments"]
    assert register["ModelPackageGroupName"] == {"Get": "Parameters.ModelPackageGroupName"}
    assert register["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    (container,) = register["InferenceSpecification"]["Containers"]
    assert container["Image"] == IMAGE
    assert container["ModelDataUrl"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    statistics = register["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert "Steps.QualityGate.ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri" in refs(statistics)


def test_lambda_step(cloud) -> None:
    _, doc = cloud
    deploy = branches(doc)[0][2]
    assert deploy["FunctionArn"] == FUNCTION
    assert deploy["Arguments"] == {
        "model_name": {"Get": "Steps.CreateModel-CreateModel.ModelName"},
        "endpoint_name": {"Get": "Parameters.EndpointName"},
        "instance_type": {"Get": "Parameters.EndpointInstanceType"},
        "instance_count": 1,
        "model_package_arn": {"Get": "Steps.RegisterModel-RegisterModel.ModelPackageArn"},
        "deployment_config": "",  # none configured: SageMaker's all-at-once swap
    }
    # Every output the step declares is a key the handler returns.
    declared = {o["OutputName"] for o in deploy["OutputParameters"]}
    assert declared <= {"action", "endpoint_name", "endpoint_config_name", "model_name", "statusCode"}


def test_deployment_config_reaches_the_deploy_step(aws) -> None:
    """A canary DeploymentConfig set on the pipeline is what the deploy handler receives (as JSON text)."""
    canary = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "CANARY"}}}
    doc = json.loads(build_pipeline(config(deployment_config=canary), pipeline_session()).definition())
    deploy = branches(doc)[0][2]
    assert json.loads(deploy["Arguments"]["deployment_config"]) == canary


def test_local_variant_lacks_register_and_lambda(local: dict) -> None:
    if_steps, else_steps = branches(local)
    assert [s["Name"] for s in local["Steps"]] == ["Train", "QualityGate", "CheckHR"]
    assert [(s["Name"], s["Type"]) for s in if_steps] == [("CreateModel-CreateModel", "Model")]
    assert [s["Type"] for s in else_steps] == ["Fail"]
    types = json.dumps(local)
    assert '"RegisterModel"' not in types and '"Lambda"' not in types
    defaults = {p["Name"]: p.get("DefaultValue") for p in local["Parameters"]}
    assert defaults["TrainingInstanceType"] == defaults["ProcessingInstanceType"] == "local"


def test_test_channel_option(aws) -> None:
    doc = json.loads(build_pipeline(config(test_channel=True), pipeline_session()).definition())
    channels = {c["ChannelName"]: c for c in steps(doc)["Train"]["Arguments"]["InputDataConfig"]}
    assert channels["test"]["DataSource"]["S3DataSource"]["S3Uri"] == {"Get": "Parameters.TestDataUri"}
    assert {p["Name"]: p.get("DefaultValue") for p in doc["Parameters"]}["GateMetric"] == "test"


def test_cloud_pipeline_needs_the_deploy_function(aws) -> None:
    with pytest.raises(ValueError, match="deploy_function_arn"):
        build_pipeline(config(deploy_function_arn=None), pipeline_session())


def test_upsert_sends_the_definition(cloud) -> None:
    pipeline, doc = cloud
    arn = pipeline.upsert(role_arn=ROLE)["PipelineArn"]
    described = boto3.client("sagemaker", region_name=REGION).describe_pipeline(PipelineName=pipeline.name)
    assert described["PipelineArn"] == arn
    assert json.loads(described["PipelineDefinition"]) == doc


# -- the quality-gate script


def _tar(path: Path, members: dict[str, dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


REPORT = {
    "algorithm": "ncf",
    "metrics": {"validation": {"HR": 0.61, "NDCG": 0.4}, "test": {"HR": 0.55, "NDCG": 0.35}},
    "held_out": {"validation": True, "test": True},
    "notes": ["validation: carved from train"],
}


def artifacts(tmp_path: Path, report: dict | None = REPORT, manifest: dict | None = None) -> list[str]:
    model, output = tmp_path / "model", tmp_path / "training-output"
    _tar(
        model / "model.tar.gz",
        {"manifest.json": manifest or {"algorithm": "als", "metrics": {"validation": {"HR": 0.3}}}},
    )
    output.mkdir(parents=True)
    if report is not None:
        _tar(output / "output.tar.gz", {"data/evaluation.json": report})
    return ["--model-dir", str(model), "--output-dir", str(output), "--evaluation-dir", str(tmp_path / "evaluation")]


@pytest.mark.parametrize(("metric", "hr"), [("validation", 0.61), ("test", 0.55)])
def test_gate_reads_the_training_report(tmp_path: Path, metric: str, hr: float) -> None:
    assert quality_gate.main(["--metric", metric, *artifacts(tmp_path)]) == 0
    written = json.loads((tmp_path / "evaluation/evaluation.json").read_text())
    assert written["metrics"] == {"HR": hr, "NDCG": REPORT["metrics"][metric]["NDCG"], "role": metric}
    assert written["held_out"] == REPORT["held_out"] and written["source"] == "output.tar.gz:data/evaluation.json"


def test_gate_falls_back_to_the_model_manifest(tmp_path: Path) -> None:
    assert quality_gate.main(artifacts(tmp_path, report=None)) == 0
    written = json.loads((tmp_path / "evaluation/evaluation.json").read_text())
    assert written["metrics"]["HR"] == 0.3 and written["source"] == "model.tar.gz:manifest.json"


@pytest.mark.parametrize(
    ("report", "metric", "message"),
    [
        ({"metrics": {"validation": {"HR": 0.5}}}, "test", "no test metrics (the training job had no test channel)"),
        ({"metrics": {"validation": {"HR": float("nan")}}}, "validation", "not a finite number"),
        (REPORT, "train", "--metric must be one of validation, test"),
    ],
)
def test_gate_refuses_what_it_cannot_compare(tmp_path: Path, capsys, report, metric, message) -> None:
    assert quality_gate.main(["--metric", metric, *artifacts(tmp_path, report=report)]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "evaluation/evaluation.json").exists()


def test_gate_and_handler_need_no_third_party_package(tmp_path: Path) -> None:
    """python -S: no site-packages (no boto3, no numpy), as in the image (no boto3) and a bare Lambda zip."""
    code = (
        "import sys, runpy; sys.path.insert(0, sys.argv.pop(1)); "
        "import recsys.pipeline.deploy_handler as h; h.parse_event({'model_name': 'm', 'endpoint_name': 'e', "
        "'instance_type': 't'}); runpy.run_module('recsys.pipeline.quality_gate', run_name='__main__')"
    )
    args = [sys.executable, "-S", "-c", code, str(ROOT / "container"), "--metric", "test", *artifacts(tmp_path)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "test HR=0.5500" in proc.stdout
    assert json.loads((tmp_path / "evaluation/evaluation.json").read_text())["metrics"]["HR"] == 0.55


# -- EventBridge trigger

PREFIX = "recsys/data/train"


def s3_event(key: str, bucket: str = BUCKET, detail_type: str = "Object Created") -> dict:
    detail = {"version": "0", "bucket": {"name": bucket}, "object": {"key": key, "size": 10}, "reason": "PutObject"}
    return {"Source": "aws.s3", "DetailType": detail_type, "Detail": json.dumps(detail)}


def test_rule_and_target_are_put_and_read_back(cloud) -> None:
    pipeline, _ = cloud
    arn = pipeline.upsert(role_arn=ROLE)["PipelineArn"]
    client, s3 = boto3.client("events", region_name=REGION), boto3.client("s3", region_name=REGION)
    queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="existing-notification")["QueueUrl"]
    queue_arn = f"arn:aws:sqs:{REGION}:123456789012:existing-notification"
    existing = {"QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectRemoved:*"]}]}
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration=existing)
    assert queue

    params = {"InputDataUri": f"s3://{BUCKET}/{PREFIX}/"}
    # moto 5.2.5 stores EventBridgeConfiguration but leaves it out of get_bucket_notification_configuration: check
    # what was sent instead.
    puts: list[dict] = []
    s3.meta.events.register(
        "provide-client-params.s3.PutBucketNotificationConfiguration", lambda params, **_: puts.append(params)
    )
    rule_arn = events.put_trigger(
        client, s3, bucket=BUCKET, prefix=PREFIX, pipeline_arn=arn, role_arn=ROLE, parameters=params
    )
    rule = client.describe_rule(Name=events.DEFAULT_RULE_NAME)
    assert rule["Arn"] == rule_arn and rule["State"] == "ENABLED"
    assert json.loads(rule["EventPattern"]) == events.event_pattern(BUCKET, PREFIX)
    (target,) = client.list_targets_by_rule(Rule=events.DEFAULT_RULE_NAME)["Targets"]
    assert target["Arn"] == arn and target["RoleArn"] == ROLE
    assert target["SageMakerPipelineParameters"]["PipelineParameterList"] == [
        {"Name": "InputDataUri", "Value": params["InputDataUri"]}
    ]
    (sent,) = puts
    assert sent["NotificationConfiguration"]["EventBridgeConfiguration"] == {}
    notifications = s3.get_bucket_notification_configuration(Bucket=BUCKET)
    assert notifications["QueueConfigurations"][0]["QueueArn"] == queue_arn, "the bucket's other notifications stay"


def test_pattern_matches_object_created_under_the_prefix_only(aws) -> None:
    """moto delivers to SQS (not to a pipeline target) through its own pattern matcher: a probe rule with the same
    pattern on its own bus, so the real rule (whose SageMaker target moto cannot deliver to) sees nothing."""
    client, sqs = boto3.client("events", region_name=REGION), boto3.client("sqs", region_name=REGION)
    client.create_event_bus(Name="probe")
    url = sqs.create_queue(QueueName="probe")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule = events.rule_definition(BUCKET, PREFIX, name="probe")
    client.put_rule(**rule, EventBusName="probe")
    client.put_targets(Rule="probe", EventBusName="probe", Targets=[{"Id": "q", "Arn": queue_arn}])

    sent = {
        f"{PREFIX}/part-1.csv": True,
        f"{PREFIX}/2026/12/part-2.csv": True,
        "recsys/data/training-old/part.csv": False,  # shares the string prefix, not the folder
        "recsys/data/test/part.csv": False,
        "other/part.csv": False,
    }
    entries = [{**s3_event(key), "EventBusName": "probe"} for key in sent]
    entries.append({**s3_event(f"{PREFIX}/x.csv", bucket="another-bucket"), "EventBusName": "probe"})
    entries.append({**s3_event(f"{PREFIX}/y.csv", detail_type="Object Deleted"), "EventBusName": "probe"})
    assert client.put_events(Entries=entries)["FailedEntryCount"] == 0

    received = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        received += [json.loads(m["Body"])["detail"]["object"]["key"] for m in batch]
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in batch]
        )
    assert sorted(received) == sorted(k for k, match in sent.items() if match)
