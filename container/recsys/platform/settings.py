"""Environment variables, each declared once (``EnvVar``: name, accepted aliases, type, default, bounds, help).

The declaration parses and validates — a bad value is a ``UserError`` naming the variable and what it must be — and
renders the tables in README.md and docs/image.md (``scripts/render_readme.py``), so code and docs cannot drift.
``COMMON`` is read by ``train`` and ``serve``, ``TRAINING`` by ``train``; serving declares its own variables in
``recsys.serving.settings`` with the same type.

Nothing is cached: every ``from_env`` reads the environment as it is now (tests and entry points set it first).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from recsys.platform.errors import UserError

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
DEFAULT_BASE_DIR = "/opt/ml"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class EnvVar:
    """One environment variable. The first of ``name`` and ``aliases`` that is set (non-blank) wins.

    ``kind``: ``int`` (parsed like ``int(float(raw))``, within ``low``/``high``), ``bool`` (true/false, 1/0, yes/no,
    on/off, any case), ``str``, ``Path``. ``choices`` or ``pattern`` (full match, any case) restrict a ``str``;
    ``must`` says in words what a pattern accepts. ``lower`` folds the value to lower case. ``default`` may be a
    zero-argument callable (computed when the variable is unset); ``default_text`` is how the tables show it.
    ``internal`` variables are set by the programs themselves (``serve`` for gunicorn) and left out of the tables."""

    attr: str
    name: str
    kind: type
    default: Any
    help: str
    aliases: tuple[str, ...] = ()
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    must: str = ""
    lower: bool = False
    default_text: str | None = None
    internal: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def read(self, environ: Mapping[str, str] | None = None) -> Any:
        environ = os.environ if environ is None else environ
        for name in self.names:
            raw = environ.get(name, "").strip()
            if raw:
                return self.parse(raw, name)
        return self.default() if callable(self.default) else self.default

    def parse(self, raw: str, name: str | None = None) -> Any:
        name = name or self.name
        if self.kind is bool:
            if raw.lower() in TRUE | FALSE:
                return raw.lower() in TRUE
            raise self._bad(name, raw)
        if self.kind is int:
            try:
                value = int(float(raw))
            except (ValueError, OverflowError):
                raise self._bad(name, raw) from None
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise self._bad(name, value)
            return value
        value = raw.lower() if self.lower else raw
        if self.choices and value not in self.choices:
            raise self._bad(name, raw)
        if self.pattern and not re.fullmatch(self.pattern, value, re.IGNORECASE):
            raise self._bad(name, raw)
        return Path(value) if self.kind is Path else value

    def _bad(self, name: str, got: Any) -> UserError:
        return UserError(f"environment variable {name} must be {self.wanted()}, got {got!r}")

    def wanted(self) -> str:
        """What a valid value is, in words (messages and the tables' "allowed" column)."""
        if self.kind is bool:
            return "true or false (also 1/0, yes/no, on/off)"
        if self.kind is int:
            if self.low is not None and self.high is not None:
                return f"an integer between {self.low} and {self.high}"
            return f"an integer ≥ {self.low}" if self.low is not None else "an integer"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return self.must or ("a path" if self.kind is Path else "a string")

    def row(self) -> str:
        names = " / ".join(f"`{n}`" for n in self.names)
        if self.default_text is not None:
            default = self.default_text
        elif self.kind is bool:
            default = "`true`" if self.default else "`false`"
        else:
            default = "—" if self.default is None else f"`{self.default}`"
        cells = (names, default, self.wanted(), self.help)
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def markdown_table(declarations: Sequence[EnvVar]) -> str:
    rows = ["| variable | default | allowed | meaning |", "|---|---|---|---|"]
    rows += [var.row() for var in declarations if not var.internal]
    return "\n".join(rows)


def read_all(declarations: Sequence[EnvVar], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``{attr: value}`` for every declaration; the first bad value raises its ``UserError``."""
    return {var.attr: var.read(environ) for var in declarations}


def build(cls: Callable[..., Any], declarations: Sequence[EnvVar], environ: Mapping[str, str] | None = None) -> Any:
    """A settings dataclass from its declarations (every declaration must be a field of ``cls``)."""
    values = read_all(declarations, environ)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - names
    if unknown:  # a declaration without a field is a programming error, caught by the tests
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    return cls(**values)


def log_level_number(value: str) -> int:
    """``"info"`` / ``"20"`` → 20 (already validated by the declaration)."""
    if value.isdigit():
        return int(value)
    return logging.WARNING if value.upper() == "WARN" else getattr(logging, value.upper())


def declared(declarations: Sequence[EnvVar], name: str) -> EnvVar:
    return next(var for var in declarations if var.name == name)


COMMON = (
    EnvVar(
        "base_dir",
        "SAGEMAKER_BASE_DIR",
        Path,
        Path(DEFAULT_BASE_DIR),
        "root of the `/opt/ml` tree (run outside a container against any directory)",
    ),
    EnvVar(
        "log_level",
        "RECSYS_LOG_LEVEL",
        str,
        "info",
        "log level (the SDK sets `SAGEMAKER_CONTAINER_LOG_LEVEL`, e.g. `20`)",
        aliases=("SAGEMAKER_CONTAINER_LOG_LEVEL",),
        pattern=r"\d+|" + "|".join(LOG_LEVELS) + "|WARN",
        must="a level name (" + ", ".join(LOG_LEVELS) + ", any case) or number",
        lower=True,
        default_text="`INFO`",
    ),
)

TRAINING = (
    EnvVar(
        "checkpoint_dir",
        "RECSYS_CHECKPOINT_DIR",
        Path,
        None,
        "checkpoints (saved per epoch, resumed on restart) when the directory exists",
        default_text="`$SAGEMAKER_BASE_DIR/checkpoints`",
    ),
    EnvVar(
        "spark_driver_memory",
        "RECSYS_SPARK_DRIVER_MEMORY",
        str,
        None,
        "Spark driver heap for ALS, e.g. `8g`",
        pattern=r"\d+([kmgtp]b?|b)?",
        must="a JVM memory size such as 8g, 4096m (a plain number is MiB)",
        lower=True,
        default_text="sized from the machine / cgroup",
    ),
    EnvVar(
        "coordination_port",
        "RECSYS_COORDINATION_PORT",
        int,
        7079,
        "TCP port the leader uses to tell other hosts of a multi-host job its outcome",
        low=1,
        high=65535,
    ),
    EnvVar(
        "distributed_port",
        "RECSYS_DISTRIBUTED_PORT",
        int,
        29500,
        "TCP port of the leader's torch.distributed store: NCF's ranks on every host of a multi-host job meet there",
        low=1,
        high=65535,
    ),
    EnvVar(
        "instance_type",
        "SM_CURRENT_INSTANCE_TYPE",
        str,
        None,
        "instance type, when resourceconfig.json has no `current_instance_type` (logged; sizes nothing)",
        must="an instance type name",
    ),
    EnvVar(
        "progress_seconds",
        "RECSYS_PROGRESS_SECONDS",
        int,
        30,
        "seconds between progress lines of long work (NCF epochs, ALS, data loading, evaluation); 0 = every update",
        low=0,
        high=86400,
    ),
)


@dataclass(frozen=True)
class CommonSettings:
    base_dir: Path
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CommonSettings:
        return build(cls, COMMON, environ)

    @property
    def log_level_number(self) -> int:
        return log_level_number(self.log_level)


@dataclass(frozen=True)
class TrainingSettings:
    """``train``'s environment (``COMMON`` + ``TRAINING``)."""

    base_dir: Path
    log_level: str
    checkpoint_dir: Path | None  # None: $SAGEMAKER_BASE_DIR/checkpoints (``SageMakerPaths.checkpoint_dir``)
    spark_driver_memory: str | None  # None: sized from the machine (``recsys.models.als.spark``)
    coordination_port: int
    distributed_port: int
    instance_type: str | None
    progress_seconds: int  # read where progress is logged (``recsys.platform.progress``)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrainingSettings:
        return build(cls, COMMON + TRAINING, environ)
