"""The pipeline's quality-gate step: ``python -m recsys.pipeline.quality_gate --metric validation|test``.

Runs inside this image as a SageMaker Processing job (the image has no boto3: standard library only, local
/opt/ml/processing paths). Reads the training job's artifacts, which the ProcessingStep downloads:
- ``<output-dir>/output.tar.gz`` → ``data/evaluation.json`` (what ``train`` wrote: metrics, held_out, notes), preferred;
- ``<model-dir>/model.tar.gz`` → ``manifest.json`` (its ``metrics`` and ``evaluation``), the fallback.
Writes ``<evaluation-dir>/evaluation.json`` whose ``metrics.HR`` the ConditionStep reads through a PropertyFile.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tarfile
from pathlib import Path

PROCESSING = Path("/opt/ml/processing")
DEFAULT_MODEL_DIR = PROCESSING / "model"
DEFAULT_OUTPUT_DIR = PROCESSING / "training-output"
DEFAULT_EVALUATION_DIR = PROCESSING / "evaluation"
EVALUATION_FILE = "evaluation.json"
ROLES = ("validation", "test")


class GateError(Exception):
    """The artifacts do not hold the metric the gate needs."""


def _read_member(archive: Path, basename: str, under: str | None = None) -> dict | None:
    """A JSON member of a tarball by base name (optionally under a folder), read without extracting anything."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            path = Path(member.name)
            if member.isfile() and path.name == basename and (under is None or under in path.parts[:-1]):
                return json.loads(tar.extractfile(member).read().decode())
    return None


def _find(directory: Path, name: str) -> Path | None:
    if not directory.is_dir():
        return None
    return next(iter(sorted(directory.rglob(name))), None)


def read_report(model_dir: Path, output_dir: Path) -> tuple[dict, str]:
    """(report with ``metrics``, where it came from): training's evaluation.json, else the model manifest."""
    archive = _find(output_dir, "output.tar.gz")
    if archive is not None:
        report = _read_member(archive, EVALUATION_FILE, under="data")
        if report is not None and "metrics" in report:
            return report, f"{archive.name}:data/{EVALUATION_FILE}"
    archive = _find(model_dir, "model.tar.gz")
    manifest = _read_member(archive, "manifest.json") if archive is not None else None
    if manifest is None:  # SageMaker may hand over the model already extracted
        path = _find(model_dir, "manifest.json")
        manifest = json.loads(path.read_text()) if path is not None else None
    if manifest is None or "metrics" not in manifest:
        raise GateError(f"no training evaluation.json under {output_dir} and no model manifest under {model_dir}")
    evaluation = manifest.get("evaluation", {})
    report = {"algorithm": manifest.get("algorithm"), "metrics": manifest["metrics"], **evaluation}
    return report, "model.tar.gz:manifest.json"


def gate_report(report: dict, role: str, source: str) -> dict:
    """What the ConditionStep reads (``metrics.HR``) plus the context a reviewer needs to trust it."""
    if role not in ROLES:
        raise GateError(f"--metric must be one of {', '.join(ROLES)}, got {role!r}")
    metrics = report.get("metrics", {})
    if role not in metrics:
        hint = " (the training job had no test channel)" if role == "test" else ""
        raise GateError(f"the training report has no {role} metrics{hint}; it has: {sorted(metrics)}")
    chosen = metrics[role]
    hr = chosen.get("HR")
    # A NaN or missing HR must fail here: JsonGet would otherwise compare garbage with the threshold.
    if not isinstance(hr, int | float) or not math.isfinite(hr):
        raise GateError(f"{role} HR is not a finite number: {hr!r}")
    return {
        "metrics": {"HR": float(hr), "NDCG": chosen.get("NDCG"), "role": role},
        "roles": {name: metrics[name] for name in ROLES if name in metrics},
        "algorithm": report.get("algorithm"),
        "held_out": report.get("held_out", {}),
        "notes": report.get("notes", []),
        "source": source,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", default="validation", help="which HR gates: validation or test")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--evaluation-dir", type=Path, default=DEFAULT_EVALUATION_DIR)
    args = parser.parse_args(argv)
    try:
        report, source = read_report(args.model_dir, args.output_dir)
        result = gate_report(report, args.metric, source)
    except (GateError, OSError, ValueError, tarfile.TarError) as exc:
        print(f"quality gate: {exc}", file=sys.stderr, flush=True)
        return 1
    args.evaluation_dir.mkdir(parents=True, exist_ok=True)
    (args.evaluation_dir / EVALUATION_FILE).write_text(json.dumps(result, indent=2) + "\n")
    print(f"quality gate: {args.metric} HR={result['metrics']['HR']:.4f} (from {source})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
