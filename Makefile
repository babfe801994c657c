# The two commands: `make install` (creates ./.venv) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install test lint format quickstart clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	$(BIN)/python -c "import torch, torchvision, lightning, timm, transformers, peft; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| lightning', lightning.__version__)"

test: lint  # two workers (the CI machine's two cores), each test file on one of them
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint:  # ruff's rules and format, configured in pyproject.toml
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

quickstart:
	$(BIN)/sicsrec fit --config configs/quickstart.yaml

clean:
	rm -rf $(VENV) runs .pytest_cache
