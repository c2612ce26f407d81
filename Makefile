# Herald: `make run` opens the app, `make test` installs what it needs and runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run serve test check lint bench bench-compare bytecode screenshot screenshot-browser \
	system-deps browser-deps redis-deps xvfb-deps dist smoke clean

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

# Qt's offscreen platform needs a few system libraries that a bare Debian lacks; desktop
# notifications without a tray need gdbus, and their test a private bus (dbus-daemon).
QT_LIBS := libgl1 libegl1 libglib2.0-0 libfontconfig1 libxkbcommon0 libdbus-1-3 \
	libglib2.0-bin dbus-daemon
system-deps:
	@missing=""; for lib in libGL.so.1 libEGL.so.1 libglib-2.0.so.0 libfontconfig.so.1 \
		libxkbcommon.so.0 libdbus-1.so.3; do \
		ldconfig -p | grep -q "$$lib" || missing=yes; done; \
	for cmd in gdbus dbus-daemon; do command -v "$$cmd" >/dev/null || missing=yes; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Qt's system libraries: $(QT_LIBS)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq $(QT_LIBS) >/dev/null; \
		else echo "Qt needs: sudo apt-get install $(QT_LIBS)"; fi; fi

# The browser tests (tests/browser) drive Debian's Chromium through Playwright, which is
# told its path: no browser is downloaded (`playwright install` is never run).
CHROMIUM := /usr/bin/chromium
browser-deps:
	@if [ ! -x "$(CHROMIUM)" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Chromium for the browser tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq chromium >/dev/null; \
		else echo "the browser tests need: sudo apt-get install chromium"; fi; fi

# The Redis backend's tests (tests/contract, tests/redis_server.py) start Debian's
# redis-server themselves, each on a free port in a temp dir; the system's service is unused.
REDIS_SERVER := /usr/bin/redis-server
redis-deps:
	@if [ ! -x "$(REDIS_SERVER)" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing redis-server for the Redis backend's tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq redis-server >/dev/null; \
		else echo "the Redis backend's tests need: sudo apt-get install redis-server"; fi; fi

# Herald's own modules compiled ahead (as pip does for what it installs): otherwise, where
# PYTHONDONTWRITEBYTECODE is set, each service compiles them again at every start (~0.4 s
# of CPU across the four processes here). Quick when nothing changed.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 services embedded desktop bench >/dev/null

run: $(STAMP) system-deps bytecode
	$(BIN)/herald

serve: $(STAMP) bytecode
	$(BIN)/herald serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy services/core services/store embedded

test: $(STAMP) system-deps browser-deps redis-deps lint
	QT_QPA_PLATFORM=offscreen $(BIN)/pytest

# `make bench BACKEND=redis`: the same figures on SQLite and Redis side by side (it starts
# redis-servers of its own: `make redis-deps` installs one).
BACKEND ?= sqlite
bench: $(STAMP) bytecode
	$(BIN)/python -m bench $(if $(filter redis,$(BACKEND)),backends,)

# Herald against the original design (Flask/gunicorn + Celery/RabbitMQ + Node Socket.IO),
# measured interleaved in one run; its bench.sh installs rabbitmq-server (apt) and npm modules.
SEED_STACK ?= ../shared/seed-stack
COMPARE_ROUNDS ?= 3
bench-compare: $(STAMP) bytecode
	@[ -f "$(SEED_STACK)/bench.sh" ] || { echo "make bench-compare: no seed stack at" \
		"$(SEED_STACK) (no bench.sh there); set SEED_STACK=/path/to/seed-stack"; exit 2; }
	$(BIN)/python -m bench original --seed-stack "$(SEED_STACK)" --rounds $(COMPARE_ROUNDS)

# A real window needs Xvfb and the xcb libraries Qt's xcb platform loads.
XVFB_PKGS := xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 \
	libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libxkbcommon-x11-0 fonts-dejavu-core
xvfb-deps:
	@if ! command -v xvfb-run >/dev/null || ! ldconfig -p | grep -q libxcb-cursor.so.0; then \
		echo "installing Xvfb and Qt's xcb libraries"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq $(XVFB_PKGS) >/dev/null; fi

# docs/screenshot.png: the real app under Xvfb with tasks in flight and finished.
screenshot: $(STAMP) system-deps xvfb-deps
	xvfb-run -a -s "-screen 0 1440x900x24" $(BIN)/python -m desktop.screenshot docs/screenshot.png

# docs/browser.png: the task page in Chromium (headless) with tasks running and finished.
screenshot-browser: $(STAMP) browser-deps
	$(BIN)/python -m tests.browser.screenshot docs/browser.png

# dist/herald (PyInstaller onefile), dist/herald-onedir/ and dist/herald_<version>_<arch>.deb.
DIST_STAMP := $(VENV)/.stamp-dist
$(DIST_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test,dist]'
	@touch $@

dist: $(DIST_STAMP)
	bash packaging/build.sh $(BIN)/python
	PYTHON=$(BIN)/python bash packaging/make_deb.sh

# What CI checks of `make dist`'s artifacts (the .deb part installs it: root or sudo).
smoke: system-deps
	bash packaging/smoke.sh

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
