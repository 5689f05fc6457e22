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


@pytest.fixture(scope="session")
def ihc_other():
    """Another region of scikit-image's IHC slide: real tissue with a different colour balance."""
    from skimage import data
    return np.ascontiguousarray(data.immunohistochemistry()[256:512, 256:512])


@pytest.fixture(scope="session")
def he_source():
    """Synthetic H&E, pale haematoxylin and strong eosin, a quarter of it white glass."""
    return he_image(seed=3, scale=(0.6, 1.4))


@pytest.fixture(scope="session")
def batch():
    """Two random float images (N, 3, 64, 64) in [0, 1] for the networks."""
    import torch

    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A random-weight U-Net of paper 000 (4 base channels) in a model file, as `stainlab train` writes it."""
    import torch

    from stainlab.nets.files import save_model
    from stainlab.nets.unet import UNet

    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("nets") / "u.safetensors", UNet(base_channels=4), "unet",
                      {"base_channels": 4})
