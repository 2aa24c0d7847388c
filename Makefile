# The two set-up commands of the README:
#   make demo   install everything, then run the main job on the built-in models
#   make test   install everything, then run the whole test suite
.PHONY: setup demo test test-fast

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/iclwb demo

test: setup
	bash scripts/run-tests.sh

test-fast:
	.venv/bin/python -m pytest -m "not slow and not browser" -q
