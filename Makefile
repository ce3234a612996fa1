# Two user-facing targets: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/denseood demo

test: $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || echo "note: the browser test (tests/commands/test_report_browser.py) fails without Chromium; install it: sudo apt-get install chromium chromium-driver"
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo_out .pytest_cache
