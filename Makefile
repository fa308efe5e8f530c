# Two commands for a fresh machine (see README; docs/contributing.md for the tests):
#   make example   set up (install, Docker, images) and optimize the bundled MLP
#   make test      set up, lint, and run the tests
#   make lint      ruff and mypy only (configured in pyproject.toml)
#   make docs      the documentation site (MkDocs), built strictly into site/
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: example test lint docs setup images install docker

example: setup
	$(BIN)/nav-orch optimize examples/mlp.py:make_mlp --input input:8,64:float32 --images cpu --gpus none --workspace nav-workspace

test: lint setup
	$(BIN)/python -m pytest -v -rs

lint: install
	$(BIN)/ruff check orchestrator runners tests benchmarks scripts examples
	$(BIN)/mypy

setup: install images

install: $(BIN)/nav-orch

$(BIN)/nav-orch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,ray,docs]'
	touch $@

docker:
	bash scripts/ensure-docker.sh

# The CLI reference page is generated from the installed code on each build (scripts/cli_reference.py).
docs: install
	$(BIN)/mkdocs build --strict -d site

images: install docker
	$(BIN)/nav-orch images bootstrap --if-missing
	$(BIN)/nav-orch images build --flavor cpu
