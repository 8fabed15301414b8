# protocal — two entry points:
#   make demo   create .venv, install the pinned stack, train + evaluate a small PCL model on bundled
#               real expert points (EndoNuke, 10% annotated; tools/run_demo.sh)
#   make test   create .venv, install the pinned stack, run the test suite
# `make setup` alone is idempotent: a second run only checks the stamp file.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.protocal-setup-done
# Forwarded to pytest, e.g. `make test PYTEST_ARGS="-k codec -x"`
PYTEST_ARGS ?=

.PHONY: setup demo test clean-venv check-prereqs

$(STAMP): requirements/runtime.txt requirements/tests.txt setup.py
	@$(MAKE) --no-print-directory check-prereqs
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=23" wheel ninja
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build
	$(PIP) install "torch==2.13.0"
	# torch drags in a recent setuptools; mmcv's setup.py and mmengine's scope resolution need pkg_resources
	$(PIP) install "setuptools<81"
	# mmcv 2.1.0 has no wheel for this torch: build it with ops (CUDA only if nvcc + a GPU torch are present).
	# pip caches the built wheel, so a re-install after `make clean-venv` is fast.
	$(PY) -c "import mmcv, mmcv.ops" 2>/dev/null || \
	  MMCV_WITH_OPS=1 FORCE_CUDA=$${FORCE_CUDA:-0} MAX_JOBS=$${MAX_JOBS:-2} \
	  $(PIP) install --no-build-isolation "setuptools<81" mmcv==2.1.0
	$(PIP) install -r requirements/runtime.txt -r requirements/tests.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	$(PY) -c "import protocal, mmdet, mmseg, mmcv.ops; print('protocal', protocal.__version__, 'ready')"
	@touch $(STAMP)

setup: $(STAMP)

check-prereqs:
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "ERROR: $(PYTHON) not found. Install Python 3.11 (with venv + headers) or run 'make PYTHON=/path/to/python3.11'."; exit 1; }
	@$(PYTHON) -c "import sys; assert sys.version_info[:2] >= (3, 8), sys.version" 2>/dev/null || { \
	  echo "ERROR: $(PYTHON) is too old; protocal needs Python >= 3.8 (3.11 is tested)."; exit 1; }
	@$(PYTHON) -c "import venv, ensurepip" 2>/dev/null || { \
	  echo "ERROR: $(PYTHON) has no venv/ensurepip module (Debian: apt install python3.11-venv)."; exit 1; }
	@command -v $${CXX:-g++} >/dev/null 2>&1 || { \
	  echo "ERROR: no C++ compiler ($${CXX:-g++}) found; it is needed to build mmcv 2.1.0 ops (Debian: apt install g++)."; exit 1; }
	@$(PYTHON) -c "import sysconfig, os; h=sysconfig.get_paths()['include']; assert os.path.exists(os.path.join(h, 'Python.h'))" 2>/dev/null || { \
	  echo "ERROR: Python headers (Python.h) missing; needed to build mmcv (Debian: apt install python3.11-dev)."; exit 1; }

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: $(STAMP)
	PYTHON=$(PY) bash tools/run_demo.sh

clean-venv:
	rm -rf $(VENV)
