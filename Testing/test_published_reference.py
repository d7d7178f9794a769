"""The published model and the published figures: `evaluate --compare-published` labels the paper's
Table 1 as the figures of the paper's ProstateX + IVO
model (not the released ProstateX-only one) with test-set sizes that agree with its rows, and
the model catalogue describes the released model's training data as its card does."""

from __future__ import annotations

import re

import pytest

from ProstateLesionCADLib.detection.retina_unet.mdt_import import PUBLISHED_TRAINING_DATA
from ProstateLesionCADLib.evaluation.published import DATASETS, published


@pytest.mark.parametrize("dataset", DATASETS)
def test_source_names_the_model_its_training_data_and_test_set(dataset):
    ref = published(dataset)
    source = ref["source"]
    assert source.startswith("Pellicer-Valero et al., Sci. Rep. 12, 2975 (2022), Table 1 (")
    assert "191 IVO + 159 ProstateX" in source and "140 ProstateX challenge" in source
    assert "not the ProstateX-only model the authors released" in source and "a posteriori" in source
    patients, lesions = map(int, re.search(r"test set: (\d+) patients, (\d+) lesions", source).groups())
    for key in ("GGG>=1", "GGG>=2", "GGG>=3"):
        assert (ref[key]["patient"]["n"], ref[key]["lesion"]["n"]) == (patients, lesions)
    # the released model's card says the opposite of the same facts: ProstateX only
    assert "IVO" in ref["model"] and PUBLISHED_TRAINING_DATA.startswith("ProstateX only (no IVO data)")


def test_catalogue_entry_of_the_released_model_says_what_it_was_trained_on():
    from ProstateLesionCADLib.detection.retina_unet.mdt_import import PUBLISHED_PACKAGE_NAME
    from ProstateLesionCADLib.models.catalog import load_catalog

    (entry,) = [e for e in load_catalog() if e.name == PUBLISHED_PACKAGE_NAME]
    # what the panel shows before installing is what the installed package's card says
    assert entry.training_data == PUBLISHED_TRAINING_DATA
    assert "ProstateX only" in entry.title and "ProstateX data only" in entry.description
    assert "ProstateX + IVO model, not to this one" in entry.description
