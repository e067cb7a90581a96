# Everything a bare machine needs: `make demo` and `make test` create .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints.txt

.PHONY: demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(PIP) -e ".[bench]"
	touch $@

# Main job: closed-loop MPPI on Pendulum-v1 with the true model.
demo: $(VENV)/.installed
	$(BIN)/modelrl plan mppi --env Pendulum-v1 --episodes 3

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

# Planner benchmark against pytorch-mppi (writes benchmarks/results/planners.json).
bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks.planners

clean:
	rm -rf $(VENV) runs .pytest_cache
