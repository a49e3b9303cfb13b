"""Where SageMaker puts things: the /opt/ml tree, rooted at ``SAGEMAKER_BASE_DIR`` (default ``/opt/ml``).

SageMaker's own toolkits honor ``SAGEMAKER_BASE_DIR`` too, so the same program runs inside a container and outside
one (tests, notebooks) against any directory laid out like /opt/ml.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.platform.errors import UserError

DEFAULT_BASE_DIR = "/opt/ml"


@dataclass(frozen=True)
class SageMakerPaths:
    base: Path

    @classmethod
    def from_env(cls) -> SageMakerPaths:
        return cls(Path(os.environ.get("SAGEMAKER_BASE_DIR", DEFAULT_BASE_DIR)))

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
        return Path(os.environ.get("RECSYS_CHECKPOINT_DIR", str(self.base / "checkpoints")))


def read_json_file(path: Path, what: str, default: Any = None) -> Any:
    """Read a SageMaker config file; a missing file gives ``default``, a corrupt one a clear UserError."""
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8") or "null") if path.stat().st_size else default
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} ({path}) is not valid JSON: {exc}") from None
