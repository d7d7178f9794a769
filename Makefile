# Two set-up commands on a fresh machine: `make demo` and `make test`.
# Each creates (or reuses) .venv. torch==2.13.0 is installed first so that nothing
# pulls a multi-GB CUDA build; pinned versions come from requirements-lock.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench accuracy venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c requirements-lock.txt -e '.[dev]'
	# The pretrained gland model ships inside lavlab-taps; its declared dependencies
	# (onnxruntime-gpu, MONAI) are not needed: we run it with plain onnxruntime.
	$(PY) -m pip install --quiet --no-deps -c requirements-lock.txt lavlab-taps
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/prostate-cad demo --out demo-output

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/prostate-cad bench --out bench-output

# lesion AUC of the demo detector on 96 held-out phantoms (192 lesions), with bootstrap CIs;
# another held-out set: make accuracy ACCURACY_ARGS="--first-seed 30000"
accuracy: $(STAMP)
	$(PY) -m ProstateLesionCADLib.commands.accuracy --out accuracy-output $(ACCURACY_ARGS)

clean:
	rm -rf $(VENV) demo-output bench-output accuracy-output
