# Two commands do all the set-up on a fresh machine:
#   make run    set up .venv, then run the main job (suites/max_len.yaml)
#   make test   set up .venv, then run the tests
#
# TORCH picks the PyTorch build. The default is the small CPU build; on a GPU machine
# keep the CUDA build you have with `make run TORCH=torch` (a bare `torch` on a machine
# without one pulls a multi-GB CUDA build).
VENV  ?= .venv
TORCH ?= torch==2.13.0
DATA  ?= ../shared/data
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "$(TORCH)" -e '.[dev]'
	touch $@

.PHONY: install run test bench
install: $(VENV)/.installed

run: $(VENV)/.installed
	HARNESS_DATA_DIR=$(DATA) $(VENV)/bin/harness run suites/max_len.yaml

test: $(VENV)/.installed
	HARNESS_DATA_DIR=$(DATA) $(VENV)/bin/python -m pytest

bench: $(VENV)/.installed
	HARNESS_DATA_DIR=$(DATA) $(VENV)/bin/python -m pytest benchmarks/
