"""The SageMaker Pipeline, as code (LotteON's flow):

    Train ─► QualityGate (processing, this image) ─► CheckHR: HR ≥ HRThreshold ?
        yes ─► RegisterModel ─► CreateModel ─► DeployEndpoint (Lambda: create or update the endpoint)
        no  ─► HRTooLow (FailStep: the HR and the threshold)

``build_pipeline(config, session)`` gives the cloud pipeline; ``local=True`` leaves out RegisterModel and the Lambda
step, which ``LocalPipelineSession`` refuses to run (the if-branch is then CreateModel alone). The quality gate reads
the HR from the training job's own report rather than ``FinalMetricDataList`` because local mode does not fill that
in, and a processing step gives the gate the report's context (held_out, notes) for the model registry too.

Only this module imports the SageMaker SDK (``pip install "sagemaker<3"``); the image never imports it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from recsys.pipeline import quality_gate
from recsys.training.hyperparameters import METRIC_DEFINITIONS

STEP_TRAIN = "Train"
STEP_GATE = "QualityGate"
STEP_CHECK = "CheckHR"
STEP_REGISTER = "RegisterModel"
STEP_CREATE_MODEL = "CreateModel"
STEP_DEPLOY = "DeployEndpoint"
STEP_FAIL = "HRTooLow"
PROPERTY_FILE = "GateReport"
GATE_OUTPUT = "evaluation"
GATE_FILE = quality_gate.EVALUATION_FILE
GATE_COMMAND = ["python", "-m", "recsys.pipeline.quality_gate"]
# Where the ProcessingStep puts the training job's artifacts: the script's defaults, so no path flags are needed.
GATE_MODEL_DIR = str(quality_gate.DEFAULT_MODEL_DIR)
GATE_TRAINING_OUTPUT_DIR = str(quality_gate.DEFAULT_OUTPUT_DIR)
GATE_EVALUATION_DIR = str(quality_gate.DEFAULT_EVALUATION_DIR)
CONTENT_TYPES = ["application/json", "application/jsonlines", "text/csv"]


@dataclass(frozen=True)
class PipelineConfig:
    """What is fixed when the pipeline is defined; everything that varies per execution is a pipeline parameter."""

    image_uri: str
    role_arn: str
    bucket: str
    prefix: str = "recsys"
    name: str = "recsys-train-deploy"
    deploy_function_arn: str | None = None  # the deploy_handler Lambda; required for the cloud pipeline
    hyperparameters: dict[str, str] = field(default_factory=lambda: {"algorithm": "ncf"})
    test_channel: bool = False  # adds a TestDataUri parameter and a `test` channel (then GateMetric=test works)
    model_package_group: str = "recsys"
    endpoint_name: str = "recsys"
    # UpdateEndpoint's DeploymentConfig for the deploy step (canary / linear traffic shifting, rollback alarms);
    # None: SageMaker's default all-at-once blue/green swap. See docs/model-updates.md.
    deployment_config: dict | None = None

    @property
    def data_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/data/train/"


@dataclass
class Parameters:
    input_data_uri: object
    test_data_uri: object | None
    training_instance_type: object
    training_instance_count: object
    processing_instance_type: object
    hr_threshold: object
    gate_metric: object
    model_package_group: object
    approval_status: object
    endpoint_name: object
    endpoint_instance_type: object

    def all(self) -> list:
        return [v for v in vars(self).values() if v is not None]


def build_parameters(config: PipelineConfig, local: bool) -> Parameters:
    from sagemaker.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString

    instance = (lambda _: "local") if local else (lambda cloud: cloud)  # local mode runs "local" containers only
    test_uri = f"s3://{config.bucket}/{config.prefix}/data/test/"
    return Parameters(
        input_data_uri=ParameterString("InputDataUri", default_value=config.data_uri),
        test_data_uri=ParameterString("TestDataUri", default_value=test_uri) if config.test_channel else None,
        training_instance_type=ParameterString("TrainingInstanceType", default_value=instance("ml.m5.xlarge")),
        training_instance_count=ParameterInteger("TrainingInstanceCount", default_value=1),
        processing_instance_type=ParameterString("ProcessingInstanceType", default_value=instance("ml.m5.large")),
        hr_threshold=ParameterFloat("HRThreshold", default_value=0.5),
        gate_metric=ParameterString(
            "GateMetric",
            default_value="test" if config.test_channel else "validation",
            enum_values=["validation", "test"],
        ),
        model_package_group=ParameterString("ModelPackageGroupName", default_value=config.model_package_group),
        approval_status=ParameterString(
            "ModelApprovalStatus",
            default_value="PendingManualApproval",
            enum_values=["PendingManualApproval", "Approved", "Rejected"],
        ),
        endpoint_name=ParameterString("EndpointName", default_value=config.endpoint_name),
        endpoint_instance_type=ParameterString("EndpointInstanceType", default_value=instance("ml.m5.large")),
    )


def training_step(config: PipelineConfig, params: Parameters, session):
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput
    from sagemaker.workflow.steps import TrainingStep

    estimator = Estimator(
        image_uri=config.image_uri,
        role=config.role_arn,
        instance_type=params.training_instance_type,
        instance_count=params.training_instance_count,
        hyperparameters=dict(config.hyperparameters),
        metric_definitions=METRIC_DEFINITIONS,
        # No trailing "/": the gate joins this with the job name to find output.tar.gz.
        output_path=f"s3://{config.bucket}/{config.prefix}/training",
        sagemaker_session=session,
        # The image has neither the debugger hook nor the profiler agent; they would only add empty S3 prefixes.
        debugger_hook_config=False,
        disable_profiler=True,
    )
    channels = {"train": TrainingInput(s3_data=params.input_data_uri, content_type="text/csv")}
    if params.test_data_uri is not None:
        channels["test"] = TrainingInput(s3_data=params.test_data_uri, content_type="text/csv")
    return TrainingStep(name=STEP_TRAIN, step_args=estimator.fit(inputs=channels))


def gate_step(config: PipelineConfig, params: Parameters, train, session):
    """Processing in this same image: the training job's model.tar.gz and output.tar.gz in, evaluation.json out."""
    from sagemaker.processing import ProcessingInput, ProcessingOutput, Processor
    from sagemaker.workflow.functions import Join
    from sagemaker.workflow.properties import PropertyFile
    from sagemaker.workflow.steps import ProcessingStep

    processor = Processor(
        image_uri=config.image_uri,
        role=config.role_arn,
        instance_count=1,
        instance_type=params.processing_instance_type,
        entrypoint=GATE_COMMAND,
        sagemaker_session=session,
    )
    # SageMaker writes output.tar.gz next to model.tar.gz: <output_path>/<job name>/output/.
    output_archive = Join(
        on="/",
        values=[
            train.properties.OutputDataConfig.S3OutputPath,
            train.properties.TrainingJobName,
            "output",
            "output.tar.gz",
        ],
    )
    step_args = processor.run(
        inputs=[
            ProcessingInput(
                input_name="model", source=train.properties.ModelArtifacts.S3ModelArtifacts, destination=GATE_MODEL_DIR
            ),
            ProcessingInput(input_name="training-output", source=output_archive, destination=GATE_TRAINING_OUTPUT_DIR),
        ],
        outputs=[ProcessingOutput(output_name=GATE_OUTPUT, source=GATE_EVALUATION_DIR)],
        arguments=["--metric", params.gate_metric],
    )
    report = PropertyFile(name=PROPERTY_FILE, output_name=GATE_OUTPUT, path=GATE_FILE)
    return ProcessingStep(name=STEP_GATE, step_args=step_args, property_files=[report]), report


