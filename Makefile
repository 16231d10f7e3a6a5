# Two entry points: `make run` (whole default DAG on the mock survey) and `make test`.
# Both create or reuse .venv from pyproject.toml (pinned versions); nothing else is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
SNAKEMAKE := $(BIN)/snakemake --cores $(CORES)
# The library's bytecode, written once: where PYTHONDONTWRITEBYTECODE is set (as on our CI
# machine) every job, Snakemake parse and test process would otherwise compile the stargrad
# modules it imports again. Up to date, it is a check of each module's time stamp.
BYTECODE := $(BIN)/python -m compileall -q src

.PHONY: run test lint bench profile clean setup

setup: $(VENV)/.installed

# pip compiles what it installs one file at a time; compileall does it on every core, and leaves
# out the installed packages' own test suites, which nothing here imports.
PACKAGE_TESTS := /tests?/(.+/)?(test_|conftest)[^/]*\.py$$

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e '.[test]'
	$(BIN)/python -m compileall -q -j 0 -x '$(PACKAGE_TESTS)' $(VENV)/lib
	@touch $@

run: setup
	@$(BYTECODE)
	$(SNAKEMAKE)
	$(SNAKEMAKE) --report results/report.html

test: setup
	@$(BYTECODE)
	$(BIN)/python -m pytest tests -n $(CORES) --dist load --durations=15

lint: setup
	$(SNAKEMAKE) --lint

bench: setup
	$(BIN)/python bench/bench_models.py

# Per rule: jobs, wall, CPU and start-up seconds, and the critical path of the run in RUNDIR.
RUNDIR ?= .
profile: setup
	$(BIN)/python bench/dag_profile.py $(RUNDIR)

clean:
	rm -rf results resources logs benchmarks .snakemake
