"""recsys.pipeline.inspect: a pipeline definition as a step graph, definition fragments resolved with values, and
``list_steps()`` answers as rows. The definition below has the shape ``build_pipeline`` gives (SDK v2 JSON)."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from recsys.pipeline import inspect

HR = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.QualityGate.PropertyFiles.GateReport"}, "Path": "metrics.HR"}}
MODEL = {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
DEFINITION = {
    "Version": "2020-12-01",
    "Parameters": [
        {"Name": "HRThreshold", "Type": "Float", "DefaultValue": 0.5},
        {"Name": "EndpointName", "Type": "String", "DefaultValue": "recsys"},
        {"Name": "InputDataUri", "Type": "String"},
    ],
    "Steps": [
        {"Name": "Train", "Type": "Training", "Arguments": {"InputDataConfig": [{"S3Uri": {"Get": "Parameters.X"}}]}},
        {
            "Name": "QualityGate",
            "Type": "Processing",
            "Arguments": {"ProcessingInputs": [{"S3Input": {"S3Uri": MODEL}}]},
            "PropertyFiles": [{"PropertyFileName": "GateReport", "OutputName": "evaluation"}],
        },
        {
            "Name": "CheckHR",
            "Type": "Condition",
            "Arguments": {
                "Conditions": [
                    {"Type": "GreaterThanOrEqualTo", "LeftValue": HR, "RightValue": {"Get": "Parameters.HRThreshold"}}
                ],
                "IfSteps": [
                    {"Name": "RegisterModel-RegisterModel", "Type": "RegisterModel", "Arguments": {"Url": MODEL}},
                    {
                        "Name": "CreateModel-CreateModel",
                        "Type": "Model",
                        "Arguments": {"PrimaryContainer": {"ModelDataUrl": MODEL}},
                        "DependsOn": ["RegisterModel-RegisterModel"],
                    },
                    {
                        "Name": "DeployEndpoint",
                        "Type": "Lambda",
                        "Arguments": {
                            "model_name": {"Get": "Steps.CreateModel-CreateModel.ModelName"},
                            "endpoint_name": {"Get": "Parameters.EndpointName"},
                            "instance_count": 1,
                        },
                    },
                ],
                "ElseSteps": [
                    {
                        "Name": "HRTooLow",
                        "Type": "Fail",
                        "Arguments": {
                            "ErrorMessage": {
                                "Std:Join": {"On": "", "Values": ["HR ", HR, " < ", {"Get": "Parameters.HRThreshold"}]}
                            }
                        },
                    }
                ],
            },
        },
    ],
}


def test_step_graph_lists_every_step_with_what_it_waits_for_and_when_it_runs() -> None:
    rows = {r["step"]: r for r in inspect.step_graph(DEFINITION)}
    assert list(rows) == [
        "Train",
        "QualityGate",
        "CheckHR",
        "RegisterModel-RegisterModel",
        "CreateModel-CreateModel",
        "DeployEndpoint",
        "HRTooLow",
    ]
    assert rows["Train"]["depends_on"] == [] and rows["Train"]["runs"] == "always"
    assert rows["QualityGate"]["depends_on"] == ["Train"]
    # The condition waits for what its conditions read, not for the steps of its own branches.
    assert rows["CheckHR"]["depends_on"] == ["QualityGate"]
    assert rows["CreateModel-CreateModel"]["depends_on"] == ["CheckHR", "RegisterModel-RegisterModel", "Train"]
    assert rows["DeployEndpoint"]["depends_on"] == ["CheckHR", "CreateModel-CreateModel"]
    test = "QualityGate:GateReport[metrics.HR] ≥ HRThreshold"
    assert rows["DeployEndpoint"]["runs"] == f"if CheckHR: {test}"
    assert rows["HRTooLow"]["runs"] == f"else of CheckHR: not ({test})"
    assert rows["HRTooLow"]["type"] == "Fail"


def test_step_graph_refuses_what_is_not_a_definition() -> None:
    with pytest.raises(ValueError, match="'Steps' list"):
        inspect.step_graph({"Parameters": []})


def test_render_conditions() -> None:
    assert inspect.render(HR) == "QualityGate:GateReport[metrics.HR]"
    assert inspect.render_condition(
        {"Type": "Not", "Expression": {"Type": "LessThan", "LeftValue": 1, "RightValue": 2}}
    ) == ("not (1 < 2)")


def test_find_step_inside_branches() -> None:
    assert inspect.find_step(DEFINITION, "HRTooLow")["Type"] == "Fail"
    with pytest.raises(KeyError, match="no step 'Nope'.*DeployEndpoint"):
        inspect.find_step(DEFINITION, "Nope")


def test_resolve_replaces_references_joins_and_json_gets() -> None:
    values = {
        **inspect.parameter_defaults(DEFINITION),
        "Steps.CreateModel-CreateModel.ModelName": "recsys-m1",
        "QualityGate:GateReport[metrics.HR]": 0.31,
    }
    assert values["Parameters.HRThreshold"] == 0.5 and "Parameters.InputDataUri" not in values  # no default
    before = copy.deepcopy(DEFINITION)
    deploy = inspect.resolve(inspect.find_step(DEFINITION, "DeployEndpoint")["Arguments"], values)
    assert deploy == {"model_name": "recsys-m1", "endpoint_name": "recsys", "instance_count": 1}
    message = inspect.resolve(inspect.find_step(DEFINITION, "HRTooLow")["Arguments"]["ErrorMessage"], values)
    assert message == "HR 0.31 < 0.5"
    assert before == DEFINITION, "resolve must not change the definition"


def test_resolve_names_a_missing_value() -> None:
    with pytest.raises(KeyError, match="Steps.Train.ModelArtifacts.S3ModelArtifacts"):
        inspect.resolve(inspect.find_step(DEFINITION, "CreateModel-CreateModel")["Arguments"], {})


def test_step_executions_rows_in_start_order() -> None:
    t0 = dt.datetime(2026, 12, 1, 10, 0, 0)
    steps = [
        {
            "StepName": "HRTooLow",
            "StepStatus": "Failed",
            "StartTime": t0 + dt.timedelta(seconds=50),
            "EndTime": t0 + dt.timedelta(seconds=50.4),
            "FailureReason": "Quality gate: test HR 0.2 is below the threshold 0.99",
            "Metadata": {"Fail": {"ErrorMessage": "Quality gate: test HR 0.2 is below the threshold 0.99"}},
        },
        {
            "StepName": "Train",
            "StepStatus": "Succeeded",
            "StartTime": t0,
            "EndTime": t0 + dt.timedelta(seconds=30),
            "Metadata": {"TrainingJob": {"Arn": "Train-123"}},
        },
        {
            "StepName": "CheckHR",
            "StepStatus": "Succeeded",
            "StartTime": t0 + dt.timedelta(seconds=49),
            "EndTime": t0 + dt.timedelta(seconds=49),
            "Metadata": {"Condition": {"Outcome": False}},
        },
        {"StepName": "Later", "StepStatus": "Starting", "StartTime": None, "EndTime": None, "Metadata": {}},
    ]
    rows = inspect.step_executions(steps)
    assert [r["step"] for r in rows] == ["Train", "CheckHR", "HRTooLow", "Later"]
    assert rows[0]["seconds"] == 30.0 and rows[0]["detail"] == "TrainingJob: Train-123"
    assert rows[1]["detail"] == "outcome: False"
    assert rows[2]["status"] == "Failed" and "below the threshold 0.99" in rows[2]["detail"]
    assert rows[3]["seconds"] is None


def test_step_executions_accepts_local_mode_epoch_seconds() -> None:
    """SDK local mode reports StartTime / EndTime as epoch seconds, SageMaker as datetimes."""
    steps = [
        {
            "StepName": "QualityGate",
            "StepStatus": "Succeeded",
            "StartTime": 1_800_000_030.0,
            "EndTime": 1_800_000_041.5,
        },
        {"StepName": "Train", "StepStatus": "Succeeded", "StartTime": 1_800_000_000.0, "EndTime": 1_800_000_029.0},
    ]
    rows = inspect.step_executions(steps)
    assert [(r["step"], r["seconds"]) for r in rows] == [("Train", 29.0), ("QualityGate", 11.5)]
    assert rows[0]["start"] == dt.datetime.fromtimestamp(1_800_000_000, tz=dt.UTC)