def model_steps(config: PipelineConfig, params: Parameters, train, gate, session, local: bool) -> list:
    """[RegisterModel, CreateModel] (cloud) or [CreateModel] (local): the model registry is cloud-only."""
    from sagemaker.model import Model
    from sagemaker.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.workflow.functions import Join
    from sagemaker.workflow.model_step import ModelStep

    model = Model(
        image_uri=config.image_uri,
        model_data=train.properties.ModelArtifacts.S3ModelArtifacts,
        role=config.role_arn,
        sagemaker_session=session,
    )
    if local:
        return [ModelStep(name=STEP_CREATE_MODEL, step_args=model.create(instance_type=params.endpoint_instance_type))]
    gate_uri = gate.properties.ProcessingOutputConfig.Outputs[GATE_OUTPUT].S3Output.S3Uri
    metrics = ModelMetrics(
        model_statistics=MetricsSource(
            content_type="application/json", s3_uri=Join(on="/", values=[gate_uri, GATE_FILE])
        )
    )
    register = ModelStep(
        name=STEP_REGISTER,
        step_args=model.register(
            content_types=CONTENT_TYPES,
            response_types=["application/json"],
            inference_instances=[params.endpoint_instance_type],
            transform_instances=[params.endpoint_instance_type],
            model_package_group_name=params.model_package_group,
            approval_status=params.approval_status,
            model_metrics=metrics,
        ),
    )
    # Register first: the deploy step tags the endpoint config with the package; a failed registration deploys nothing.
    create = ModelStep(
        name=STEP_CREATE_MODEL,
        step_args=model.create(instance_type=params.endpoint_instance_type),
        depends_on=[register],
    )
    return [register, create]


