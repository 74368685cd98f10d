# labkit: `make lab` to learn, `make test` to check everything. Both create .venv and install the kit first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.labkit-installed
PORT   ?= 8888
# JupyterLab refuses to run as root unless told; only then is the flag added.
ROOT_FLAG = $(if $(filter 0,$(shell id -u)),--allow-root,)
LAB_ARGS ?=
# `make lab LABKIT_LANG=zh` opens the Chinese edition (notebooks/zh/). Not LANG: the shell's locale already sets that.
# The variable only picks the first notebook: each chapter sets its own language (the zh ones call setup(lang="zh")),
# so it is kept out of the recipes' environment, where it would turn the English chapters' output Chinese.
LABKIT_LANG ?= en
unexport LABKIT_LANG
WELCOME = $(if $(filter zh,$(LABKIT_LANG)),notebooks/zh/00_welcome.ipynb,notebooks/00_welcome.ipynb)
# Tests never download: the data loader falls back to the offline MNIST subset.
export LABKIT_OFFLINE ?= 1

.PHONY: lab test lint pytest nbval install clean help teacher test-browser test-zh

help:
	@echo "make lab    start JupyterLab on notebooks/00_welcome.ipynb (creates .venv on first use)"
	@echo "make lab LABKIT_LANG=zh   the same on the Chinese edition, notebooks/zh/00_welcome.ipynb (中文版)"
	@echo "make test   ruff, pytest tests/ and benchmarks/tests/, and every notebook under nbval (prints its time)"
	@echo "make test-zh  the Chinese edition's notebooks (notebooks/zh/) under nbval"
	@echo "make teacher  teacher/ (solutions filled in) and student/ copies of the notebooks"
	@echo "make test-browser  every widget in JupyterLab in headless Chromium (needs: apt-get install chromium)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "labkit needs Python 3.10 or newer; set PYTHON=python3.11 (or newer) and run make again")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { echo "could not create $(VENV): on Debian/Ubuntu run 'apt-get install python3-venv' and try again"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	@echo "Starting JupyterLab: open the URL with the token that it prints below (Ctrl-C stops it)."
	LABKIT_OFFLINE= $(BIN)/jupyter lab --ip=127.0.0.1 --port=$(PORT) $(ROOT_FLAG) $(LAB_ARGS) $(WELCOME)

lint: $(STAMP)
	$(BIN)/ruff check labkit tests benchmarks
	$(BIN)/ruff format --check labkit tests benchmarks

# TensorFlow's autograph writes the code it generates to temporary files, deleted when the process exits normally;
# kernels that nbval stops are killed, and they never are. So each test run gets a TMPDIR of its own, removed
# afterwards, and `make test` leaves nothing in /tmp.
OWN_TMP = tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && TMPDIR=$$tmp

pytest: $(STAMP)
	$(OWN_TMP) $(BIN)/python -m pytest tests/ benchmarks/tests/

nbval: $(STAMP)
	$(OWN_TMP) $(BIN)/python -m pytest --nbval-lax -p no:cacheprovider notebooks/*.ipynb

# The Chinese edition (notebooks/zh/) under nbval: its own target, so that `make test` stays under 10 minutes on
# 2 cores; tests/test_zh.py (in `make test`) keeps it in step with the English chapters. CI runs both.
test-zh: $(STAMP)
	@start=$$(date +%s); $(OWN_TMP) $(BIN)/python -m pytest --nbval-lax -p no:cacheprovider notebooks/zh/ && \
	echo "make test-zh: passed in $$(( $$(date +%s) - start )) s"

# `make test` says how long it took (the target: under 10 minutes on 2 cores).
test:
	@start=$$(date +%s); $(MAKE) --no-print-directory lint pytest nbval && \
	echo "make test: passed in $$(( $$(date +%s) - start )) s"

# The widgets in a real browser: JupyterLab + Debian's Chromium, driven by Playwright (never `playwright install`).
test-browser: $(STAMP)
	@test -x "$${LABKIT_CHROMIUM:-/usr/bin/chromium}" || { echo "make test-browser needs Chromium: apt-get install chromium (or set LABKIT_CHROMIUM to its path)"; exit 1; }
	$(BIN)/python -m pip install --quiet -e ".[dev,browser]"
	$(OWN_TMP) LABKIT_BROWSER=1 $(BIN)/python -m pytest tests/browser -p no:cacheprovider -s

teacher: $(STAMP)
	$(BIN)/python -m labkit.teach --check
	$(BIN)/python -m labkit.teach

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
