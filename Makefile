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
JUDGE  ?= $(MODEL)
# PAIRS_N prompts x 3 answers -> 3 judged pairs each; a quarter of the prompts held out for the
# PM's accuracy (36 pairs at the default: enough for its interval to mean something)
PAIRS_N   ?= 48
PM_HOLDOUT ?= 0.25
SFT_STEPS ?= 16
# Most new tokens of an SL-CAI answer, critique or revision; pair answers get half, eval answers
# three quarters, RL rollouts a quarter (make test's demo runs at MAX_TOKENS=24)
MAX_TOKENS ?= 128
half_tokens = $(shell echo $$(( $(MAX_TOKENS) / 2 )))
quarter_tokens = $(shell echo $$(( $(MAX_TOKENS) / 4 )))
eval_tokens = $(shell echo $$(( $(MAX_TOKENS) * 3 / 4 )))
# --keep-flagged trains on every SL-CAI round, usable or not (see README: SL-CAI data quality)
SFT_FILTER ?= --quality-filter
PM_STEPS  ?= 16
RL_STEPS  ?= 10
ALGO      ?= ppo
EVAL_N    ?= 0      # held-out prompts per eval set (0: all, 26 red-team + 20 helpful)
JUDGE_CHECK_N ?= 0  # labelled pairs eval checks the judge on first (0: the whole test split, 92)
GPU_LAYERS ?=       # llama.cpp layers on the GPU (e.g. 99) when llama-cpp-python has CUDA
CONSTITUTION ?= constitutions/harmless.yaml
# Where the demo's prompts come from: data (the train split of data/redteam.jsonl) or redteam
# (PAIRS_N written by `cai redteam` from that split's prompts; no held-out prompt comes back)
PROMPTS_FROM ?= data
# torch for training, installed before the project so pip does not pick a multi-GB CUDA
# build: 2.13.0 is a CPU build on these machines. On a GPU box: make install TORCH=torch
TORCH  ?= torch==2.13.0
DEMO   ?= out/demo
# The demo's training check (the fourth instrument): CHECK_STEPS of ALGO from the SL-CAI model
# toward a rule whose answer is known; SmolLM2 opens about 4 answers in 10 with one of these words
CHECK_RULE  ?= regex=^\W*(The|To|When)\b
CHECK_STEPS ?= 12
CHECK_LR    ?= 1e-3
# make sanity: every training algorithm toward SANITY_RULE (see docs/sanity.md)
SANITY_OUT   ?= out/sanity
SANITY_RULE  ?= $(CHECK_RULE)
SANITY_STEPS ?= 12
SANITY_LR    ?= 1e-3
SANITY_DPO_LR ?= 1e-3
SANITY_PM_STEPS ?= 40
SANITY_ALGOS ?= all
SANITY_EVAL_N ?= 0   # held-out prompts (0: all 46)
GPU    := $(if $(strip $(GPU_LAYERS)),--n-gpu-layers $(strip $(GPU_LAYERS)))

.PHONY: install model families test test-unit demo sanity bench bench-scale gpu-check clean help

help:
	@echo "make demo   install, fetch the model, run the pipeline: SL-CAI data, sft, export,"
	@echo "            pairs, judge, build-pm, rl, export, eval (file targets: reruns resume)"
	@echo "make test   install, fetch the model, run the test suite"
	@echo "make model  fetch the default tiny GGUF model into models/"
	@echo "make families  build tiny models of ten model families (the test matrix) into models/families"
	@echo "make sanity known-answer runs: every training algorithm toward a rule, before/after (docs/sanity.md)"
	@echo "make bench  engine benchmarks (ratios against baselines measured in the same run)"
	@echo "make bench-scale  training cost at 135M/360M/1B random-init models; refits the cost model"
	@echo "make gpu-check    on a machine with an NVIDIA GPU: CUDA venv, generation/sft/build-pm/PPO measured"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@echo "Installing cai_tools into $(VENV). The first time, llama-cpp-python compiles llama.cpp"
	@echo "from source: about 4-7 minutes on 2 cores (pip caches the built wheel afterwards)."
	@$(PY) -m pip show -q torch >/dev/null 2>&1 || { echo "Installing $(TORCH) ..."; $(PY) -m pip install -q "$(TORCH)"; }
	@scripts/install.sh $(VENV) test,train,quant,report
	@touch $@

model: $(MODEL_FILE)

$(MODEL_FILE): | $(VENV)/.installed
	$(CAI) fetch-model --dest models

