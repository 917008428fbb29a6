# medfuse: two commands on a fresh machine, `make demo` and `make test`.
#
# `make install` creates .venv in the checkout and installs medfuse (editable) with its
# test extras. torch is pinned through constraints.txt. On a CUDA machine point pip at a
# CUDA build of the same torch version, for example:
#     make install TORCH_PIP_ARGS="--index-url <your CUDA 12.x torch wheel index>"
# (the constraint torch==2.13.0 still applies; see README "GPU install").

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.medfuse-installed
TORCH_PIP_ARGS ?=
DEMO_DIR ?= runs/demo
# pytest workers: two on a 2-core machine; 0 runs in-process
TEST_WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: install demo test clean help

help:
	@echo "make demo   - set up .venv if needed, build the demo data and run the demo job"
	@echo "make test   - set up .venv if needed, run the whole test suite"
	@echo "make install / make clean"

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -c constraints.txt $(TORCH_PIP_ARGS) torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m medfuse.demo --out $(DEMO_DIR)

test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
