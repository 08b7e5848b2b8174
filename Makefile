# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export WANDB_MODE ?= offline
export WANDB_SILENT := true
export PYTHONUNBUFFERED := 1
export MPLBACKEND := Agg

.PHONY: demo test export check-export nbtest pytest docs readme data browser postgres clean

# Packages are installed with uv (from PyPI, into this venv): it downloads and unpacks in parallel and compiles the
# bytecode on both cores, 26 s here for what pip takes 95 s to install. INSTALLER=pip uses pip instead (a private index
# set in pip.conf, say; uv reads UV_INDEX_URL / UV_EXTRA_INDEX_URL instead).
INSTALLER ?= uv
ifeq ($(INSTALLER),uv)
INSTALL := $(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode
else
INSTALL := $(BIN)/pip install -q
endif

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(if $(filter uv,$(INSTALLER)),$(BIN)/pip install -q "uv>=0.9",$(BIN)/pip install -q --upgrade "pip>=24")

# the package and its pinned runtime dependencies (torch 2.14.1 / torchvision 0.29.1)
$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(INSTALL) -e ".[offline-zoo,wandb,sweep]"
	touch $@

# everything the tests, notebooks and docs need
$(VENV)/.dev-deps: pyproject.toml | $(BIN)/python
	$(INSTALL) -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@# 'python' (not this venv's absolute path): Jupyter runs it with its own interpreter, so a moved or cloned venv still works
	$(BIN)/python -c "import json, sys, pathlib; p = pathlib.Path(sys.prefix, 'share/jupyter/kernels/python3/kernel.json'); k = json.loads(p.read_text()); k['argv'][0] = 'python'; p.write_text(json.dumps(k, indent=1))"
	touch $@ $(VENV)/.run-deps

# Debian ships Fashion-MNIST; best effort (the package also downloads it into its cache when online)
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
	  echo "note: dataset-fashion-mnist not installed; the full Fashion-MNIST tests will use the torchvision download path"; \
	fi

demo: $(VENV)/.run-deps
	$(BIN)/finetune-kit train

export: $(VENV)/.dev-deps
	$(BIN)/nbdev-export

# the library must be exactly what the notebooks export
check-export: export
	@git diff --exit-code --stat -- finetune_kit || (echo "finetune_kit/ differs from the notebooks: run nbdev-export and commit both" && exit 1)
	@test -z "$$(git status --porcelain --untracked-files=all -- finetune_kit | grep -v __pycache__)" || (git status --short -- finetune_kit; echo "nbdev-export created files that are not committed" && exit 1)

# notebooks whose outputs are deterministic run in tests/test_notebooks.py instead, which also compares their outputs
NBTEST_SKIP := [_.]|00_config|08_analysis|09_plots|04_fastai_timm
# Two lanes, one torch thread each (each notebook writes only its own run folders): the longest notebooks
# (`--timing`: about 390 s together) beside all the others (about 390 s), so neither lane waits for the other.
NBTEST_LONG := 03_best_model|06_train|01_cpu|05a_distributed
NBTEST := OMP_NUM_THREADS=1 $(BIN)/nbdev-test --flags slow --n-workers 1 --do-print --timing
nbtest: $(VENV)/.dev-deps
	@$(NBTEST) --file-re '^($(NBTEST_LONG))' & long=$$!; \
	$(NBTEST) --skip-file-re '^($(NBTEST_SKIP)|$(NBTEST_LONG))'; rest=$$?; \
	wait $$long; long=$$?; test $$rest = 0 -a $$long = 0

# pytest-xdist, a test file per worker (module fixtures such as trained runs are built once); PYTEST_WORKERS=0: one process
# a third process fills the cores while the others wait on subprocesses and servers
PYTEST_WORKERS ?= 3
pytest: $(VENV)/.dev-deps
	$(BIN)/python -m pytest tests/ -q -p no:cacheprovider $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile) --durations 25

# headless Chromium for the docs and report tests (Debian's package; best effort)
browser:
	@if ! command -v chromium >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) || \
	  echo "note: chromium not installed; browser tests will say so"; \
	fi

# PostgreSQL's server programs for the multi-machine sweep tests, which start their own throwaway server (Debian's
# package; best effort: without it those tests skip and say why)
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq postgresql >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq postgresql >/dev/null 2>&1)) || \
	  echo "note: postgresql not installed; the PostgreSQL sweep tests will skip"; \
	fi

test: data browser postgres check-export nbtest pytest

readme: $(VENV)/.dev-deps
	$(BIN)/python tools/make_readme.py

docs: $(VENV)/.dev-deps
	$(BIN)/python tools/build_docs.py

clean:
	rm -rf $(VENV) _docs _proc
