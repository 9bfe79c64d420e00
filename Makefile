# lowbit: `make demo` and `make test` each set up their own environment on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
REQS   ?= requirements/cpu.txt
STAMP  := $(VENV)/.installed
# GPTQ / SmoothQuant: tested beside torch 2.13, transformers 5.19 and compressed-tensors 0.17, below its own pins
LLMCOMPRESSOR ?= llmcompressor==0.12.0.2

.PHONY: setup demo test test-fast gpu-test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(REQS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r $(REQS)
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(PY) -m pip install -q --no-deps $(LLMCOMPRESSOR)
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/lowbit demo

# Test files are shared out between PYTEST_WORKERS processes (pytest-xdist; a file's tests stay in one process, so
# its module fixtures are built once). Most slow tests wait on subprocesses, so two workers suit two cores.
PYTEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -m "not gpu" -n $(PYTEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)

# Quick loop while developing: skips the end-to-end runs.
test-fast: setup
	$(PY) -m pytest -m "not gpu and not slow" -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Run on a machine with a CUDA GPU and a CUDA build of torch.
gpu-test: setup
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
