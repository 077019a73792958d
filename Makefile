# The two commands: `make run` (set-up, data, 20-epoch training, explanations) and `make test`.
SOURCE ?=
DATA ?= data
RUN ?= runs/main
ARGS ?=
# make run / make smoke replace the run in $(RUN); RUN_MODE="--run.resume true" continues a killed one
RUN_MODE ?= --run.overwrite true
PY := .venv/bin/python

.PHONY: setup test run smoke bench reproduce
setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q tests

run: setup
	$(PY) scripts/prepare_data.py --data.dir $(DATA) $(if $(SOURCE),--data.source $(SOURCE))
	$(PY) scripts/train.py --data.dir $(DATA) --run.dir $(RUN) $(RUN_MODE) $(ARGS)
	$(PY) scripts/explain.py --data.dir $(DATA) --run.dir $(RUN)

smoke: setup
	$(PY) scripts/prepare_data.py --data.dir $(DATA) $(if $(SOURCE),--data.source $(SOURCE))
	$(PY) scripts/train.py -C configs/smoke.yaml --data.dir $(DATA) --run.dir runs/smoke $(RUN_MODE) $(ARGS)
	$(PY) scripts/explain.py --data.dir $(DATA) --run.dir runs/smoke

bench: setup
	$(PY) benchmarks/run_all.py --data.dir $(DATA)

# every headline figure in one command (seeds, calibration, explain, benchmarks): see README
reproduce: setup
	$(PY) scripts/reproduce.py --data.dir $(DATA) $(if $(SOURCE),--data.source $(SOURCE)) $(ARGS)
