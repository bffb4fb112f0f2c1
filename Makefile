# `make demo` and `make test` work on a fresh clone: the first run creates .venv and installs
# everything (torch, DeepSpeed, numpy, ...); later runs reuse it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NPROC  ?= 2
# Test files run on this many pytest workers (pytest-xdist, a file per worker at a time): most
# multi-process cases wait on start-up and rendezvous, so two workers keep 2 cores busy.
TEST_WORKERS ?= 2

.PHONY: setup demo test bench clean ladder gpu-check

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/scaleplan prepare --out data/stdlib
	OMP_NUM_THREADS=1 $(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) launch/train.py --config configs/default.yaml

# The scaling loop end to end on CPU: design a 9-run seed ladder (tiny models on the standard library),
# train it, fit the law, and train the compute-optimal run it plans at 6e12 FLOPs; prints the
# predicted loss with its interval beside the measured one. Finished runs are skipped on a rerun.
ladder: $(STAMP)
	$(BIN)/scaleplan prepare --out data/stdlib
	$(BIN)/scaleplan ladder --budget-flops 1.2e13 --runs 9 --target-flops 6e12 --noise 0.02 --out runs/ladder
	$(BIN)/scaleplan ladder run runs/ladder --local --nproc $(NPROC) --train-next

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

bench: $(STAMP)
	$(BIN)/python bench/train_throughput.py --config configs/default.yaml
	$(BIN)/python bench/plan_speed.py
	$(BIN)/python bench/checkpoint_save.py
	$(BIN)/python -m pip install -q -r bench/requirements.txt
	$(BIN)/python bench/fit_speed.py

# Everything a GPU machine should measure, in one call and one table (under 8 minutes on one H100 or
# H200): pytest -m gpu, bench/gpu_mfu.py (our compiled bf16 step against an eager minimal loop, MFU)
# and bench/memory_forecast.py, each beside the planner's forecast of the same config.
# GPU_CHECK_DRY=1 make gpu-check runs the same parts on the CPU with tiny models, so CI knows they start.
gpu-check: $(STAMP)
	$(BIN)/python bench/gpu_check.py

clean:
	rm -rf $(VENV) runs data *.egg-info
