# softmaxkit developer entry points. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
BACKENDS ?= numpy,array_api_strict,torch,jax,dask
PYDIRS := $(wildcard src tests benchmarks examples)

.PHONY: install demo test lint typecheck pytest browser sanitize bench accuracy clean

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

# The native-kernel tests against a C core built with AddressSanitizer + UBSan.
SAN_BUILD ?= build-sanitize
sanitize: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/meson setup $$(test -d $(SAN_BUILD) && echo --reconfigure) $(SAN_BUILD) \
	  -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
	  -Dc_args=-fno-sanitize-recover=all > $(SAN_BUILD).log 2>&1 || \
	  (cat $(SAN_BUILD).log; exit 1)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ninja -C $(SAN_BUILD) >> $(SAN_BUILD).log 2>&1 || \
	  (cat $(SAN_BUILD).log; exit 1)
	$(BIN)/python tools/run_sanitized.py $(SAN_BUILD)

test: lint typecheck pytest sanitize

bench: install
	env -u OPENBLAS_CORETYPE $(BIN)/python benchmarks/run.py

accuracy: install
	$(BIN)/python benchmarks/accuracy.py

clean:
	rm -rf $(VENV) build builddir $(SAN_BUILD) $(SAN_BUILD).log .pytest_cache .mypy_cache .ruff_cache .hypothesis
