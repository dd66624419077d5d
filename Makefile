# orthrus-batch: `make demo` (venv, install, demo job on a local Ray) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.orthrus-batch-installed
# torch is pinned here, not in pyproject: 2.13.0 is the CPU build this machine kind has on disk
# (an unpinned torch pulls a multi-GB CUDA build); GPU images keep the torch they ship.
TORCH := torch==2.13.0

# The shipped demo (demo/model + demo/prompts.parquet, whose chat rows already hold the chat
# template) when present, else a tiny random model and sample prompts built on the spot.
ifneq ($(and $(wildcard demo/model/config.json),$(wildcard demo/prompts.parquet)),)
DEMO_PREP := @echo "using the shipped demo model and prompts (demo/)"
DEMO_SET := --set model.path=demo/model --set input.path=demo/prompts.parquet --set prompt.chat_template=false
else
DEMO_PREP := $(PY) -m jobs.make_demo --out build/demo
DEMO_SET :=
endif

.PHONY: demo test test-gpu install clean-demo

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)" -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(DEMO_PREP)
	$(VENV)/bin/orthrus-batch run jobs/examples/demo.yaml $(DEMO_SET)
	@echo
	@echo "outputs: runs/demo/outputs/  (one row per prompt)"
	@echo "stats:   runs/demo/stats/shards.parquet  (one row per input shard)"
	@echo "summary: runs/demo/summary.json"

# CPU suite (this machine, CI); tests/gpu needs CUDA and runs on the GPU machine: make test-gpu
test: $(STAMP)
	RAY_AUTH_MODE=disabled $(PY) -m pytest -q --ignore=tests/gpu

# On the GPU machine, with its own python (torch with CUDA); no venv, nothing is downloaded there.
test-gpu:
	PYTHONPATH=. python3 -m pytest -q -p no:cacheprovider tests/gpu

clean-demo:
	rm -rf build/demo runs/demo

# Rebuild the demo model from this machine's Python source (README "Demo model"; a GPU is
# needed: 7 minutes on one H200 for the build, 7 more for the heads run), then install the heads
# that won on validation prompts and measure them in fp32 (on the GPU: the CPU takes 18 minutes).
.PHONY: demo-model
demo-model: $(STAMP)
	$(PY) -m jobs.build_demo --out demo --budget-s 420 --heads-s 120 --train-bytes 120000000
	rm -rf build/demo-heads && mkdir -p build/demo-heads
	PY=$(PY) LIMIT_S=525 OUT=build/demo-heads bash demo/heads_run.sh 250 75
	cp build/demo-heads/$$(cat build/demo-heads/chosen.txt)/*.safetensors demo/model/
	$(PY) -m jobs.eval_demo --model demo/model --prompts demo/prompts.parquet --out demo/eval.json --device cuda --batch-size 340
