"""The package root: every method's class imports from ``stainlab``, lazily, without torch."""

import subprocess
import sys

import pytest

import stainlab
from stainlab.transforms.base import Transform

CLASSES = ["Macenko", "Reinhard", "Vahadane", "Ruifrok", "HistogramMatching", "ColorBalance", "BackgroundAffine",
           "Grayscale", "NeuralColorTransfer", "StainNetTransform", "NetworkTransform", "DeReStainerTransform",
           "StainAugmenter"]


def test_import_stainlab_does_not_import_torch():
    code = "import sys, stainlab; assert 'torch' not in sys.modules, 'import stainlab imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", CLASSES)
def test_each_method_class_imports_from_the_root(name):
    namespace = {}
    exec(f"from stainlab import {name}", namespace)
    assert issubclass(namespace[name], Transform)
    assert name in stainlab.__all__ and name in dir(stainlab)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nonsense'"):
        stainlab.Nonsense
    assert not hasattr(stainlab, "Nonsense")
