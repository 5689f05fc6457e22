import numpy as np
import pytest

from synth import he_image


@pytest.fixture(scope="session")
def he_reference():
    """A synthetic H&E image under Ruifrok's stain vectors."""
    return he_image(seed=1)


@pytest.fixture(scope="session")
def ihc_image():
    """A real IHC image (haematoxylin + DAB) shipped with scikit-image, cropped."""
    from skimage import data
    return np.ascontiguousarray(data.immunohistochemistry()[:256, :256])
