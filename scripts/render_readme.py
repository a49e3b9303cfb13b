"""Regenerate the generated tables in README.md and docs/image.md from their single declarations:
the hyperparameters (``recsys.training.hyperparameters``) and the environment variables (``recsys.platform.settings``
for both programs and training, ``recsys.serving.settings`` for serving). Each table sits between
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers.

Usage: python scripts/render_readme.py                     rewrite every table
       python scripts/render_readme.py --check             exit 1, naming the stale tables (tests do the same)
       python scripts/render_readme.py --only env-serving  only the named tables (either mode)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys.platform.settings import COMMON, TRAINING
from recsys.platform.settings import markdown_table as env_table
from recsys.serving.settings import SERVING
from recsys.training.hyperparameters import markdown_table as hyperparameter_table

ROOT = Path(__file__).resolve().parents[1]


def tables() -> dict[str, dict[str, str]]:
    """file (relative to the repository) → marker name → table."""
    serving = env_table(SERVING)
    return {
        "README.md": {"hyperparameters": hyperparameter_table(), "env-serving": serving},
        "docs/image.md": {
            "env-common": env_table(COMMON),
            "env-training": env_table(TRAINING),
            "env-serving": serving,
        },
    }


def render(text: str, name: str, table: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"missing markers {begin} … {end}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{table}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report stale tables instead of rewriting them")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these tables (marker names)")
    args = parser.parse_args(argv)
    stale = []
    for relative, by_name in tables().items():
        path = ROOT / relative
        text = original = path.read_text()
        for name, table in by_name.items():
            if args.only and name not in args.only:
                continue
            text = render(text, name, table)
            if render(original, name, table) != original:
                stale.append(f"{relative}: {name}")
        if text != original and not args.check:
            path.write_text(text)
    if args.check and stale:
        print("stale generated tables (run `python scripts/render_readme.py`):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
