# aisle: `make help` lists the targets.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
OUT    ?= out/demo

.DEFAULT_GOAL := help

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# torch first, pinned: a CPU build is on the local index; unpinned pulls CUDA.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed ## create .venv and install aisle with its test extras

demo: venv ## run the ingestion job on the bundled sample data
	$(VENV)/bin/aisle demo --out $(OUT)

test: venv ## run the test suite
	$(PY) -m pytest -q

CHECKOV_VENV ?= .venv-checkov

$(CHECKOV_VENV)/.installed: tools/checkov/requirements.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV) || python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q -r tools/checkov/requirements.txt
	touch $@

checkov-venv: $(CHECKOV_VENV)/.installed ## create .venv-checkov with checkov (kept apart from Beam's pins)

tf-check: venv checkov-venv ## offline Terraform checks: structure tests (python-hcl2) and checkov
	$(CHECKOV_VENV)/bin/checkov -d terraform --framework terraform --skip-download --compact --quiet
	$(PY) -m pytest -q tests/test_terraform.py tests/test_terraform_checkov.py

bench-ingest: venv ## ingestion benchmark on ../shared/data/retail (minutes)
	$(PY) -m benchmarks.ingest --json benchmarks/results/ingest.json

bench-ocr: venv ## fine-tuned OCR candidates vs the shipped weights, stock RapidOCR and Tesseract on ../shared/data/ocr/sroie (about 30 min on 2 cores, 13 of them training int8_qat; needs Debian's tesseract-ocr)
	$(PY) -m benchmarks.ocr --data ../shared/data/ocr/sroie --json benchmarks/results/ocr.json --limit 30

bench-ner: venv ## NER candidates on CoNLL-2003 valid (trains first if no model; about 15 min plus training)
	$(PY) -m benchmarks.ner --json benchmarks/results/ner.json

bench-recommend: venv ## recommendation baselines and candidates on the retail time split (about 15 min)
	$(PY) -m benchmarks.recommend --data ../shared/data/retail/online_retail_2010-12_2011-09.csv --split-date 2011-08-01 --json benchmarks/results/recommend.json

bench-scale: venv ## enrich (NER half) and recommend at 1x/3x/10x the retail volume: in-process, 1 and 2 worker processes (about 45 min)
	$(PY) -m benchmarks.scale --json benchmarks/results/scale.json

bench-item-index: venv ## similar items: exact search vs the approximate item index (faiss IVF) at 37,200 and 372,000 items (about 10 min)
	$(PY) -m benchmarks.item_index --data ../shared/data/retail/online_retail_2010-12_2011-09.csv --json benchmarks/results/item_index.json

bench-local-runner: venv ## joins planned as Beam's local runner plans them and as aisle's does, in-process and with 2 workers (about 3 min)
	$(PY) -m benchmarks.local_runner --json benchmarks/results/local_runner.json

NER_TRAIN := $(PY) -m components.ner_train --train ../shared/data/ner/conll2003/train.txt --eval ../shared/data/ner/conll2003/valid.txt --max-length 64 --num-threads 1

train-ner: venv ## fine-tune the NER model on CoNLL-2003 train, the recipe of the benchmark figures (about 35 min on 2 cores)
	$(NER_TRAIN) --out out/models/ner/stage1 --epochs 2 --learning-rate 1e-4 --no-case-markers
	$(NER_TRAIN) --out out/models/ner/stage2 --base-model out/models/ner/stage1 --epochs 1 --learning-rate 4e-5 --eval-every-steps 220 --no-case-markers
	$(NER_TRAIN) --out out/models/ner/torch --base-model out/models/ner/stage2 --epochs 1 --learning-rate 5e-5 --eval-every-steps 220 --case-markers

finetune-ocr: venv ## fine-tune the OCR recognizer's head on SROIE receipts 160-358 (dev 060-158), the recipe bench-ocr runs (about 10 min)
	$(PY) -m components.ocr_finetune --data ../shared/data/ocr/sroie --train-ids 160-358 --dev-ids 060-158 --out out/models/ocr/finetuned

clean: ## remove outputs (keeps .venv)
	rm -rf out .pytest_cache

.PHONY: help venv demo test checkov-venv tf-check bench-ingest bench-ocr bench-ner bench-recommend bench-scale bench-item-index bench-local-runner train-ner finetune-ocr clean
