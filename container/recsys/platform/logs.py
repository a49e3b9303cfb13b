"""Logging configured in one place: stderr, one line per record, level from ``RECSYS_LOG_LEVEL`` (or the SDK's
``SAGEMAKER_CONTAINER_LOG_LEVEL``; declared in ``recsys.platform.settings``). Metric lines go to stdout via ``print``
so metric regexes see them verbatim."""

from __future__ import annotations

import logging
import sys

from recsys.platform.errors import UserError
from recsys.platform.settings import CommonSettings


def configure_logging() -> None:
    """Never fails: logging must work to report anything, so a bad level is logged and INFO used."""
    try:
        level, problem = CommonSettings.from_env().log_level_number, None
    except UserError as err:
        level, problem = logging.INFO, err
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for noisy in ("py4j", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if problem is not None:
        logging.getLogger(__name__).error("%s; logging at INFO", problem)
