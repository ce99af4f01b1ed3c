# The two commands of the README: `make demo` (the main job) and `make test`. Each does all set-up.
SHELL := /bin/bash
PYTHON ?= python3
# One shared virtual environment, reused by every checkout on this machine (torch is several GB).
VENV ?= $(HOME)/.cache/pudnet/venv
PY := $(VENV)/bin/python
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
DEPS_STAMP := $(VENV)/.pudnet-deps-$(shell cat requirements-dev.txt pyproject.toml | sha1sum | cut -c1-12)
GROUPS ?= 100

.PHONY: demo test bench setup build fashion-mnist clean

demo: build fashion-mnist
	$(VENV)/bin/pudnet eval --groups $(GROUPS)

test: fashion-mnist $(DEPS_STAMP)
	$(MAKE) build MATURIN_FEATURES=--features=test-hooks
	PYO3_PYTHON=$(PY) cargo test --quiet
	$(PY) -m pytest -q

bench: build fashion-mnist
	$(PY) -m pytest benchmarks -q --benchmark-only

setup: $(DEPS_STAMP)

$(DEPS_STAMP): requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.pudnet-deps-* && touch $@

# Always re-run: maturin's cargo build is incremental, and it points the venv at this checkout. `make test` adds
# the test-hooks feature (a deliberate-panic entry point the tests call); the installed build has none.
build: $(DEPS_STAMP)
	@command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup)"; exit 1; }
	VIRTUAL_ENV=$(VENV) PATH=$(VENV)/bin:$$PATH $(VENV)/bin/maturin develop --release -q $(MATURIN_FEATURES)

fashion-mnist:
	@test -f $(FASHION) || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; }

clean:
	rm -rf target python/pudnet/*.so
