# The two commands: `make run` (set-up, data, 20-epoch training, explanations) and `make test`.
SOURCE ?=
DATA ?= data
# the smoke run's folder: RUN when given (command line or environment), else runs/smoke
SMOKE_RUN := $(if $(filter command line environment,$(origin RUN)),$(RUN),runs/smoke)
RUN ?= runs/main
ARGS ?=
# make run / make smoke replace the run in $(RUN) (smoke: runs/smoke unless RUN is given);
# RUN_MODE="--run.resume true" continues a killed one
RUN_MODE ?= --run.overwrite true
PY := .venv/bin/python

.PHONY: setup test test-fast run smoke bench reproduce
setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q tests

# the tests not marked slow (no process started, no browser, no reference package): minutes
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

run: setup
	$(PY) scripts/prepare_data.py --data.dir $(DATA) $(if $(SOURCE),--data.source $(SOURCE))
	$(PY) scripts/train.py --data.dir $(DATA) --run.dir $(RUN) $(RUN_MODE) $(ARGS)
	$(PY) scripts/explain.py --data.dir $(DATA) --run.dir $(RUN)

smoke: setup
	$(PY) scripts/prepare_data.py --data.dir $(DATA) $(if $(SOURCE),--data.source $(SOURCE))
	$(PY) scripts/train.py -C configs/smoke.yaml --data.dir $(DATA) --run.dir $(SMOKE_RUN) $(RUN_MODE) $(ARGS)
	$(PY) scripts/explain.py --data.dir $(DATA) --run.dir $(SMOKE_RUN)

bench: setup
	$(PY) benchmarks/run_all.py --data.dir $(DATA)

# every headline figure in one command (seeds, calibration, explain, benchmarks): see README
reproduce: setup
	$(PY) scripts/reproduce.py --data.dir $(DATA) $(if $(SOURCE),--data.source $(SOURCE)) $(ARGS)
