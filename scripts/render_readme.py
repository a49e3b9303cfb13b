"""Regenerate the README's hyperparameter table from recsys.training.hyperparameters (the single declaration).

Usage: python scripts/render_readme.py   (tests fail when the README table is stale)
"""

from pathlib import Path

from recsys.training.hyperparameters import markdown_table

BEGIN, END = "<!-- hyperparameters:begin -->", "<!-- hyperparameters:end -->"


def main() -> None:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{markdown_table()}\n{END}{tail}")


if __name__ == "__main__":
    main()
