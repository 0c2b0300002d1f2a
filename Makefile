# Two entry points that work on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the releases this project is developed and benchmarked with
# (on the project's CPU machines pip takes them from local disk).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint install clean system-packages

# Debian packages some tests use: a font with CJK glyphs (class names in pictures) and a
# headless browser (report.html). Installed when missing and we are root with apt-get (CI);
# otherwise the tests that need them skip.
SYSTEM_PACKAGES := fonts-wqy-microhei chromium chromium-driver

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[lite,serve,test,audit]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/graft demo

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || echo "could not install $$missing: the tests that need them skip"; \
	else echo "not installing $$missing (needs root and apt-get): the tests that need them skip"; fi

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports

test: $(VENV)/.installed system-packages lint
	GRAFT_NO_PROGRESS=1 $(PY) -m pytest -q --durations=15

clean:
	rm -rf $(VENV) runs
