# Entry points of llava3d_ros. Every target sets the environment up first when needed
# (tools/setup.sh is idempotent and returns at once when nothing changed).
# ROS 2 distribution from PyPI wheels: jazzy (LTS, the default) or kilted, e.g.
# `LLAVA3D_ROS_DISTRO=kilted make test`. Each has its own venv: the default's is .venv, any
# other's .venv-<distro> (LLAVA3D_VENV=/path overrides); see tools/setup.sh.
# The torch build, LLAVA3D_TORCH: auto (the default: CUDA when nvidia-smi lists a GPU, else CPU),
# cpu, cuda or system (JetPack's); `bash tools/setup.sh --plan` shows what a set-up would install.
LLAVA3D_ROS_DISTRO ?= jazzy
export LLAVA3D_ROS_DISTRO
VENV := $(or $(LLAVA3D_VENV),$(if $(filter jazzy,$(LLAVA3D_ROS_DISTRO)),.venv,.venv-$(LLAVA3D_ROS_DISTRO)))
PY := $(VENV)/bin/python
# Python 3.10 compatibility of every hand-written Python file (syntax and standard library):
# vermin fails on anything that needs a newer Python. Generated rosidl code is not in the tree.
VERMIN_PATHS := llava3d_ros test bench tools scripts launch setup.py
# The tests that talk to ROS 2 (DDS, rclpy, node processes): what CI runs on the other distribution.
ROS_TESTS := test/ros test/faults test/test_demo.py

.PHONY: setup demo test test-ros lint format bench

setup:
	@bash tools/setup.sh

demo: setup
	@$(VENV)/bin/llava3d-ros demo

test: lint
	@$(PY) -m pytest

test-ros: setup
	@$(PY) -m pytest $(ROS_TESTS)

lint: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/vermin --no-tips --violations -t=3.10- --eval-annotations --backport typing_extensions \
		--exclude-regex 'llava3d_ros/(msg|srv|action)/' $(VERMIN_PATHS)

format: setup
	@$(VENV)/bin/ruff check --fix .
	@$(VENV)/bin/ruff format .

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