# Tiny random-weight models of ten families (Llama 3, Qwen 2.5/3, Gemma 2/3, Mistral, Phi-3.5,
# DeepSeek-R1, gpt-oss, Granite) from llama.cpp's real vocabularies and templates in the
# llama-cpp-python sdist (fetched from PyPI once, like the model): the family matrix's models
families: install
	@echo "Building the family matrix's tiny models into models/families (once; about a minute)"
	@$(PY) tests/family_models.py models/families > /dev/null

# Two workers or more (pytest-xdist), each on its own share of the cores (tests/conftest.py)
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; [ $$n -lt 2 ] && n=2; echo $$n)
test: install model families
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

test-unit: install
	$(PY) -m pytest -q -m "not model"

# The replication as file targets: an interrupted `make demo` redoes only what is missing.
# Each stage logs its wall time to $(DEMO)/timings.tsv for the summary at the end.
PROMPTS  := $(DEMO)/prompts.jsonl
started   = @mkdir -p $(DEMO) && date +%s > $(DEMO)/.start-$(1)
finished  = @echo "$(1)	$$(( $$(date +%s) - $$(cat $(DEMO)/.start-$(1)) ))" >> $(DEMO)/timings.tsv
demo: $(DEMO)/eval/report.md $(DEMO)/training_check.json
	@$(CAI) view -q $(DEMO)/sl.jsonl -o $(DEMO)/eval/view-sl.html --title "SL-CAI: critiques and revisions"
	@$(CAI) view -q $(DEMO)/prefs.jsonl -o $(DEMO)/eval/view-judged.html --title "Judged pairs"
	@$(CAI) view -q $(DEMO)/eval/answers.jsonl -o $(DEMO)/eval/view-answers.html --title "Eval answers side by side"
	@$(PY) scripts/demo_summary.py $(DEMO)

$(PROMPTS): data/redteam.jsonl | install model
	@mkdir -p $(DEMO)
	@echo "== models check: what cai will do with $(MODEL) (and the judge); stops here on a model it cannot use"
	$(CAI) models check $(sort $(MODEL) $(JUDGE))
ifeq ($(PROMPTS_FROM),redteam)
	@echo "== prompts: $(PAIRS_N) model-written red-team prompts (cai redteam, train split as examples)"
	$(CAI) redteam data/redteam.jsonl -n $(PAIRS_N) -m $(MODEL) $(GPU) -c $(CONSTITUTION) --seed $(SEED) > $@.tmp && mv $@.tmp $@
else
	grep -m $(PAIRS_N) '"split": "train"' data/redteam.jsonl > $@.tmp && mv $@.tmp $@
endif

# SL-CAI data: N prompts, ROUNDS critique/revision rounds
$(DEMO)/sl.jsonl: $(PROMPTS) | model
	$(call started,sl-data)
	@echo "== SL-CAI: $(N) red-team prompts, $(ROUNDS) critique/revision rounds, model $(MODEL)"
	head -n $(N) $(PROMPTS) \
	  | $(CAI) generate -m $(MODEL) $(GPU) --seed $(SEED) --max-tokens $(MAX_TOKENS) \
	  | $(CAI) revise -m $(MODEL) $(GPU) -c $(CONSTITUTION) --rounds $(ROUNDS) --seed $(SEED) --max-tokens $(MAX_TOKENS) \
	  > $@.tmp && mv $@.tmp $@
	$(CAI) format -q --to hf $@ > $(DEMO)/sl_hf.jsonl
	$(call finished,sl-data)

# SL-CAI model: LoRA on every round's revision, back to llama.cpp
$(DEMO)/sft/cai_run.json: $(DEMO)/sl.jsonl
	$(call started,sft)
	@echo "== sft: $(SFT_STEPS) steps"
	rm -rf $(DEMO)/sft
	$(CAI) sft --base $(MODEL) --data $< --all-rounds $(SFT_FILTER) --max-steps $(SFT_STEPS) --lr 5e-4 --seed $(SEED) --out $(DEMO)/sft
	$(call finished,sft)
$(DEMO)/sl-lora.gguf: $(DEMO)/sft/cai_run.json
	$(CAI) export $(DEMO)/sft --gguf $@

# RLAIF labels: two answers per prompt from the SL-CAI model, judged against the constitution
$(DEMO)/prefs.jsonl: $(DEMO)/sl-lora.gguf
	$(call started,pairs+judge)
	@echo "== pairs from the SL-CAI model on $(PAIRS_N) prompts (3 answers each), judged by $(JUDGE)"
	$(CAI) generate -m $(MODEL) $(GPU) --lora $< -n 3 --seed $(SEED) --max-tokens $(half_tokens) $(PROMPTS) \
	  | $(CAI) judge -m $(JUDGE) $(GPU) -c $(CONSTITUTION) --seed $(SEED) > $@.tmp && mv $@.tmp $@
	$(call finished,pairs+judge)

