# Two commands do all the set-up on a fresh machine:
#   make run    set up .venv (PyTorch, the harness, the embedded model, plotting), then run
#               the main job (suites/max_len.yaml)
#   make test   set up .venv with the test extras, then run the tests
#
# PyTorch: a venv that already has torch keeps it. Otherwise, on a machine without an NVIDIA
# GPU, the CPU build from PyTorch's own CPU wheel index (a bare `pip install torch` on Linux
# pulls the multi-GB CUDA build); with a GPU (nvidia-smi answers), PyPI's CUDA build.
# Override with TORCH=... (the requirement) and TORCH_INDEX=... (empty: PyPI); to keep a CUDA
# build installed outside the venv: make run VENV_FLAGS=--system-site-packages
VENV  ?= .venv
VENV_FLAGS ?=
TORCH ?= torch==2.13.0
GPU   := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_INDEX ?= $(if $(GPU),,https://download.pytorch.org/whl/cpu)
# the data: a folder holding cola/, sst2/, mrpc/, imdb/ (HARNESS_DATA_DIR for the main job
# and the tests alike); made absolute, so a test that works in another folder finds it too
DATA  ?= ../shared/data
DATA_DIR = $(abspath $(DATA))
PYTHON ?= python3
PIP = $(VENV)/bin/pip install --quiet

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(VENV)/bin/python -c "import torch" 2>/dev/null || \
		$(PIP) --retries 1 "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	touch $@

# what `harness run suites/...` needs: the embedded model and the plot
$(VENV)/.run: $(VENV)/.torch pyproject.toml
	$(PIP) -e '.[model,plot]'
	touch $@

# what the tests need: every extra (see pyproject.toml's `dev`)
$(VENV)/.dev: $(VENV)/.torch pyproject.toml
	$(PIP) -e '.[dev]'
	touch $@

.PHONY: install run test bench
install: $(VENV)/.dev

run: $(VENV)/.run
	HARNESS_DATA_DIR=$(DATA_DIR) $(VENV)/bin/harness run suites/max_len.yaml

test: $(VENV)/.dev
	HARNESS_DATA_DIR=$(DATA_DIR) $(VENV)/bin/python -m pytest

bench: $(VENV)/.dev
	HARNESS_DATA_DIR=$(DATA_DIR) $(VENV)/bin/python -m pytest benchmarks/
