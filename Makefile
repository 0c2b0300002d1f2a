# Two entry points that work on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision: the CPU build where one is to be had (a local CPU pair of wheels, else
# PyTorch's CPU index), else PyPI's default build; an existing venv keeps its torch
# (tools/install_torch.py says which it took and why). Versions: the releases this project is
# developed and benchmarked with (TORCH_VERSION / TORCHVISION_VERSION override them).
export TORCH_VERSION ?= 2.14.1
export TORCHVISION_VERSION ?= 0.29.1
# every extra, so the suite runs each one's tests (the export formats' tests skip where theirs is absent)
EXTRAS := lite,serve,audit,openvino,coreml,ray,test,docs,release

.PHONY: demo test lint typecheck format docs wheel check-name install clean system-packages

# Debian packages some tests use: a font with CJK glyphs (class names in pictures) and a
# headless browser (report.html). Installed when missing and we are root with apt-get (CI);
# otherwise the tests that need them skip.
SYSTEM_PACKAGES := fonts-wqy-microhei chromium chromium-driver

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) tools/install_torch.py
	@# the distribution was called `graft` before it became graft-vision: an old editable install goes first
	@if $(PY) -m pip show -q graft >/dev/null 2>&1; then $(PY) -m pip uninstall -y -q graft; fi
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
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
	$(VENV)/bin/ruff check src tests bench tools docs
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/lint-imports

# mypy on the settings, train/, methods/, recipes/ ([tool.mypy] in pyproject.toml says what it checks)
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# ruff format on the files it covers today ([tool.ruff.format] in pyproject.toml; CONTRIBUTING.md)
format: $(VENV)/.installed
	$(VENV)/bin/ruff format

test: $(VENV)/.installed system-packages lint typecheck
	GRAFT_NO_PROGRESS=1 $(PY) -m pytest -q --durations=15

# the documentation site, warnings as errors, into site/ (docs/, mkdocs.yml)
docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build --strict --quiet

# the wheel and sdist into dist/, checked by twine; tools/check_wheel.sh installs the wheel in a fresh venv
wheel: $(VENV)/.installed
	rm -rf dist
	$(PY) -m build --outdir dist . >/dev/null
	$(PY) -m twine check --strict dist/*

# is the distribution name ours or free on the package index? (says so when it cannot ask)
check-name:
	python3 tools/check_name.py

clean:
	rm -rf $(VENV) runs dist site
