# Two commands do all set-up: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and node_modules first when missing (a no-op when they are current).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PY_OK  := $(VENV)/.installed
NODE_OK := node_modules/.installed

.PHONY: setup demo test lint format compile node clean

setup: $(PY_OK) $(NODE_OK)

$(PY_OK): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

$(NODE_OK): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: setup
	$(BIN)/qkdiov simulate --scenario highway --out runs/demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check ledger vehicles qkd tests scripts

format: setup
	$(BIN)/ruff format ledger vehicles qkd tests scripts

compile: setup
	npx hardhat compile

node: setup
	$(BIN)/qkdiov node --engine anvil

clean:
	rm -rf build .qkdiov deployments .pytest_cache .ruff_cache
