# medfuse: two commands on a fresh machine, `make demo` and `make test`.
#
# `make install` creates .venv in the checkout and installs medfuse (editable) with its
# test extras; torch==2.13.0 and monai==1.6.1 are pinned through constraints.txt. Which
# torch build it pulls is chosen with TORCH (see README "Install details"):
#
#   make install               torch from the configured package index. On Linux x86_64, PyPI's
#                              torch 2.13.0 IS the CUDA build: it pulls the nvidia-* CUDA wheels
#                              (several GB) whether or not the machine has a GPU. Where pip is set
#                              up with a local CPU wheel (find-links), that one is used.
#   make install TORCH=cpu     the CPU-only build from https://download.pytorch.org/whl/cpu
#                              (a few hundred MB; no CUDA libraries)
#   make install TORCH=cu128   a CUDA build from https://download.pytorch.org/whl/cu128 (any
#                              cuXYZ the PyTorch index lists for 2.13.0)
#   make install TORCH_PIP_ARGS="--index-url <mirror>"   a site mirror of either
#
# The choice is made once: `make clean` before switching.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.medfuse-installed
TORCH ?=
TORCH_INDEX := https://download.pytorch.org/whl
TORCH_PIP_ARGS ?= $(if $(TORCH),--index-url $(TORCH_INDEX)/$(TORCH),)
DEMO_DIR ?= runs/demo
# pytest workers: two on a 2-core machine; 0 runs in-process
TEST_WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: install demo test clean help

help:
	@echo "make demo   - set up .venv if needed, build the demo data and run the demo job"
	@echo "make test   - set up .venv if needed, run the whole test suite"
	@echo "make install [TORCH=cpu|cu128] / make clean  (TORCH: which torch build; see the top of this file)"

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
