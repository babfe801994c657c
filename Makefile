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

QUICK := configs/data/quickstart.yaml
quickstart:  # the whole chain on generated titles and covers, the tuned ID encoder beside it, one table (about 3 min)
	$(BIN)/sicsrec data generate --out data/generated/quickstart --users 1000 --items 600 --seed 0 \
	    --id_signal 0.3 --text_signal 0.3 --image_signal 0.3
	$(BIN)/sicsrec run $(QUICK) --steps configs/quickstart --one_process true
	$(BIN)/sicsrec tune $(QUICK) --steps configs/quickstart --one_process true \
	    --grid '{model.init_args.item_dropout: [0.0, 0.5]}'
	$(BIN)/sicsrec report runs/quickstart/id runs/quickstart/stage2 --title quickstart \
	    --out runs/quickstart/results.md

clean:
	rm -rf $(VENV) runs .pytest_cache
