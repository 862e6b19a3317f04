# softmaxkit developer entry points. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
BACKENDS ?= numpy,array_api_strict,torch,jax,dask
PYDIRS := $(wildcard src tests benchmarks examples)

.PHONY: install demo test lint typecheck pytest browser bench accuracy clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEPS): $(BIN)/python requirements/test.txt
	$(BIN)/python -m pip install --quiet -r requirements/test.txt
	touch $(DEPS)

# Editable install: meson-python rebuilds the C core on import when sources change.
install: $(DEPS)
	$(BIN)/python -m pip install --quiet --no-build-isolation --no-deps -e .

demo: install
	$(BIN)/python -m softmaxkit demo

lint: install
	$(BIN)/ruff check $(PYDIRS)
	$(BIN)/ruff format --check $(PYDIRS)

typecheck: install
	$(BIN)/mypy

# The HTML chart test renders a page in headless Chromium (Debian's package). Installed once
# when missing and we are root (CI); elsewhere the test skips and says how to get it.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

pytest: install browser
	SOFTMAXKIT_REQUIRE_CHROMIUM=$$(command -v chromium >/dev/null 2>&1 && echo 1) \
	SOFTMAXKIT_TEST_BACKENDS=$(BACKENDS) $(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: install
	env -u OPENBLAS_CORETYPE $(BIN)/python benchmarks/run.py

accuracy: install
	$(BIN)/python benchmarks/accuracy.py

clean:
	rm -rf $(VENV) build builddir .pytest_cache .mypy_cache .ruff_cache .hypothesis
