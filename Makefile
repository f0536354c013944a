# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv on first use and install the package with pinned constraints
# (torch==2.13.0 is the local CPU wheel; nothing here may pull a CUDA build).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.codekiln-installed
DEMO_OUT ?= runs/demo

.PHONY: demo test install clean bench

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,spark]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/codekiln data build python-stdlib python-packages --out $(DEMO_OUT)/corpus --config configs/demo.yaml
	$(BIN)/codekiln tokenizer train --corpus $(DEMO_OUT)/corpus --out $(DEMO_OUT)/tokenizer --config configs/demo.yaml
	$(BIN)/codekiln tokenizer stats --tokenizer $(DEMO_OUT)/tokenizer --corpus $(DEMO_OUT)/corpus --compare cl100k_base
	$(BIN)/codekiln data tokenize --corpus $(DEMO_OUT)/corpus --tokenizer $(DEMO_OUT)/tokenizer --out $(DEMO_OUT)/tokens --val-fraction 0.02 --config configs/demo.yaml
	$(BIN)/codekiln train --config configs/demo.yaml --data $(DEMO_OUT)/tokens --tokenizer $(DEMO_OUT)/tokenizer --out $(DEMO_OUT)/run
	$(BIN)/codekiln eval bpb --model $(DEMO_OUT)/run --shards $(DEMO_OUT)/tokens --max-tokens 65536
	$(BIN)/codekiln eval humaneval --model $(DEMO_OUT)/run --n 2 --k 1,2 --temperature 0.2 --max-new-tokens 128 --allow-code-execution
	$(BIN)/codekiln complete --model $(DEMO_OUT)/run "def fibonacci(n):"

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/data_build.py
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
