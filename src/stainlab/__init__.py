"""stainlab: stain normalization and virtual staining for digital pathology and hematology.

>>> import stainlab
>>> t = stainlab.load("macenko").fit(reference)     # doctest: +SKIP
>>> out = t(image)                                   # doctest: +SKIP
"""

from stainlab.errors import InputError, NoTissueError, NoTissueWarning, NotFittedError, StainlabError
from stainlab.transforms import load, methods
from stainlab.transforms.augment import StainAugmenter, augment

__version__ = "0.1.0"

__all__ = ["load", "methods", "augment", "StainAugmenter", "StainlabError", "InputError", "NoTissueError", "NoTissueWarning",
           "NotFittedError", "__version__"]
