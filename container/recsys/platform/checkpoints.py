"""Checkpoints for managed spot training: SageMaker syncs /opt/ml/checkpoints to S3 and restores it on restart.

Each checkpoint is a payload file plus a ``.json`` sidecar holding the configuration fingerprint (hyperparameters
that shape the model + a digest of the data's id maps). On start the newest checkpoint is resumed only if its
fingerprint matches; otherwise the job refuses, saying which settings differ. File names carry the host name, so
several hosts can share one S3 prefix.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsys.platform.errors import UserError

log = logging.getLogger(__name__)

KEEP = 2


class Checkpointer:
    def __init__(self, directory: Path, algorithm: str, fingerprint: dict[str, Any], host: str = "algo-1"):
        self.directory = Path(directory)
        self.algorithm = algorithm
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.host = re.sub(r"[^A-Za-z0-9_.-]", "_", host)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _prefix(self) -> str:
        return f"{self.algorithm}-{self.host}-"

    def _existing(self) -> list[tuple[int, Path]]:
        found = []
        for meta in self.directory.glob(f"{self.algorithm}-*.json"):
            match = re.search(r"-step(\d+)\.json$", meta.name)
            payload = meta.with_suffix(".ckpt")
            if match and payload.exists():
                found.append((int(match.group(1)), meta))
        return sorted(found)

    def save(self, step: int, write: Callable[[Path], None], info: dict[str, Any] | None = None) -> Path:
        """``write(path)`` writes the payload; the sidecar is written after it, so a torn save is never resumed."""
        base = self.directory / f"{self._prefix()}step{step:06d}"
        tmp = base.with_suffix(".ckpt.tmp")
        write(tmp)
        os.replace(tmp, base.with_suffix(".ckpt"))
        meta = {"algorithm": self.algorithm, "step": step, "fingerprint": self.fingerprint, **(info or {})}
        tmp_meta = base.with_suffix(".json.tmp")
        tmp_meta.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_meta, base.with_suffix(".json"))
        for _, old in [c for c in self._existing() if c[1].name.startswith(self._prefix())][:-KEEP]:
            old.unlink(missing_ok=True)
            old.with_suffix(".ckpt").unlink(missing_ok=True)
        return base.with_suffix(".ckpt")

    def latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest compatible checkpoint, or None. A checkpoint from another configuration is refused."""
        existing = self._existing()
        if not existing:
            return None
        step, meta_path = existing[-1]
        meta = json.loads(meta_path.read_text())
        theirs = meta.get("fingerprint", {})
        if theirs != self.fingerprint:
            keys = sorted(k for k in set(theirs) | set(self.fingerprint) if theirs.get(k) != self.fingerprint.get(k))
            detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs job {self.fingerprint.get(k)!r}" for k in keys)
            raise UserError(
                f"refusing to resume from checkpoint {meta_path.with_suffix('.ckpt').name}: it was written by a "
                f"different configuration ({detail}); use a new checkpoint S3 prefix or the original settings"
            )
        log.info("resuming from checkpoint %s (step %d)", meta_path.with_suffix(".ckpt"), step)
        return meta_path.with_suffix(".ckpt"), meta