def deploy_step(config: PipelineConfig, params: Parameters, register, create):
    from sagemaker.lambda_helper import Lambda
    from sagemaker.workflow.lambda_step import LambdaOutput, LambdaOutputTypeEnum, LambdaStep

    if not config.deploy_function_arn:
        raise ValueError("the cloud pipeline needs PipelineConfig.deploy_function_arn (the deploy_handler Lambda)")
    outputs = [
        LambdaOutput(output_name=name, output_type=LambdaOutputTypeEnum.String)
        for name in ("action", "endpoint_name", "endpoint_config_name")
    ]
    return LambdaStep(
        name=STEP_DEPLOY,
        lambda_func=Lambda(function_arn=config.deploy_function_arn),
        inputs={
            "model_name": create.properties.ModelName,
            "endpoint_name": params.endpoint_name,
            "instance_type": params.endpoint_instance_type,
            "instance_count": 1,
            "model_package_arn": register.properties.ModelPackageArn,
            "deployment_config": json.dumps(config.deployment_config) if config.deployment_config else "",
        },
        outputs=outputs,
    )


def condition_step(params: Parameters, gate, report, if_steps: list):
    from sagemaker.workflow.condition_step import ConditionStep
    from sagemaker.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.workflow.fail_step import FailStep
    from sagemaker.workflow.functions import Join, JsonGet

    def hr():  # one JsonGet per use: each is serialized where it appears
        return JsonGet(step_name=gate.name, property_file=report, json_path="metrics.HR")

    fail = FailStep(
        name=STEP_FAIL,
        error_message=Join(
            on="",
            values=[
                "Quality gate: ",
                params.gate_metric,
                " HR ",
                hr(),
                " is below the threshold ",
                params.hr_threshold,
            ],
        ),
    )
    return ConditionStep(
        name=STEP_CHECK,
        conditions=[ConditionGreaterThanOrEqualTo(left=hr(), right=params.hr_threshold)],
        if_steps=if_steps,
        else_steps=[fail],
    )


def build_pipeline(config: PipelineConfig, session, *, local: bool = False):
    """The pipeline; ``session``: a ``PipelineSession`` (cloud) or ``LocalPipelineSession`` (``local=True``)."""
    from sagemaker.workflow.pipeline import Pipeline

    params = build_parameters(config, local)
    train = training_step(config, params, session)
    gate, report = gate_step(config, params, train, session)
    if_steps = model_steps(config, params, train, gate, session, local)
    if not local:
        register, create = if_steps
        if_steps = [register, create, deploy_step(config, params, register, create)]
    return Pipeline(
        name=config.name,
        parameters=params.all(),
        steps=[train, gate, condition_step(params, gate, report, if_steps)],
        sagemaker_session=session,
    )
