# Two commands on a fresh machine:  `make verify`  (the main job, on the embedded tiny checkpoint)
#                                   `make test`    (the whole test suite)
# Both create .venv first with a CPU torch and the pinned versions in constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup verify test
setup: $(VENV)/.installed

# gpt-oss: OpenAI's reference gpt_oss.torch (the `openai` candidate and reference). Its torch model needs only torch
# and safetensors, while the package declares Python >= 3.12 and serving dependencies: hence --no-deps.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0 -e '.[test]'
	$(BIN)/pip install -q --no-deps --ignore-requires-python -c constraints.txt gpt-oss
	touch $@

verify: setup
	$(BIN)/gptoss-convert verify

test: setup
	$(BIN)/python -m pytest -q
