# Two entry points that work on a fresh machine with only Python: `make demo` and `make test`.
# torch is installed first and pinned, so that no CUDA build of several GB is pulled in.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test study bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgefault reproduce --data mnist5k --out study/quick --quick

study: $(STAMP)
	$(BIN)/edgefault reproduce --data mnist5k --out study/full

# The layer contracts and the documentation site (strict: a broken link fails) first, in seconds;
# then the tests and every docstring example (pyproject.toml's pytest settings).
test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q

# Each benchmark measures its own baseline in the same run and writes its numbers to bench/results/, from which
# bench/report.py generates docs/benchmarks.md.
bench: $(STAMP)
	for script in $(filter-out bench/report.py bench/common.py,$(wildcard bench/*.py)); do \
		$(BIN)/python $$script --json bench/results/$$(basename $$script .py).json || exit 1; done
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .import_linter_cache
