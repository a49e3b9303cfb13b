"""``Param``: one hyperparameter's declaration (name, type, default, allowed range, help).

Its own module so that algorithm packages can declare their hyperparameters without importing the parser
(``recsys.training.hyperparameters``), which reads the algorithm registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int, float, bool, str, or "column" (str name or int index)
    default: Any
    help: str
    low: float | None = None  # inclusive lower bound
    high: float | None = None  # inclusive upper bound
    low_exclusive: bool = False
    high_exclusive: bool = False
    choices: tuple[str, ...] | None = None
    column: bool = False  # a column name, or a 0-based index for files without a header

    def range_text(self) -> str:
        if self.choices:
            return " | ".join(self.choices)

        def number(value: float) -> str:
            return f"{int(value):,}" if float(value).is_integer() and abs(value) >= 1e4 else f"{value:g}"

        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_exclusive else '≥'} {number(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_exclusive else '≤'} {number(self.high)}")
        return ", ".join(parts)
