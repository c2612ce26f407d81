# Herald: `make run` opens the app, `make test` installs what it needs and runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run serve test check lint bench system-deps clean

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Herald needs Python 3.11 or newer (found: $$($(PY) --version))"; exit 1; }
	@$(PY) -m venv $(VENV) 2>/dev/null || { \
		echo "python3 -m venv is missing; installing python3-venv"; \
		apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && \
		rm -rf $(VENV) && $(PY) -m venv $(VENV); }
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# Qt's offscreen platform needs a few system libraries that a bare Debian lacks.
QT_LIBS := libgl1 libegl1 libglib2.0-0 libfontconfig1 libxkbcommon0 libdbus-1-3
system-deps:
	@missing=""; for lib in libGL.so.1 libEGL.so.1 libglib-2.0.so.0 libfontconfig.so.1 \
		libxkbcommon.so.0 libdbus-1.so.3; do \
		ldconfig -p | grep -q "$$lib" || missing=yes; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Qt's system libraries: $(QT_LIBS)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq $(QT_LIBS) >/dev/null; \
		else echo "Qt needs: sudo apt-get install $(QT_LIBS)"; fi; fi

run: $(STAMP) system-deps
	$(BIN)/herald

serve: $(STAMP)
	$(BIN)/herald serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy services/core services/store embedded

test: $(STAMP) system-deps lint
	QT_QPA_PLATFORM=offscreen $(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
