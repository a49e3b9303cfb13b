"""Logging configured in one place: stderr, one line per record, level from ``RECSYS_LOG_LEVEL`` (or the SDK's
``SAGEMAKER_CONTAINER_LOG_LEVEL``). Metric lines go to stdout via ``print`` so metric regexes see them verbatim."""

from __future__ import annotations

import logging
import os
import sys


def configure_logging() -> None:
    raw = os.environ.get("RECSYS_LOG_LEVEL") or os.environ.get("SAGEMAKER_CONTAINER_LOG_LEVEL") or "INFO"
    level = int(raw) if raw.isdigit() else getattr(logging, raw.upper(), logging.INFO)
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for noisy in ("py4j", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
