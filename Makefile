# `make test` and `make demo` each do all set-up on a fresh machine, then run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: test demo docs lint install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU build of torch that lies on disk; a bare `torch` may pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,eval,peft,docs]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests docs/hooks

test: $(STAMP)
	$(VENV)/bin/ruff check src tests docs/hooks
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
		$(PY) -m pytest -n 2 --dist loadgroup -q tests

demo: $(STAMP)
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(VENV)/bin/seqlevel demo

# The documentation site, offline, into site/ (open site/index.html). `make docs VENV=path` uses another venv.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
		$(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache
