"""Where SageMaker puts things: the /opt/ml tree, rooted at ``SAGEMAKER_BASE_DIR`` (default ``/opt/ml``).

SageMaker's own toolkits honor ``SAGEMAKER_BASE_DIR`` too, so the same program runs inside a container and outside
one (tests, notebooks) against any directory laid out like /opt/ml.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.platform import settings
from recsys.platform.errors import UserError

DEFAULT_BASE_DIR = settings.DEFAULT_BASE_DIR


@dataclass(frozen=True)
class SageMakerPaths:
    base: Path
    checkpoint_override: Path | None = None  # RECSYS_CHECKPOINT_DIR

    @classmethod
    def from_env(cls) -> SageMakerPaths:
        """Only the two path variables: any value is a valid path, so this never fails (``train`` calls it before
        it can report errors); the other variables are validated where they are used."""
        base = settings.declared(settings.COMMON, "SAGEMAKER_BASE_DIR").read()
        return cls(base, settings.declared(settings.TRAINING, "RECSYS_CHECKPOINT_DIR").read())

    # -- input
    @property
    def config_dir(self) -> Path:
        return self.base / "input" / "config"

    @property
    def hyperparameters_file(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def input_data_config_file(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

    @property
    def resource_config_file(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    @property
    def data_dir(self) -> Path:
        return self.base / "input" / "data"

    def channel(self, name: str) -> Path:
        return self.data_dir / name

    # -- output
    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoint_dir(self) -> Path:
        """Managed-spot checkpoints (CheckpointConfig.LocalPath's default). Used only when the directory exists."""
        return self.checkpoint_override or self.base / "checkpoints"


def read_json_file(path: Path, what: str, default: Any = None) -> Any:
    """Read a SageMaker config file; a missing file gives ``default``, a corrupt one a clear UserError."""
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8") or "null") if path.stat().st_size else default
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} ({path}) is not valid JSON: {exc}") from None
