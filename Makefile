# rsprune_geo — the two README commands (`make demo`, `make test`) and the rest.
# Every target creates the environment (.venv) when it is missing or out of date.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: env demo test bench clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[test]'
	@touch $@

demo: env
	$(BIN)/rsprune demo --out demo-output

# pytest's exit code 5 means no test was collected: that is a failure here, said plainly.
test: env
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no test (exit 5): failing"; exit 1; fi; \
	exit $$rc

bench: env
	$(PIP) install -q -c constraints.txt -e '.[test,bench]'
	$(BIN)/python benchmarks/bench_stage1.py
	$(BIN)/python benchmarks/bench_selection.py
	$(BIN)/python benchmarks/bench_encoders.py
	$(BIN)/python benchmarks/bench_scale.py

clean:
	rm -rf demo-output .pytest_cache build *.egg-info
