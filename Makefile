# Two entry points that work on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the releases this project is developed and benchmarked with
# (on the project's CPU machines pip takes them from local disk).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[lite,test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/graft demo

test: $(VENV)/.installed
	GRAFT_NO_PROGRESS=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
