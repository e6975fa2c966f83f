# segloc: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
SEGLOC_DATA ?= $(abspath ../shared/data)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export SEGLOC_DATA

FUZZ_SECONDS ?= 600

.PHONY: demo test test-fast fuzz bench bench-isbi bench-hippocampus bench-lgg bench-ph2 bench-camvid lint install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch first, from the pinned CPU build, so that `torch>=2.3` below installs nothing more
# (an unpinned torch would pull a multi-GB CUDA build). Override with `make TORCH=... test`.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,onnx,serve,scale]"
	-$(PY) -m pip install --quiet --only-binary=:all: "atheris>=2.3"  # optional: see [fuzz]
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segloc demo --data "$(SEGLOC_DATA)" --out demo-out

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not fuzz"

# coverage-guided fuzzing of every reader for FUZZ_SECONDS (every library instrumented);
# failing inputs land in tests/data/crashers/, replayed by `make test`
fuzz: $(STAMP)
	$(PY) tests/fuzz_readers.py --seconds $(FUZZ_SECONDS) --instrument all

# timings against the peers; run on an otherwise idle machine
bench: $(STAMP)
	$(PY) benchmarks/classical.py --out benchmarks/results/classical.md
	$(PY) benchmarks/models.py --out benchmarks/results/models.md

# training on the real datasets within the issue's budgets (isbi 20+20 min with the MONAI
# recipe beside it, hippocampus 30 min, the others 10 min); one at a time on an idle machine
bench-isbi bench-hippocampus bench-lgg bench-ph2 bench-camvid: bench-%: $(STAMP)
	$(PY) benchmarks/train_real.py $* --out benchmarks/results

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) demo-out build *.egg-info src/*.egg-info
