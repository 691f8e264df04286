# cai_tools: `make demo` installs everything and runs an SL-CAI demo; `make test` runs the tests.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CAI    := $(VENV)/bin/cai
MODEL_FILE := models/SmolLM2-135M-Instruct.Q4_1.gguf

# Demo sizes (override: make demo N=24 ROUNDS=4 MODEL=path/to/model.gguf)
N      ?= 8
ROUNDS ?= 4
SEED   ?= 0
MODEL  ?= $(MODEL_FILE)
CONSTITUTION ?= constitutions/harmless.yaml
# torch for training, installed before the project so pip does not pick a multi-GB CUDA
# build: 2.13.0 is a CPU build on these machines. On a GPU box: make install TORCH=torch
TORCH  ?= torch==2.13.0
DEMO   := out/demo

.PHONY: install model test test-unit demo bench clean help

help:
	@echo "make demo   install, fetch the model, run SL-CAI on bundled red-team prompts"
	@echo "make test   install, fetch the model, run the test suite"
	@echo "make model  fetch the default tiny GGUF model into models/"
	@echo "make bench  engine benchmarks (ratios against baselines measured in the same run)"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@echo "Installing cai_tools into $(VENV). The first time, llama-cpp-python compiles llama.cpp"
	@echo "from source: about 4-7 minutes on 2 cores (pip caches the built wheel afterwards)."
	@$(PY) -m pip show -q torch >/dev/null 2>&1 || { echo "Installing $(TORCH) ..."; $(PY) -m pip install -q "$(TORCH)"; }
	@scripts/install.sh $(VENV) test,train
	@touch $@

model: $(MODEL_FILE)

$(MODEL_FILE): | $(VENV)/.installed
	$(CAI) fetch-model --dest models

test: install model
	$(PY) -m pytest -q

test-unit: install
	$(PY) -m pytest -q -m "not model"

demo: install model
	@mkdir -p $(DEMO)
	@echo "SL-CAI demo: $(N) red-team prompts, $(ROUNDS) critique/revision rounds, model $(MODEL)"
	@start=$$(date +%s); \
	head -n $(N) data/redteam_demo.jsonl \
	  | $(CAI) generate -m $(MODEL) --seed $(SEED) --max-tokens 128 \
	  | $(CAI) revise -m $(MODEL) -c $(CONSTITUTION) --rounds $(ROUNDS) --seed $(SEED) --max-tokens 128 \
	  > $(DEMO)/sl.jsonl; \
	$(CAI) format -q --to hf $(DEMO)/sl.jsonl > $(DEMO)/sl_hf.jsonl; \
	secs=$$(( $$(date +%s) - start )); \
	echo "wrote $(DEMO)/sl.jsonl ($$(wc -l < $(DEMO)/sl.jsonl) records with $(ROUNDS) rounds each) and $(DEMO)/sl_hf.jsonl in $${secs}s"; \
	$(PY) -c "import json,sys; r=json.loads(open('$(DEMO)/sl.jsonl').readline()); print('\nprompt:', r['prompt']); print('initial:', r['init_response'][:300]); h=r['history'][-1]; print('last critique (%s):' % h['principle'], h['critique'][:300]); print('final:', r['response'][:300])"

clean:
	rm -rf out .pytest_cache

bench: install model
	$(PY) bench/bench_engine.py --prompts 16 --http
	$(PY) bench/bench_judge.py --pairs 24
	$(PY) bench/bench_sft.py --steps 8
	$(PY) bench/bench_rl.py --steps 6
