# The two set-up commands (see README):  `make demo`  and  `make test`.
SHELL := /bin/bash
PY    ?= python3
VENV  := .venv
BIN   := $(VENV)/bin

.PHONY: demo test test-unit test-container lint venv system-deps engine clean

# Python env: torch first, at the version pyproject.toml pins (so nothing pulls a CUDA build); then the package with
# its dev extras.
TORCH_PIN = $(BIN)/python -c 'import tomllib; \
    deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
    print(next(d for d in deps if d.startswith("torch==")))'

$(BIN)/train: setup.py pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	pin=$$($(TORCH_PIN)) && $(BIN)/pip install -q "$$pin"
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/train

venv: $(BIN)/train

# nginx (serving), Java 17 (Spark), wrk (benchmarks): installed from Debian when missing.
system-deps:
	@bash scripts/system-deps.sh

# Train on the built-in Online Retail sample, serve it with nginx+gunicorn, ask for recommendations.
demo: venv system-deps
	$(BIN)/python scripts/demo.py

# Everything CI runs after lint: unit tests, then container tests (image built once, SDK local mode).
test: venv system-deps
	source scripts/container-engine-env.sh && $(BIN)/python -m pytest -q tests

test-unit: venv
	$(BIN)/python -m pytest -q -m "not container" tests

test-container: venv system-deps
	source scripts/container-engine-env.sh && $(BIN)/python -m pytest -q -m container tests

lint: venv
	$(BIN)/ruff check container tests benchmarks scripts setup.py
	$(BIN)/ruff format --check container tests benchmarks scripts setup.py

clean:
	rm -rf $(VENV) build *.egg-info container/*.egg-info .pytest_cache
