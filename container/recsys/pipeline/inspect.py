"""Reading a pipeline definition and its executions as tables (plain dicts and lists; no SDK import).

- ``step_graph(definition)``: one row per step, condition branches included: its type, the steps it waits for
  (``DependsOn`` and every ``{"Get": "Steps.<name>..."}`` it reads) and when it runs.
- ``resolve(node, values)``: a definition fragment with its ``Get`` / ``Std:Join`` expressions replaced by values —
  what SageMaker would send for a step once those values are known (used to replay cloud-only steps elsewhere).
- ``step_executions(steps)``: ``list_steps()``'s answer as rows (status, times, what each step produced).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

OPERATORS = {
    "Equals": "==",
    "GreaterThan": ">",
    "GreaterThanOrEqualTo": "≥",
    "LessThan": "<",
    "LessThanOrEqualTo": "≤",
}


def _step_of(reference: str) -> str | None:
    """``"Steps.Train.ModelArtifacts.S3ModelArtifacts"`` → ``"Train"``; other references → None."""
    parts = reference.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "Steps" else None


def references(node: Any) -> set[str]:
    """Every ``{"Get": ...}`` reference inside a JSON node."""
    if isinstance(node, dict):
        found = {node["Get"]} if set(node) == {"Get"} and isinstance(node["Get"], str) else set()
        return found.union(*(references(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(references(v) for v in node))
    return set()


def render(node: Any) -> str:
    """A definition expression as short text: parameters by name, step properties as ``Step.Property``."""
    if isinstance(node, dict):
        if set(node) == {"Get"}:
            return str(node["Get"]).removeprefix("Parameters.").removeprefix("Steps.")
        if "Std:JsonGet" in node:
            get = node["Std:JsonGet"]
            source = render(get.get("PropertyFile", "?")).replace(".PropertyFiles.", ":")
            return f"{source}[{get.get('Path', '?')}]"
        if "Std:Join" in node:
            join = node["Std:Join"]
            return join.get("On", "").join(render(v) for v in join.get("Values", []))
    if isinstance(node, str):
        return node
    return json.dumps(node)


def render_condition(condition: Mapping[str, Any]) -> str:
    kind = condition.get("Type", "?")
    if kind == "Not":
        return f"not ({render_condition(condition['Expression'])})"
    if kind == "Or":
        return " or ".join(f"({render_condition(c)})" for c in condition.get("Conditions", []))
    if kind == "In":
        return f"{render(condition.get('QueryValue'))} in {[render(v) for v in condition.get('Values', [])]}"
    operator = OPERATORS.get(kind, kind)
    return f"{render(condition.get('LeftValue'))} {operator} {render(condition.get('RightValue'))}"


def step_graph(definition: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per step (a ConditionStep's branches follow it): step, type, depends_on, runs (always / if … / else)."""
    if not isinstance(definition, Mapping) or not isinstance(definition.get("Steps"), list):
        raise ValueError("not a pipeline definition: expected a JSON object with a 'Steps' list")
    rows: list[dict[str, Any]] = []

    def visit(steps: list, runs: str, guard: str | None) -> None:
        for step in steps:
            name = step["Name"]
            arguments = step.get("Arguments", {})
            # A condition waits for what its conditions read; its branches' references are theirs, not its own.
            own = arguments.get("Conditions", []) if step.get("Type") == "Condition" else arguments
            waits = set(step.get("DependsOn", []))
            waits |= {s for s in map(_step_of, references(own)) if s}
            waits |= {s for s in map(_step_of, references(step.get("PropertyFiles", []))) if s}
            if guard is not None:
                waits.add(guard)
            waits.discard(name)
            rows.append({"step": name, "type": step.get("Type", "?"), "depends_on": sorted(waits), "runs": runs})
            if step.get("Type") == "Condition":
                test = " and ".join(render_condition(c) for c in arguments.get("Conditions", []))
                visit(arguments.get("IfSteps", []), f"if {name}: {test}", name)
                visit(arguments.get("ElseSteps", []), f"else of {name}: not ({test})", name)

    visit(definition["Steps"], "always", None)
    return rows


def find_step(definition: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A step by name, inside condition branches too; KeyError names the steps there are."""
    found: list[dict] = []

    def visit(steps: list) -> None:
        for step in steps:
            found.append(step)
            arguments = step.get("Arguments", {}) if step.get("Type") == "Condition" else {}
            visit(arguments.get("IfSteps", []))
            visit(arguments.get("ElseSteps", []))

    visit(definition.get("Steps", []))
    for step in found:
        if step["Name"] == name:
            return step
    raise KeyError(f"no step {name!r} in the definition; it has {[s['Name'] for s in found]}")


def parameter_defaults(definition: Mapping[str, Any]) -> dict[str, Any]:
    """``{"Parameters.<name>": default}`` for every parameter that has a default: ``resolve``'s starting values."""
    parameters = definition.get("Parameters", [])
    return {f"Parameters.{p['Name']}": p["DefaultValue"] for p in parameters if "DefaultValue" in p}


def resolve(node: Any, values: Mapping[str, Any]) -> Any:
    """``node`` with each ``{"Get": key}`` replaced by ``values[key]`` and each ``Std:Join`` joined; a reference
    without a value raises KeyError naming it (``Std:JsonGet`` is looked up as ``"<property file>[<path>]"``)."""
    if isinstance(node, list):
        return [resolve(v, values) for v in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Get"}:
        if node["Get"] not in values:
            raise KeyError(f"no value for {node['Get']!r}; known: {sorted(values)}")
        return values[node["Get"]]
    if "Std:JsonGet" in node:
        key = render(node)
        if key not in values:
            raise KeyError(f"no value for {key!r}; known: {sorted(values)}")
        return values[key]
    if "Std:Join" in node:
        join = node["Std:Join"]
        return join.get("On", "").join(str(resolve(v, values)) for v in join.get("Values", []))
    return {k: resolve(v, values) for k, v in node.items()}


def _detail(step: Mapping[str, Any]) -> str:
    """What a step execution produced, in a few words."""
    if step.get("FailureReason"):
        return str(step["FailureReason"])
    metadata = step.get("Metadata") or {}
    if "Condition" in metadata:
        return f"outcome: {metadata['Condition'].get('Outcome')}"
    if "Fail" in metadata:
        return str(metadata["Fail"].get("ErrorMessage", ""))
    for kind in ("TrainingJob", "ProcessingJob", "TransformJob", "Model", "RegisterModel", "Lambda"):
        if kind in metadata:
            return f"{kind}: {metadata[kind].get('Arn', '')}"
    return ""


def _when(value: Any) -> dt.datetime | None:
    """SageMaker answers datetimes; SDK local mode answers epoch seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    return value


def step_executions(steps: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``list_steps()["PipelineExecutionSteps"]`` → rows in start order: step, status, start, end (datetimes),
    seconds, detail."""
    rows = []
    for step in steps:
        start, end = _when(step.get("StartTime")), _when(step.get("EndTime"))
        seconds = (end - start).total_seconds() if start is not None and end is not None else None
        rows.append(
            {
                "step": step.get("StepName"),
                "status": step.get("StepStatus"),
                "start": start,
                "end": end,
                "seconds": None if seconds is None else round(seconds, 1),
                "detail": _detail(step),
            }
        )
    return sorted(rows, key=lambda r: (r["start"] is None, r["start"] or 0))
