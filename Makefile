# Two set-up commands on a fresh machine: `make demo` and `make test`.
# Each creates (or reuses) .venv. torch==2.13.0 is installed first so that nothing
# pulls a multi-GB CUDA build; pinned versions come from requirements-lock.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The oldest supported Slicer (5.12): its MRML classes (slicer-core 5.12.4.0) in a second venv,
# where `make test` runs again the tests that drive MRML classes; .venv has the 5.13 preview.
VENV512 := .venv-slicer512
PY512 := $(VENV512)/bin/python
STAMP512 := $(VENV512)/.installed
SLICER512 := slicer-core==5.12.4.0
MRML_TESTS := Testing/test_cad_logic.py Testing/test_zonal_slicer_logic.py Testing/test_annotate_logic.py \
	Testing/test_capabilities.py Testing/test_panel_runner.py Testing/test_sample_data.py \
	Testing/test_self_test_steps.py Testing/test_slicer_api.py Testing/test_export_slicer.py \
	Testing/test_dicom_database.py Testing/test_dicom_export_panel.py Testing/test_annotate_growing.py

.PHONY: demo test bench accuracy venv venv-slicer512 slicer-api-list clean

venv: $(STAMP)

venv-slicer512: $(STAMP512)

$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c requirements-lock.txt -e '.[dev]'
	# The pretrained gland model ships inside lavlab-taps; its declared dependencies
	# (onnxruntime-gpu, MONAI) are not needed: we run it with plain onnxruntime.
	$(PY) -m pip install --quiet --no-deps -c requirements-lock.txt lavlab-taps
	touch $(STAMP)

$(STAMP512): pyproject.toml requirements-lock.txt
	test -x $(PY512) || $(PYTHON) -m venv $(VENV512)
	$(PY512) -m pip install --quiet --upgrade pip
	$(PY512) -m pip install --quiet torch==2.13.0
	grep -v '^slicer-core==' requirements-lock.txt > $(VENV512)/constraints.txt
	echo '$(SLICER512)' >> $(VENV512)/constraints.txt
	$(PY512) -m pip install --quiet -c $(VENV512)/constraints.txt -e '.[dev]'
	$(PY512) -m pip install --quiet --no-deps -c $(VENV512)/constraints.txt lavlab-taps
	touch $(STAMP512)

# --dicom: the sample's own DICOM study (the tests' copy), so the demo also writes the detections as a
# DICOM SEG/SR and draws the SEG, read back from its file, over the T2 (demo-output/dicom/)
demo: $(STAMP)
	$(VENV)/bin/prostate-cad demo --out demo-output --overwrite --dicom Testing/data/prostatex/ProstateX-0000

test: $(STAMP) $(STAMP512)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q
	QT_QPA_PLATFORM=offscreen $(PY512) -m pytest -q -p no:cacheprovider $(MRML_TESTS)

# After the glue calls a Slicer/VTK method it did not call before: the list of names Slicer 5.12 has.
slicer-api-list: $(STAMP512)
	$(PY512) Testing/slicer_api.py --write

# the benchmark-only extra (itk-elastix and its ITK wheels, about 300 MB; nibabel for the taps
# package's own run): the registration and zones benches compare against them
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c requirements-lock.txt -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(VENV)/bin/prostate-cad bench --out bench-output --overwrite

# on a machine with an NVIDIA GPU: its own .venv-gpu (CUDA PyTorch), every stage on the GPU,
# bench-output/REPORT-gpu.md; stops with one sentence where there is no CUDA device
.PHONY: bench-gpu
bench-gpu:
	bash bench/gpu.sh

# lesion AUC of the demo detector on 96 held-out phantoms (192 lesions), with bootstrap CIs;
# another held-out set: make accuracy ACCURACY_ARGS="--first-seed 30000"
accuracy: $(STAMP)
	$(PY) -m ProstateLesionCADLib.commands.accuracy --out accuracy-output --overwrite $(ACCURACY_ARGS)

clean:
	rm -rf $(VENV) $(VENV512) demo-output bench-output accuracy-output