# Preference model, then RL against it
$(DEMO)/pm/cai_run.json: $(DEMO)/prefs.jsonl
	$(call started,build-pm)
	@echo "== build-pm: $(PM_STEPS) steps"
	rm -rf $(DEMO)/pm
	$(CAI) build-pm --base $(MODEL) --data $< --max-steps $(PM_STEPS) --eval-fraction $(PM_HOLDOUT) --seed $(SEED) --out $(DEMO)/pm
	$(call finished,build-pm)
$(DEMO)/rl/cai_run.json: $(DEMO)/pm/cai_run.json $(DEMO)/sft/cai_run.json
	$(call started,rl)
	@echo "== rl --algo $(ALGO): $(RL_STEPS) steps"
	rm -rf $(DEMO)/rl
	$(CAI) rl --algo $(ALGO) --policy $(DEMO)/sft --pm $(DEMO)/pm --prompts $(PROMPTS) --max-steps $(RL_STEPS) \
	  --batch-size 2 --max-new-tokens $(quarter_tokens) --seed $(SEED) --out $(DEMO)/rl
	$(call finished,rl)
$(DEMO)/rl-lora.gguf: $(DEMO)/rl/cai_run.json
	$(CAI) export $(DEMO)/rl --gguf $@

# Did it work? Base vs SL-CAI vs RL-CAI on the held-out prompts
$(DEMO)/eval/report.md: $(DEMO)/sl-lora.gguf $(DEMO)/rl-lora.gguf $(DEMO)/pm/cai_run.json
	$(call started,eval)
	@echo "== eval: base, SL-CAI and RL-CAI on the held-out prompts, judged by $(JUDGE)"
	$(CAI) eval -m base=$(MODEL) -m sl-cai=$(MODEL)+$(DEMO)/sl-lora.gguf -m rl-cai=$(MODEL)+$(DEMO)/rl-lora.gguf \
	  --judge $(JUDGE) $(GPU) -c $(CONSTITUTION) --pm $(DEMO)/pm --sl $(DEMO)/sl.jsonl \
	  $(if $(filter-out 0,$(EVAL_N)),--limit $(EVAL_N)) \
	  $(if $(filter-out 0,$(JUDGE_CHECK_N)),--judge-check-limit $(JUDGE_CHECK_N)) --max-tokens $(eval_tokens) \
	  --seed $(SEED) --out $(DEMO)/eval
	$(call finished,eval)

# The fourth instrument: does the demo's algorithm move the SL-CAI model toward a known answer?
$(DEMO)/training_check.json: $(DEMO)/sl-lora.gguf
	$(call started,training-check)
	@echo "== training check: $(CHECK_STEPS) steps of $(ALGO) toward rule:$(CHECK_RULE), measured through the exported GGUF"
	$(PY) scripts/sanity.py --out $(DEMO)/training-check --model $(MODEL) --policy $(DEMO)/sft --policy-lora $< \
	  --rule '$(CHECK_RULE)' --algos "$(ALGO) (rule)" --steps $(CHECK_STEPS) --lr $(CHECK_LR) --max-new-tokens 8 \
	  --samples 4 --eval-n $(EVAL_N) --seed $(SEED)
	cp $(DEMO)/training-check/sanity.json $@
	$(call finished,training-check)

# Known-answer runs of every training algorithm on MODEL (docs/sanity.md)
sanity: install model
	$(PY) scripts/sanity.py --out $(SANITY_OUT) --model $(MODEL) --rule '$(SANITY_RULE)' --algos '$(SANITY_ALGOS)' \
	  --steps $(SANITY_STEPS) --lr $(SANITY_LR) --dpo-lr $(SANITY_DPO_LR) --pm-steps $(SANITY_PM_STEPS) \
	  --max-new-tokens 8 --samples 4 --eval-n $(SANITY_EVAL_N) --seed $(SEED)

clean:
	rm -rf out .pytest_cache

# GEMMA_BASE=1 also measures a pretrained judge, Gemma 3 270M, fetched from PyPI (Gemma terms of use)
bench: install model
	$(PY) bench/bench_engine.py --prompts 64 --http --llama-server
	$(PY) bench/bench_judge.py --sizes 8,32,128
	$(PY) bench/bench_judge_methods.py $(if $(GEMMA_BASE),--fetch-base-model)
	$(PY) bench/bench_sft.py --steps 8
	$(PY) bench/bench_rl.py --steps 6

# ~15 minutes on 2 cores; writes bench/results/scale.json and cai_tools/train/cost_model.json
bench-scale: install model
	$(PY) bench/bench_scale.py

gpu-check:
	scripts/gpu_check.sh
