# Entry points of llava3d_ros. Every target sets the environment up first when needed
# (tools/setup.sh is idempotent and returns at once when nothing changed).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint format bench

setup:
	@bash tools/setup.sh

demo: setup
	@$(VENV)/bin/llava3d-ros demo

test: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(PY) -m pytest

format: setup
	@$(VENV)/bin/ruff check --fix .
	@$(VENV)/bin/ruff format .

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
